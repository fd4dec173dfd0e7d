"""What this worker's handlers did, kept for the admin surface: failed attempts and tallies.

The dispatcher records every handler call here (a few dict and list
operations; no I/O on the hot path). The completer writes the failed
attempts to ``event_attempts`` after each write-back; the worker's heartbeat
flushes the tallies (per subscription: successes, failures, a duration
histogram) to ``handler_stats``, whence the admin API reads rates and
percentiles for the whole fleet.
"""

import bisect
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eventproc.metrics import PROCESS_BUCKETS
from eventproc.store.protocol import FailedAttempt

__all__ = ["FailedAttempt", "HandlingLog", "Tally"]

# Seconds: the OpenTelemetry messaging conventions' process-duration buckets,
# the same as the Prometheus histogram's, so that a success finds its bucket
# once for both (engine/call_sinks.py).
DURATION_BOUNDS = PROCESS_BUCKETS
KEEP_ATTEMPTS = 10_000  # unwritten failed attempts kept (a database outage): the oldest go first


@dataclass(slots=True)
class Tally:
    """One subscription's calls since the last flush."""

    succeeded: int = 0
    failed: int = 0
    seconds: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BOUNDS) + 1))

    def add(self, seconds: float, *, ok: bool) -> None:
        if ok:
            self.succeeded += 1
        else:
            self.failed += 1
        self.seconds += seconds
        self.buckets[bisect.bisect_left(DURATION_BOUNDS, seconds)] += 1

    def taken(self) -> "Tally":
        """A copy of the counts so far; this tally starts again from zero."""
        copy = Tally(self.succeeded, self.failed, self.seconds, self.buckets)
        self.succeeded = self.failed = 0
        self.seconds = 0.0
        self.buckets = [0] * (len(DURATION_BOUNDS) + 1)
        return copy


class HandlingLog:
    """The tallies live as long as the log: the dispatcher keeps each one it counts into."""

    def __init__(self) -> None:
        self._tallies: dict[str, Tally] = {}
        self._attempts: deque[FailedAttempt] = deque(maxlen=KEEP_ATTEMPTS)

    def tally(self, handler: str) -> Tally:
        """``handler``'s tally, made on first use."""
        tally = self._tallies.get(handler)
        if tally is None:
            tally = self._tallies[handler] = Tally()
        return tally

    def succeeded(self, handler: str, seconds: float) -> None:
        self.tally(handler).add(seconds, ok=True)

    def failed(
        self, handler: str, seconds: float, attempt: FailedAttempt, *, counted: bool
    ) -> None:
        """A call that did not succeed; ``counted``: a failure of the handler (not RetryLater)."""
        if counted:
            self.tally(handler).add(seconds, ok=False)
        self._attempts.append(attempt)

    def take_tallies(self) -> dict[str, Tally]:
        """The calls counted since the last take, per subscription that had any."""
        return {
            handler: tally.taken()
            for handler, tally in self._tallies.items()
            if tally.succeeded or tally.failed
        }

    def give_back_tallies(self, tallies: dict[str, Tally]) -> None:
        """Tallies a flush could not write: merged into the current ones."""
        for handler, old in tallies.items():
            tally = self.tally(handler)
            tally.succeeded += old.succeeded
            tally.failed += old.failed
            tally.seconds += old.seconds
            tally.buckets = [a + b for a, b in zip(tally.buckets, old.buckets, strict=True)]

    @property
    def has_attempts(self) -> bool:
        return bool(self._attempts)

    def take_attempts(self) -> list[FailedAttempt]:
        attempts = list(self._attempts)
        self._attempts.clear()
        return attempts

    def give_back_attempts(self, attempts: list[FailedAttempt]) -> None:
        """Attempts not stored (an outage): kept before newer ones; the oldest go first."""
        kept = [*attempts, *self._attempts][-KEEP_ATTEMPTS:]
        self._attempts = deque(kept, maxlen=KEEP_ATTEMPTS)


def now() -> datetime:
    return datetime.now(UTC)
