"""Prometheus collectors, defined once per runtime (tests build several)."""

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "eventproc_events",
            "Handled event attempts by type and outcome.",
            ["event_type", "outcome"],
            registry=self.registry,
        )
        self.handler_seconds = Histogram(
            "eventproc_handler_duration_seconds",
            "Handler run time.",
            ["event_type"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120),
            registry=self.registry,
        )
        self.claimed = Counter(
            "eventproc_claimed_events",
            "Events claimed by this process.",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "eventproc_in_flight", "Handlers running now.", registry=self.registry
        )
        self.store_errors = Counter(
            "eventproc_store_errors",
            "Database operations that failed, by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.backlog = Gauge(
            "eventproc_backlog",
            "Pending events (at the last scrape).",
            registry=self.registry,
        )
        self.oldest_pending_seconds = Gauge(
            "eventproc_oldest_pending_seconds",
            "Age of the oldest pending event (at the last scrape).",
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "eventproc_dead_letters",
            "Rows in event_dead_letters (at the last scrape).",
            registry=self.registry,
        )
