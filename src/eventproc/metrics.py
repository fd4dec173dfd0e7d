"""Prometheus collectors, defined once per runtime (tests build several)."""

import bisect
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120)
# The label value for event types no handler is registered for: the series
# stay bounded by the registry, whatever publishers send (OpenTelemetry's
# conventions use the same value for unknown HTTP methods).
OTHER_TYPE = "_OTHER"


class EventCounts(Collector):
    """Per-event counts and handler durations, kept in plain numbers until a scrape.

    prometheus_client's Counter and Histogram take a lock per update; a busy
    worker updates them for every event, from its one event-loop thread, so
    the numbers are kept here and turned into metric families when scraped.
    """

    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.buckets = buckets
        self.outcomes: dict[tuple[str, str], int] = {}
        # (event type, outcome) -> [count per bucket (and one past the last), sum of seconds]
        self.durations: dict[tuple[str, str], tuple[list[int], list[float]]] = {}

    def count(self, event_type: str, outcome: str) -> None:
        key = (event_type, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def observe(self, event_type: str, outcome: str, seconds: float) -> None:
        key = (event_type, outcome)
        entry = self.durations.get(key)
        if entry is None:
            entry = self.durations[key] = ([0] * (len(self.buckets) + 1), [0.0])
        entry[0][bisect.bisect_left(self.buckets, seconds)] += 1
        entry[1][0] += seconds

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "eventproc_events",
            "Handled event attempts by type and outcome.",
            labels=["event_type", "outcome"],
        )
        for (event_type, outcome), value in list(self.outcomes.items()):
            events.add_metric([event_type, outcome], value)
        yield events
        durations = HistogramMetricFamily(
            "eventproc_handler_duration_seconds",
            "Handler run time of every attempt, by the attempt's outcome.",
            labels=["event_type", "outcome"],
        )
        for (event_type, outcome), (counts, total) in list(self.durations.items()):
            cumulative, running = [], 0
            for bound, count in zip((*self.buckets, float("inf")), counts, strict=True):
                running += count
                cumulative.append((_bound(bound), running))
            durations.add_metric([event_type, outcome], cumulative, sum_value=total[0])
        yield durations


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


class StoreReading(NamedTuple):
    """The store-derived figures of one successful read (runtime.store_stats)."""

    backlog: int
    oldest_pending_seconds: float
    dead_letters: int
    blocked_aggregates: int
    blocked_oldest_seconds: float


# name, help, field of StoreReading
_STORE_GAUGES = (
    ("eventproc_backlog", "Pending events (at the last successful read).", "backlog"),
    (
        "eventproc_oldest_pending_seconds",
        "Age of the oldest pending event (at the last successful read).",
        "oldest_pending_seconds",
    ),
    (
        "eventproc_dead_letters",
        "Open dead letters: not replayed (at the last successful read).",
        "dead_letters",
    ),
    (
        "eventproc_blocked_aggregates",
        "Aggregates whose later events wait behind a retrying or dead-lettered event "
        "(ORDERING=aggregate; at the last successful read).",
        "blocked_aggregates",
    ),
    (
        "eventproc_blocked_oldest_seconds",
        "How long the longest-waiting event behind a blocked aggregate has waited.",
        "blocked_oldest_seconds",
    ),
)


class StoreGauges(Collector):
    """The gauges read from the database: the last successful read, never a made-up 0.

    A scrape that cannot read the store leaves them at the last figures read
    and says so: ``eventproc_store_up`` 0, and ``eventproc_store_stats_age_seconds``
    growing. Until a first read succeeds they are absent, not 0.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.up = False
        self.reading: StoreReading | None = None
        self._read_at = 0.0

    def record(self, reading: StoreReading) -> None:
        self.up, self.reading, self._read_at = True, reading, self._clock()

    def failed(self) -> None:
        self.up = False

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "eventproc_store_up",
            "1 if the last read of the store-derived gauges succeeded, 0 if it failed.",
            value=1 if self.up else 0,
        )
        if self.reading is None:
            return
        yield GaugeMetricFamily(
            "eventproc_store_stats_age_seconds",
            "Seconds since the store-derived gauges (eventproc_backlog, ...) were read.",
            value=self._clock() - self._read_at,
        )
        for name, documentation, attribute in _STORE_GAUGES:
            yield GaugeMetricFamily(name, documentation, value=getattr(self.reading, attribute))


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.event_counts = EventCounts()
        self.registry.register(self.event_counts)
        self.claimed = Counter(
            "eventproc_claimed_events",
            "Events claimed by this process.",
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "eventproc_in_flight",
            "Events claimed by this process and not yet handled.",
            registry=self.registry,
        )
        self.store_errors = Counter(
            "eventproc_store_errors",
            "Database operations that failed, by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.store = StoreGauges()
        self.registry.register(self.store)
        self.listen_verified = Gauge(
            "eventproc_listen_verified",
            "1 while the last LISTEN probe arrived (wake-ups by NOTIFY), "
            "0 otherwise: polling, SQLite, LISTEN=false.",
            registry=self.registry,
        )

    def count(self, event_type: str, outcome: str) -> None:
        """One handled attempt of ``event_type`` ended in ``outcome``."""
        self.event_counts.count(event_type, outcome)

    def observe_handler(self, event_type: str, outcome: str, seconds: float) -> None:
        """How long one handler call of ``event_type`` took, whatever it ended in."""
        self.event_counts.observe(event_type, outcome, seconds)
