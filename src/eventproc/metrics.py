"""Prometheus collectors, defined once per runtime (tests build several)."""

import bisect
import time
from collections.abc import Callable, Iterator
from typing import NamedTuple

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from eventproc.event import Event

# eventproc_handler_duration_seconds (kept for one release beside
# messaging_process_duration_seconds, which has the conventions' buckets).
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120)
# OpenTelemetry's messaging conventions: the explicit bucket boundaries of
# messaging.process.duration.
PROCESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)
# Queue wait and end-to-end lag: from milliseconds (a worker keeping up) to
# hours (a backlog after an outage, a paused handler).
LAG_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
    300, 900, 1800, 3600, 7200, 21600,
)  # fmt: skip
# The label value for event types no handler is registered for: the series
# stay bounded by the registry, whatever publishers send (OpenTelemetry's
# conventions use the same value for unknown HTTP methods).
OTHER_TYPE = "_OTHER"
# error.type's fallback in the conventions: past MAX_ERROR_TYPES distinct
# exception classes of one handler, the others count under it.
OTHER_ERROR = "_OTHER"
MAX_ERROR_TYPES = 20
MESSAGING_SYSTEM = "eventproc"  # messaging.system
PROCESS = "process"  # messaging.operation.type and .name of a handler call
FINAL = frozenset(("succeeded", "dead_lettered"))  # outcomes that end a delivery


def type_label(types: tuple[str, ...], event_type: str) -> tuple[str, bool]:
    """The bounded label of ``event_type`` in a subscription of ``types``.

    The type itself when the subscription names it; else the pattern that
    takes it (``user.*``, ``*``: a template, True), so that publishers
    cannot grow the series through a wildcard subscription; else OTHER_TYPE.
    """
    if event_type in types:
        return event_type, False
    for pattern in types:
        if pattern == "*" or (pattern.endswith(".*") and event_type.startswith(pattern[:-1])):
            return pattern, True
    return OTHER_TYPE, False


def error_type_of(exc: BaseException) -> str:
    """error.type as the conventions ask: the exception's canonical class name."""
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


class Histograms:
    """Histogram series in plain numbers: label values -> [count per bucket (and +Inf), sum]."""

    __slots__ = ("buckets", "series")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}

    def observe(self, key: tuple[str, ...], seconds: float) -> None:
        entry = self.series.get(key)
        if entry is None:
            entry = self.series[key] = ([0] * (len(self.buckets) + 1), [0.0])
        entry[0][bisect.bisect_left(self.buckets, seconds)] += 1
        entry[1][0] += seconds

    def family(
        self,
        name: str,
        documentation: str,
        labels: list[str],
        unit: str = "",
        constants: tuple[str, ...] = (),
    ) -> HistogramMetricFamily:
        """The series as one family; ``constants``: the first labels' values, the same for all."""
        family = HistogramMetricFamily(name, documentation, labels=labels, unit=unit)
        bounds = [_bound(bound) for bound in (*self.buckets, float("inf"))]
        for key, (counts, total) in list(self.series.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, counts, strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric([*constants, *key], cumulative, sum_value=total[0])
        return family


class EventCounts(Collector):
    """Per-event counts and handler durations, kept in plain numbers until a scrape.

    prometheus_client's Counter and Histogram take a lock per update; a busy
    worker updates them for every event, from its one event-loop thread, so
    the numbers are kept here and turned into metric families when scraped.
    """

    def __init__(self, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        self.buckets = buckets
        self.outcomes: dict[tuple[str, str], int] = {}
        # (event type, outcome): eventproc_handler_duration_seconds
        self.handler_durations = Histograms(buckets)
        # (handler, destination name, destination template, error type, outcome)
        self.process = Histograms(PROCESS_BUCKETS)
        self.waits = Histograms(LAG_BUCKETS)  # (handler,)
        self.lags = Histograms(LAG_BUCKETS)  # (handler, outcome)
        self._error_types: dict[str, set[str]] = {}  # per handler, up to MAX_ERROR_TYPES

    @property
    def durations(self) -> dict[tuple[str, ...], tuple[list[int], list[float]]]:
        """(event type, outcome) -> [count per bucket (and one past the last), sum of seconds]."""
        return self.handler_durations.series

    def count(self, event_type: str, outcome: str) -> None:
        key = (event_type, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def observe(self, event_type: str, outcome: str, seconds: float) -> None:
        self.handler_durations.observe((event_type, outcome), seconds)

    def error_type(self, handler: str, error_type: str) -> str:
        """``error_type``, or OTHER_ERROR once the handler has shown MAX_ERROR_TYPES others."""
        seen = self._error_types.setdefault(handler, set())
        if error_type in seen:
            return error_type
        if len(seen) >= MAX_ERROR_TYPES:
            return OTHER_ERROR
        seen.add(error_type)
        return error_type

    def collect(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "eventproc_events",
            "Handled event attempts by type and outcome.",
            labels=["event_type", "outcome"],
        )
        for (event_type, outcome), value in list(self.outcomes.items()):
            events.add_metric([event_type, outcome], value)
        yield events
        yield self.handler_durations.family(
            "eventproc_handler_duration_seconds",
            "Handler run time of every attempt, by the attempt's outcome "
            "(deprecated: messaging_process_duration_seconds).",
            ["event_type", "outcome"],
        )
        yield from self._messaging()
        yield self.waits.family(
            "eventproc_queue_wait_seconds",
            "From an event's insert (created_at) to its first handler call, per handler.",
            ["handler"],
            unit="seconds",
        )
        yield self.lags.family(
            "eventproc_end_to_end_lag_seconds",
            "From an event's insert (created_at) to the handler call that ended its delivery.",
            ["handler", "outcome"],
            unit="seconds",
        )

    def _messaging(self) -> Iterator[Metric]:
        """The OpenTelemetry messaging conventions' consumer metrics, in Prometheus form."""
        labels = [
            "messaging_system",
            "messaging_operation_name",
            "messaging_consumer_group_name",
            "messaging_destination_name",
            "messaging_destination_template",
        ]
        process = self.process.family(
            "messaging_process_duration_seconds",
            "Duration of processing operation: every handler call (OpenTelemetry messaging).",
            [*labels, "error_type", "eventproc_outcome"],
            unit="seconds",
            constants=(MESSAGING_SYSTEM, PROCESS),
        )
        consumed: dict[tuple[str, ...], int] = {}
        for key, (counts, _) in list(self.process.series.items()):
            consumed[key[:3]] = consumed.get(key[:3], 0) + sum(counts)
        yield process
        messages = CounterMetricFamily(
            "messaging_client_consumed_messages",
            "Number of messages that were delivered to the application: handler calls.",
            labels=labels,
        )
        for key, value in consumed.items():
            messages.add_metric([MESSAGING_SYSTEM, PROCESS, *key], value)
        yield messages


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
        # process_resident_memory_bytes, process_cpu_seconds_total, open fds (Linux):
        # the replaced service's operators alerted on memory.
        ProcessCollector(registry=self.registry)
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

    def handled(
        self,
        event: Event,
        handler: str,
        destination: tuple[str, bool],
        outcome: str,
        error_type: str,
        seconds: float,
        started_at: float,
    ) -> None:
        """One handler call, into every per-call series at once (the dispatcher's hot path).

        ``destination``: :func:`type_label`; ``error_type``: empty when the
        call returned; ``started_at``: time.time() when it began. Queue wait
        counts a delivery's first attempt only (a retry's wait is its
        backoff), lag the calls that end a delivery; replayed events count
        in neither (their created_at is that of their first run).
        """
        counts = self.event_counts
        label, templated = destination
        counts.handler_durations.observe((label, outcome), seconds)
        if error_type:
            error_type = counts.error_type(handler, error_type)
        name, template = ("", label) if templated else (label, "")
        counts.process.observe((handler, name, template, error_type, outcome), seconds)
        created_at = event.created_at
        if created_at is None or event.metadata.get("replayed"):
            return
        created = created_at.timestamp()
        if event.attempts == 1:
            counts.waits.observe((handler,), max(started_at - created, 0.0))
        if outcome in FINAL:
            counts.lags.observe((handler, outcome), max(started_at + seconds - created, 0.0))
