"""Issue 16: /metrics after real drains, on both backends.

The messaging conventions' series and eventproc's queue wait and lag count
what the worker did, and stay bounded whatever types publishers send.
"""

import uuid
from typing import Any

from prometheus_client import generate_latest

from eventproc import Event, HandlerContext, NewEvent, Registry
from eventproc.engine import Processor
from eventproc.metrics import Metrics
from eventproc.processor_config import ProcessorConfig
from eventproc.retry import RetryPolicy
from eventproc.store import Store


def config(**overrides: Any) -> ProcessorConfig:
    values: dict[str, Any] = {
        "poll_interval_ms": 50,
        "lease_seconds": 5,
        "batch_size": 200,
        "retry": RetryPolicy(max_retries=2, base_ms=0, max_ms=0),
    }
    values.update(overrides)
    return ProcessorConfig(**values)


def registry() -> Registry:
    """t.ok succeeds, t.bad always fails (dead-lettered on its second attempt), user.* succeeds."""
    registry = Registry()

    @registry.handler("t.ok", name="ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        return None

    @registry.handler("t.bad", name="bad")
    async def bad(event: Event, ctx: HandlerContext) -> None:
        raise LookupError(f"no user {event.payload['user']}")

    @registry.handler("user.*", name="users")
    async def users(event: Event, ctx: HandlerContext) -> None:
        return None

    return registry


def series(text: str) -> set[str]:
    """Every sample line's name and labels (the series), without its value."""
    return {line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")}


def value(text: str, prefix: str) -> float:
    """The sum of every sample whose line starts with ``prefix``."""
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix)
    )


async def test_the_conventions_metrics_count_a_real_drain(store: Store) -> None:
    metrics = Metrics()
    users = [NewEvent(f"user.x{uuid.uuid4().hex}", {}) for _ in range(20)]
    await store.event_insert_many(
        [
            *[NewEvent("t.ok", {}) for _ in range(5)],
            NewEvent("t.bad", {"user": str(uuid.uuid4())}),
            *users,
        ]
    )
    await Processor(store, registry(), config(), metrics=metrics).run(until_idle=True)
    text = generate_latest(metrics.registry).decode()

    consumed = "messaging_client_consumed_messages_total{"
    assert value(text, consumed) == 5 + 2 + 20  # every handler call: t.bad ran twice
    assert (
        'messaging_client_consumed_messages_total{messaging_consumer_group_name="bad",'
        'messaging_destination_name="t.bad",messaging_destination_template="",'
        'messaging_operation_name="process",messaging_system="eventproc"} 2.0'
    ) in text
    failed = [
        line
        for line in text.splitlines()
        if line.startswith("messaging_process_duration_seconds_count{")
        and 'error_type="LookupError"' in line
    ]
    assert len(failed) == 2  # retried, then dead-lettered
    assert [line.rsplit(" ", 1)[1] for line in failed] == ["1.0", "1.0"]
    assert {'eventproc_outcome="retried"', 'eventproc_outcome="dead_lettered"'} == {
        part for line in failed for part in line.split(",") if part.startswith("eventproc_outcome")
    }
    # The wildcard subscription's 20 types: one series, under its pattern.
    assert not any("user.x" in line for line in text.splitlines())
    assert (
        'messaging_process_duration_seconds_count{error_type="",eventproc_outcome="succeeded",'
        'messaging_consumer_group_name="users",messaging_destination_name="",'
        'messaging_destination_template="user.*",messaging_operation_name="process",'
        'messaging_system="eventproc"} 20.0'
    ) in text
    assert 'eventproc_events_total{event_type="user.*",outcome="succeeded"} 20.0' in text
    # Queue wait: each delivery's first call; lag: the calls that ended one.
    assert value(text, "eventproc_queue_wait_seconds_count{") == 5 + 1 + 20
    assert value(text, 'eventproc_queue_wait_seconds_count{handler="bad"}') == 1
    assert value(text, 'eventproc_end_to_end_lag_seconds_count{handler="ok",') == 5
    assert (
        value(text, 'eventproc_end_to_end_lag_seconds_count{handler="bad",outcome="dead_lettered"}')
        == 1
    )
    assert value(text, 'eventproc_end_to_end_lag_seconds_count{handler="bad",outcome="s') == 0
    # Just inserted: every wait is under a minute, none negative.
    assert value(text, 'eventproc_queue_wait_seconds_bucket{handler="ok",le="60.0"}') == 5


async def test_a_thousand_unknown_event_types_add_no_series(store: Store) -> None:
    metrics = Metrics()
    processor = Processor(store, registry(), config(), metrics=metrics)
    await store.event_insert_many(
        [NewEvent("t.ok", {}), NewEvent("user.a", {}), NewEvent("t.unknown.first", {})]
    )
    await processor.run(until_idle=True)
    before = generate_latest(metrics.registry).decode()

    unknown = [NewEvent(f"t.unknown.{uuid.uuid4().hex}", {}) for _ in range(1_000)]
    await store.event_insert_many(unknown)
    await Processor(store, registry(), config(), metrics=metrics).run(until_idle=True)
    after = generate_latest(metrics.registry).decode()

    assert series(after) == series(before)
    assert not any("t.unknown." in line for line in after.splitlines())
    skipped = 'eventproc_events_total{event_type="_OTHER",outcome="skipped"}'
    assert value(before, skipped) == 1
    assert value(after, skipped) == 1_001  # counted, under one label
