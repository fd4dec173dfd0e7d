"""The processor's own configuration, built from Settings or directly in tests."""

from dataclasses import dataclass, field

from eventproc.retry import RetryPolicy


@dataclass(frozen=True, slots=True)
class ProcessorConfig:
    batch_size: int = 20
    concurrency: int = 50
    # Claims a worker may have out at once, each of BATCH_SIZE: a second one
    # drained 1.7x faster with the database 5 ms away and cost 3-5 % on a
    # loopback database sharing the worker's CPU (bench/README.md).
    claims_at_once: int = 2
    poll_interval_ms: int = 10_000
    lease_seconds: float = 30.0
    handler_timeout_seconds: float = 60.0
    polling_enabled: bool = True
    listen: bool = True
    ordered: bool = True
    # AGGREGATE_FAILURE=park (the default): a dead letter does not hold back
    # the later events of its aggregate.
    park_failed_aggregates: bool = True
    shutdown_grace_seconds: float = 25.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.concurrency < 1 or self.claims_at_once < 1:
            raise ValueError("batch_size, concurrency and claims_at_once must be >= 1")
        if self.lease_seconds <= 0 or self.handler_timeout_seconds <= 0:
            raise ValueError("lease_seconds and handler_timeout_seconds must be > 0")
