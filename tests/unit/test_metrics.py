"""The per-event metrics read the same as prometheus_client's own Counter and Histogram."""

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from eventproc.event import Event
from eventproc.metrics import (
    LAG_BUCKETS,
    MAX_ERROR_TYPES,
    OTHER_ERROR,
    OTHER_TYPE,
    PROCESS_BUCKETS,
    Metrics,
    error_type_of,
    type_label,
)

OBSERVED = [0.0005, 0.001, 0.003, 0.2, 0.5, 200.0]


def test_counts_and_durations_match_the_client_library() -> None:
    # The deprecated histogram is derived from messaging_process_duration_seconds
    # at scrape time: the conventions' buckets, summed over handlers.
    ours = Metrics()
    now = time.time()
    reference = CollectorRegistry()
    counter = Counter("eventproc_events", "x", ["event_type", "outcome"], registry=reference)
    histogram = Histogram(
        "eventproc_handler_duration_seconds",
        "x",
        ["event_type", "outcome"],
        buckets=PROCESS_BUCKETS,
        registry=reference,
    )
    for index, seconds in enumerate(OBSERVED):
        handler = "h1" if index % 2 else "h2"
        ours.handled(_event(), handler, ("t.a", False), "succeeded", "", seconds, now)
        histogram.labels("t.a", "succeeded").observe(seconds)
    ours.handled(_event(), "h1", ("t.a", False), "retried", "mod.E", 0.02, now)
    histogram.labels("t.a", "retried").observe(0.02)
    for event_type, outcome, times in (("t.a", "succeeded", 3), ("t.b", "retried", 2)):
        for _ in range(times):
            ours.count(event_type, outcome)
            counter.labels(event_type, outcome).inc()

    def samples(
        registry: CollectorRegistry,
    ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in registry.collect()
            for sample in family.samples
            if family.name in ("eventproc_events", "eventproc_handler_duration_seconds")
            and not sample.name.endswith("_created")
        }

    assert samples(ours.registry) == samples(reference)
    text = generate_latest(ours.registry).decode()
    bucket = 'event_type="t.a",le="0.005",outcome="succeeded"'
    assert f"eventproc_handler_duration_seconds_bucket{{{bucket}}} 3.0" in text
    assert (
        'eventproc_handler_duration_seconds_count{event_type="t.a",outcome="retried"} 1.0' in text
    )
    assert 'eventproc_events_total{event_type="t.b",outcome="retried"} 2.0' in text


def _event(**fields: Any) -> Event:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "event_type": "t.a",
        "payload": {},
        "created_at": datetime.now(UTC),
        "attempts": 1,
    }
    values.update(fields)
    return Event(**values)


def _text(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_process_duration_follows_the_messaging_conventions() -> None:
    """messaging.process.duration in Prometheus form: its buckets, labels and unit."""
    assert PROCESS_BUCKETS == (
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
    )  # fmt: skip
    ours = Metrics()
    reference = CollectorRegistry()
    labels = [
        "messaging_system",
        "messaging_operation_name",
        "messaging_consumer_group_name",
        "messaging_destination_name",
        "messaging_destination_template",
        "error_type",
        "eventproc_outcome",
    ]
    histogram = Histogram(
        "messaging_process_duration_seconds",
        "x",
        labels,
        buckets=PROCESS_BUCKETS,
        registry=reference,
    )
    now = time.time()
    calls = [
        ("h.one", ("t.a", False), "succeeded", "", 0.07),
        ("h.one", ("t.a", False), "succeeded", "", 0.2),
        ("h.one", ("t.a", False), "retried", "ValueError", 3.0),
        ("h.all", ("user.*", True), "succeeded", "", 12.0),
    ]
    for handler, destination, outcome, error_type, seconds in calls:
        ours.handled(_event(), handler, destination, outcome, error_type, seconds, now)
        name, template = ("", destination[0]) if destination[1] else (destination[0], "")
        histogram.labels(
            "eventproc", "process", handler, name, template, error_type, outcome
        ).observe(seconds)

    def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[Any]], float]:
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in registry.collect()
            if family.name == "messaging_process_duration_seconds"
            for sample in family.samples
            if not sample.name.endswith("_created")
        }

    assert samples(ours.registry) == samples(reference)
    text = _text(ours)
    one = (
        'messaging_consumer_group_name="h.one",messaging_destination_name="t.a",'
        'messaging_destination_template="",messaging_operation_name="process",'
        'messaging_system="eventproc"'
    )
    assert f"messaging_client_consumed_messages_total{{{one}}} 3.0" in text
    assert _bucket(text, "h.one", "succeeded", "0.075") == 1.0
    assert _bucket(text, "h.one", "retried", "2.5") == 0.0
    assert _bucket(text, "h.all", "succeeded", "+Inf") == 1.0
    assert 'messaging_destination_template="user.*"' in text


def _bucket(text: str, handler: str, outcome: str, le: str) -> float:
    """The value of one messaging_process_duration_seconds bucket in ``text``."""
    for line in text.splitlines():
        if (
            line.startswith("messaging_process_duration_seconds_bucket{")
            and f'messaging_consumer_group_name="{handler}"' in line
            and f'eventproc_outcome="{outcome}"' in line
            and f'le="{le}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no bucket le={le} for {handler} {outcome}")


def _counts(metrics: Metrics, family: str) -> dict[tuple[str, ...], float]:
    """``<family>_count`` per label values (sorted by name), from the exposition."""
    found = {}
    for metric in metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == f"{family}_count":
                found[tuple(v for _, v in sorted(sample.labels.items()))] = sample.value
    return found


def test_queue_wait_counts_first_attempts_and_lag_the_final_ones() -> None:
    metrics = Metrics()
    now = time.time()
    ninety_ago = datetime.fromtimestamp(now - 90, UTC)
    first = _event(created_at=ninety_ago, attempts=1)
    metrics.handled(first, "h", ("t.a", False), "retried", "ValueError", 0.5, now)
    second = _event(created_at=ninety_ago, attempts=2)
    metrics.handled(second, "h", ("t.a", False), "succeeded", "", 0.5, now + 10)
    replayed = _event(created_at=ninety_ago, attempts=1, metadata={"replayed": True})
    metrics.handled(replayed, "h", ("t.a", False), "succeeded", "", 0.5, now)
    buried = _event(created_at=ninety_ago, attempts=3)
    metrics.handled(buried, "h", ("t.a", False), "dead_lettered", "ValueError", 1.0, now)
    # A worker clock behind the database's: never a negative wait.
    ahead = _event(created_at=datetime.fromtimestamp(now + 5, UTC), attempts=1)
    metrics.handled(ahead, "other", ("t.a", False), "succeeded", "", 0.1, now)

    assert LAG_BUCKETS[-1] >= 6 * 3600  # hours
    assert _counts(metrics, "eventproc_queue_wait_seconds") == {("h",): 1, ("other",): 1}
    assert _counts(metrics, "eventproc_end_to_end_lag_seconds") == {
        ("h", "succeeded"): 1,
        ("h", "dead_lettered"): 1,
        ("other", "succeeded"): 1,
    }
    families = {metric.name: metric for metric in metrics.registry.collect()}
    waits = {
        (s.labels["handler"], s.labels.get("le")): s.value
        for s in families["eventproc_queue_wait_seconds"].samples
    }
    assert waits[("h", "60.0")] == 0 and waits[("h", "300.0")] == 1  # 90 s
    assert waits[("other", "0.005")] == 1  # clamped to 0
    lags = {
        (s.labels["handler"], s.labels["outcome"], s.name): s.value
        for s in families["eventproc_end_to_end_lag_seconds"].samples
        if s.name.endswith("_sum")
    }
    assert abs(lags[("h", "succeeded", "eventproc_end_to_end_lag_seconds_sum")] - 100.5) < 0.01
    assert abs(lags[("h", "dead_lettered", "eventproc_end_to_end_lag_seconds_sum")] - 91) < 0.01
    # The legacy histogram still gets every call, under the bounded type label.
    assert _counts(metrics, "eventproc_handler_duration_seconds") == {
        ("t.a", "retried"): 1,
        ("t.a", "succeeded"): 3,
        ("t.a", "dead_lettered"): 1,
    }


def test_type_labels_are_bounded_by_the_subscription() -> None:
    types = ("order.created", "user.*")
    assert type_label(types, "order.created") == ("order.created", False)
    assert type_label(types, "user.signed_up") == ("user.*", True)
    assert type_label(types, "user.profile.updated") == ("user.*", True)
    assert type_label(types, "user") == (OTHER_TYPE, False)  # user.* takes user.<more> only
    assert type_label(types, "order.cancelled") == (OTHER_TYPE, False)
    assert type_label(("*",), "anything.at.all") == ("*", True)


def test_error_types_are_canonical_class_names_and_bounded_per_handler() -> None:
    assert error_type_of(TimeoutError()) == "TimeoutError"
    assert error_type_of(LookupError()) == "LookupError"

    class Gone(Exception):
        pass

    assert error_type_of(Gone()).endswith(
        "test_metrics.test_error_types_are_canonical_class_names_and_bounded_per_handler.<locals>.Gone"
    )
    metrics = Metrics()
    now = time.time()
    for index in range(MAX_ERROR_TYPES + 5):
        error = f"mod.E{index}"
        metrics.handled(_event(), "h", ("t.a", False), "retried", error, 0.1, now)
    metrics.handled(_event(), "h", ("t.a", False), "retried", "mod.E0", 0.1, now)
    metrics.handled(_event(), "g", ("t.a", False), "retried", "mod.E24", 0.1, now)
    seen = {
        (s.labels["messaging_consumer_group_name"], s.labels["error_type"]): s.value
        for metric in metrics.registry.collect()
        if metric.name == "messaging_process_duration_seconds"
        for s in metric.samples
        if s.name.endswith("_count")
    }
    assert len([key for key in seen if key[0] == "h"]) == MAX_ERROR_TYPES + 1
    assert seen[("h", OTHER_ERROR)] == 5
    assert seen[("h", "mod.E0")] == 2
    assert seen[("g", "mod.E24")] == 1  # another handler has its own budget


def test_a_reading_served_again_reports_its_own_age() -> None:
    from eventproc.metrics import StoreGauges, StoreReading

    now = [50.0]
    gauges = StoreGauges(clock=lambda: now[0])
    reading = StoreReading(10, 1.0, 0, 0, 0.0)
    gauges.record(reading, age=7.5)  # a shared reading begun 7.5 s ago
    ages = [m for m in gauges.collect() if m.name == "eventproc_store_stats_age_seconds"]
    assert ages[0].samples[0].value == 7.5
    now[0] += 2
    ages = [m for m in gauges.collect() if m.name == "eventproc_store_stats_age_seconds"]
    assert ages[0].samples[0].value == 9.5
