"""Where a successful handler call is counted: every series it feeds, found once.

A success updates the Prometheus series (the call's duration, its queue
wait, its end-to-end lag, the per-type outcome count) and the admin API's
tally of its subscription. Looked up one by one these were a fifth of a
busy worker's Python time per event; a :class:`SuccessSink` holds them all
for one (subscription, event type), and the duration's bucket is found once
for the histogram and the tally (they share their bounds).
"""

import bisect
from datetime import datetime

from eventproc.engine.handling_log import HandlingLog, Tally
from eventproc.event import Event
from eventproc.metrics import LAG_BUCKETS, PROCESS_BUCKETS, Metrics, Series, type_label
from eventproc.registry import Handler, Registry

_CACHE_LIMIT = 4_096  # (subscription, event type) pairs: a wildcard takes any type


class SuccessSink:
    """``destination``: the event type's bounded label in the subscription (metrics.type_label)."""

    __slots__ = ("destination", "lag", "outcome", "outcomes", "process", "tally", "wait")

    def __init__(
        self,
        destination: tuple[str, bool],
        process: Series,
        wait: Series,
        lag: Series,
        tally: Tally,
        outcomes: dict[tuple[str, str], int],
        outcome: tuple[str, str],
    ) -> None:
        self.destination = destination
        self.process, self.wait, self.lag, self.tally = process, wait, lag, tally
        self.outcomes, self.outcome = outcomes, outcome

    def record(self, event: Event, seconds: float, started_at: float) -> None:
        """One call of ``event`` that returned after ``seconds``, begun at ``started_at``."""
        index = bisect.bisect_left(PROCESS_BUCKETS, seconds)  # the tally's bounds too
        process, tally = self.process, self.tally
        process.counts[index] += 1
        process.total += seconds
        tally.succeeded += 1
        tally.seconds += seconds
        tally.buckets[index] += 1
        outcomes = self.outcomes
        outcomes[self.outcome] = outcomes.get(self.outcome, 0) + 1
        created_at: datetime | None = event.created_at
        if created_at is None or event.metadata.get("replayed"):
            return  # see Metrics.handled: replays count in neither wait nor lag
        waited = started_at - created_at.timestamp()
        if waited < 0.0:  # the database's clock ahead of ours
            waited = 0.0
        if event.attempts == 1:
            wait = self.wait
            wait.counts[bisect.bisect_left(LAG_BUCKETS, waited)] += 1
            wait.total += waited
        lag, lagged = self.lag, waited + seconds
        lag.counts[bisect.bisect_left(LAG_BUCKETS, lagged)] += 1
        lag.total += lagged


class SuccessSinks:
    """The sinks of one dispatcher, with their subscriptions, by (subscription, event type)."""

    def __init__(self, metrics: Metrics, log: HandlingLog, registry: Registry) -> None:
        self.metrics, self.log, self.registry = metrics, log, registry
        self._known: dict[tuple[str, str], tuple[Handler, SuccessSink]] = {}

    def find(self, name: str, event_type: str) -> tuple[Handler, SuccessSink] | None:
        """The subscription named ``name`` and its sink for ``event_type``; None: no such one."""
        known = self._known.get((name, event_type))
        if known is None:
            handler = self.registry.subscription(name)
            if handler is None:
                return None
            known = self._made(handler, event_type)
        return known

    def _made(self, handler: Handler, event_type: str) -> tuple[Handler, SuccessSink]:
        destination = type_label(handler.types, event_type)
        counts = self.metrics.event_counts
        series = counts.calls(handler.name, destination, "succeeded", "")
        assert series.lag is not None  # a success ends its delivery
        sink = SuccessSink(
            destination,
            series.process,
            series.wait,
            series.lag,
            self.log.tally(handler.name),
            counts.outcomes,
            (destination[0], "succeeded"),
        )
        if len(self._known) >= _CACHE_LIMIT:
            self._known.clear()
        known = self._known[(handler.name, event_type)] = (handler, sink)
        return known
