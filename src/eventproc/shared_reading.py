"""One database reading shared by every caller for a short while.

The figures /health, /metrics and the admin API's handler list show cost a
scan of the backlog (they count it, up to a cap). Read on every request, a
dashboard left open, a load balancer's probes and a Prometheus scrape would
each pay it; shared, they pay it once per ``max_age`` between them, and
callers arriving while a reading is under way wait for that one instead of
starting their own. A failed reading is not kept: the next caller tries again.

A reading that is slow (a backlog of millions to count) is kept longer:
for at least ``1 / max_share`` times what it took, so that however large
the tables grow, keeping the figures fresh costs the database at most
``max_share`` of one connection's time (callers see the reading's age).
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")

MAX_SHARE = 0.01  # of one connection's time, at most, spent refreshing one reading


class SharedReadings(Generic[T]):
    """Readings by key (a page of subscriptions, say), each at most ``max_age`` old."""

    def __init__(
        self,
        max_age: float,
        *,
        max_share: float = MAX_SHARE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age = max_age
        self.max_share = max_share
        self._clock = clock
        self._kept: dict[Hashable, tuple[float, float, T]] = {}  # started, took, value
        self._running: dict[Hashable, asyncio.Future[T]] = {}

    async def get(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        kept = self._kept.get(key)
        if kept is not None and self._clock() - kept[0] < max(
            self.max_age, kept[1] / self.max_share
        ):
            return kept[2]
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._read(key, read))
            running.add_done_callback(_retrieved)  # every caller may have gone by its end
            self._running[key] = running
        # shield: one caller giving up (its request cancelled) does not cancel the others' reading.
        return await asyncio.shield(running)

    def age(self, key: Hashable) -> float:
        """Seconds since the reading kept for ``key`` began (0 when none is kept)."""
        kept = self._kept.get(key)
        return self._clock() - kept[0] if kept is not None else 0.0

    def forget(self) -> None:
        """Drop what is kept (after a change this process made itself)."""
        self._kept.clear()

    async def _read(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        started = self._clock()
        try:
            value = await read()
        finally:
            del self._running[key]
        if self.max_age > 0:
            self._kept[key] = (started, self._clock() - started, value)
            if len(self._kept) > 64:  # pages of a huge registry: keep the newest only
                oldest = min(self._kept, key=lambda k: self._kept[k][0])
                del self._kept[oldest]
        return value


def _retrieved(future: "asyncio.Future[Any]") -> None:
    if not future.cancelled():
        future.exception()
