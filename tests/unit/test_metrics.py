"""The per-event metrics read the same as prometheus_client's own Counter and Histogram."""

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from eventproc.metrics import DURATION_BUCKETS, Metrics

OBSERVED = [0.0005, 0.001, 0.003, 0.2, 0.5, 200.0]


def test_counts_and_durations_match_the_client_library() -> None:
    ours = Metrics()
    reference = CollectorRegistry()
    counter = Counter("eventproc_events", "x", ["event_type", "outcome"], registry=reference)
    histogram = Histogram(
        "eventproc_handler_duration_seconds",
        "x",
        ["event_type", "outcome"],
        buckets=DURATION_BUCKETS,
        registry=reference,
    )
    for seconds in OBSERVED:
        ours.observe_handler("t.a", "succeeded", seconds)
        histogram.labels("t.a", "succeeded").observe(seconds)
    ours.observe_handler("t.a", "retried", 0.02)
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
    bucket = 'event_type="t.a",le="0.001",outcome="succeeded"'
    assert f"eventproc_handler_duration_seconds_bucket{{{bucket}}} 2.0" in text
    assert (
        'eventproc_handler_duration_seconds_count{event_type="t.a",outcome="retried"} 1.0' in text
    )
    assert 'eventproc_events_total{event_type="t.b",outcome="retried"} 2.0' in text
