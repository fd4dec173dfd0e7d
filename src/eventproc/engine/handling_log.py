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

from eventproc.store.protocol import FailedAttempt

__all__ = ["FailedAttempt", "HandlingLog", "Tally"]

# Seconds: the OpenTelemetry messaging conventions' process-duration buckets.
DURATION_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
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


class HandlingLog:
    def __init__(self) -> None:
        self._tallies: dict[str, Tally] = {}
        self._attempts: deque[FailedAttempt] = deque(maxlen=KEEP_ATTEMPTS)

    def succeeded(self, handler: str, seconds: float) -> None:
        tally = self._tallies.get(handler)
        if tally is None:
            tally = self._tallies[handler] = Tally()
        tally.add(seconds, ok=True)

    def failed(
        self, handler: str, seconds: float, attempt: FailedAttempt, *, counted: bool
    ) -> None:
        """A call that did not succeed; ``counted``: a failure of the handler (not RetryLater)."""
        if counted:
            tally = self._tallies.get(handler)
            if tally is None:
                tally = self._tallies[handler] = Tally()
            tally.add(seconds, ok=False)
        self._attempts.append(attempt)

    def take_tallies(self) -> dict[str, Tally]:
        tallies, self._tallies = self._tallies, {}
        return tallies

    def give_back_tallies(self, tallies: dict[str, Tally]) -> None:
        """Tallies a flush could not write: merged into the current ones."""
        for handler, old in tallies.items():
            tally = self._tallies.setdefault(handler, Tally())
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
