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


class Series:
    """One histogram series in plain numbers: a count per bucket (and +Inf), and the sum."""

    __slots__ = ("buckets", "counts", "total")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self.total += seconds


class Histograms:
    """Histogram series by label values, turned into a metric family when scraped."""

    __slots__ = ("buckets", "series")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.series: dict[tuple[str, ...], Series] = {}

    def slot(self, key: tuple[str, ...]) -> Series:
        """The series of ``key``, made on first use: callers keep it to skip the lookup."""
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = Series(self.buckets)
        return series

    def regrouped(self, key_of: Callable[[tuple[str, ...]], tuple[str, ...]]) -> "Histograms":
        """The same observations under coarser keys (the series whose keys map alike, added)."""
        merged = Histograms(self.buckets)
        for key, series in list(self.series.items()):
            into = merged.slot(key_of(key))
            into.counts = [a + b for a, b in zip(into.counts, series.counts, strict=True)]
            into.total += series.total
        return merged

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
        for key, series in list(self.series.items()):
            cumulative, running = [], 0
            for bound, count in zip(bounds, series.counts, strict=True):
                running += count
                cumulative.append((bound, running))
            family.add_metric([*constants, *key], cumulative, sum_value=series.total)
        return family


class CallSeries(NamedTuple):
    """The series one kind of handler call goes to, looked up once per key."""

    process: Series
    wait: Series
    lag: Series | None  # None: the outcome does not end the delivery


class EventCounts(Collector):
    """Per-event counts and handler durations, kept in plain numbers until a scrape.

    prometheus_client's Counter and Histogram take a lock per update; a busy
    worker updates them for every event, from its one event-loop thread, so
    the numbers are kept here and turned into metric families when scraped.
    """

    def __init__(self) -> None:
        self.outcomes: dict[tuple[str, str], int] = {}
        # (handler, destination name, destination template, error type, outcome)
        self.process = Histograms(PROCESS_BUCKETS)
        self.waits = Histograms(LAG_BUCKETS)  # (handler,)
        self.lags = Histograms(LAG_BUCKETS)  # (handler, outcome)
        self._error_types: dict[str, set[str]] = {}  # per handler, up to MAX_ERROR_TYPES
        self._calls: dict[tuple[str, str, bool, str, str], CallSeries] = {}

    @property
    def durations(self) -> dict[tuple[str, ...], Series]:
        """(event type label, outcome) -> its handler-call series (the deprecated histogram)."""
        return self.process.regrouped(_legacy_key).series

    def count(self, event_type: str, outcome: str) -> None:
        key = (event_type, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def calls(
        self, handler: str, destination: tuple[str, bool], outcome: str, error_type: str
    ) -> CallSeries:
        """The series of one kind of call: a dict lookup on the hot path, made on first use."""
        key = (handler, *destination, outcome, error_type)
        found = self._calls.get(key)
        if found is not None:
            return found
        label, templated = destination
        name, template = ("", label) if templated else (label, "")
        found = self._calls[key] = CallSeries(
            process=self.process.slot((handler, name, template, error_type, outcome)),
            wait=self.waits.slot((handler,)),
            lag=self.lags.slot((handler, outcome)) if outcome in FINAL else None,
        )
        return found

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
        yield self.process.regrouped(_legacy_key).family(
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
        for key, series in list(self.process.series.items()):
            consumed[key[:3]] = consumed.get(key[:3], 0) + sum(series.counts)
        yield process
        messages = CounterMetricFamily(
            "messaging_client_consumed_messages",
            "Number of messages that were delivered to the application: handler calls.",
            labels=labels,
        )
        for key, value in consumed.items():
            messages.add_metric([MESSAGING_SYSTEM, PROCESS, *key], value)
        yield messages


def _legacy_key(key: tuple[str, ...]) -> tuple[str, ...]:
    """A messaging_process_duration_seconds key as eventproc_handler_duration_seconds's."""
    _, name, template, _, outcome = key
    return (name or template, outcome)


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

    def record(self, reading: StoreReading, age: float = 0.0) -> None:
        """``reading``, taken ``age`` seconds ago (a shared reading served again)."""
        self.up, self.reading, self._read_at = True, reading, self._clock() - age

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
        if error_type:
            error_type = counts.error_type(handler, error_type)
        series = counts.calls(handler, destination, outcome, error_type)
        series.process.add(seconds)
        created_at = event.created_at
        if created_at is None or event.metadata.get("replayed"):
            return
        waited = max(started_at - created_at.timestamp(), 0.0)  # clocks may disagree
        if event.attempts == 1:
            series.wait.add(waited)
        if series.lag is not None:
            series.lag.add(waited + seconds)
