"""A worker's reports: its heartbeat (eventproc_workers), its handlers' stats, the paused set.

Runs beside the processor in every worker (admin/chores.py). Every
PAUSE_REFRESH_SECONDS it reads the paused subscriptions (one small table),
so that a pause made through any worker's API holds in this one within a
few seconds, and a resume wakes its claims; every HEARTBEAT_SECONDS it
upserts this worker's row and adds the dispatcher's tallies to
handler_stats. A database outage never stops the worker: each report is
logged once when it starts failing and once when it works again, and
tallies that could not be written are kept for the next flush. At
shutdown it makes a last report if it can within LAST_REPORT_SECONDS.
"""

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from eventproc import __version__
from eventproc.engine.handling_log import DURATION_BOUNDS, Tally
from eventproc.store.admin.handlers import StatsDelta, WorkerRow

if TYPE_CHECKING:
    from eventproc.runtime import Runtime

logger = logging.getLogger("eventproc.admin")

PAUSE_REFRESH_SECONDS = 2.0
HEARTBEAT_SECONDS = 10.0
ALIVE_HEARTBEATS = 3  # a worker not seen for this many heartbeats is not alive
LAST_REPORT_SECONDS = 1.0
PRUNE_SECONDS = 3600.0
KEEP_STATS = timedelta(days=2)  # handler_stats minutes kept (the API reads the last hour)
KEEP_WORKERS = timedelta(days=7)  # a worker's row kept after it was last seen


async def keep_reporting(runtime: "Runtime") -> None:
    """Report until cancelled; then one last report, bounded in time."""
    reporter = Reporter(runtime)
    try:
        while True:
            await reporter.tick()
            await asyncio.sleep(PAUSE_REFRESH_SECONDS)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(LAST_REPORT_SECONDS):
                await reporter.report()
        raise


class Reporter:
    def __init__(self, runtime: "Runtime") -> None:
        self.runtime = runtime
        self.reads = runtime.store.admin.handlers
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._failing: set[str] = set()  # reports failing now (each logged once)
        self._beat_at = -math.inf  # monotonic time of the last heartbeat
        self._pruned_at = -math.inf

    async def tick(self) -> None:
        await self._guarded("paused", self.runtime.processor.refresh_paused())
        now = time.monotonic()
        if now - self._beat_at >= HEARTBEAT_SECONDS:
            self._beat_at = now
            await self.report()
        if now - self._pruned_at >= PRUNE_SECONDS:
            self._pruned_at = now
            at = datetime.now(UTC)
            await self._guarded("prune", self.reads.prune(at - KEEP_STATS, at - KEEP_WORKERS))

    async def report(self) -> None:
        """The heartbeat and the stats flush (each guarded on its own)."""
        producer = self.runtime.processor.producer
        beat = WorkerRow(
            id=self.runtime.worker_id,
            host=self.host,
            pid=self.pid,
            version=__version__,
            started_at=self.runtime.started_at,
            last_claim_at=producer.last_claim_at,
        )
        await self._guarded("heartbeat", self.reads.beat(beat))
        await self._guarded("stats", self.flush())

    async def flush(self) -> None:
        """The tallies since the last flush, added to this minute's rows; kept on failure."""
        handling = self.runtime.processor.handling
        tallies = handling.take_tallies()
        if not tallies:
            return
        minute = datetime.now(UTC).replace(second=0, microsecond=0)
        try:
            await self.reads.add_stats(self.runtime.worker_id, minute, deltas(tallies))
        except BaseException:
            handling.give_back_tallies(tallies)
            raise

    async def _guarded(self, what: str, report: Awaitable[None]) -> None:
        """Run one report; a failure is logged when it starts and when it ends, never raised."""
        try:
            await report
        except Exception as exc:
            if what not in self._failing:
                self._failing.add(what)
                logger.warning(
                    "Admin report %r failing, retrying: %s",
                    what,
                    exc,
                    extra={"action": "report_failing"},
                )
            return
        if what in self._failing:
            self._failing.discard(what)
            logger.info("Admin report %r works again", what, extra={"action": "report_back"})


def deltas(tallies: dict[str, Tally]) -> dict[str, StatsDelta]:
    return {
        name: StatsDelta(t.succeeded, t.failed, t.seconds * 1000, tuple(t.buckets))
        for name, t in tallies.items()
    }


def quantile_ms(buckets: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile of a duration histogram (DURATION_BOUNDS), in ms; None if empty.

    Linear within the bucket that holds it, as Prometheus' histogram_quantile
    does; past the last bound (10 s) the answer is that bound.
    """
    if len(buckets) != len(DURATION_BOUNDS) + 1:
        return None
    total = sum(buckets)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        if count and seen + count >= rank:
            if index == len(DURATION_BOUNDS):
                return DURATION_BOUNDS[-1] * 1000
            low = DURATION_BOUNDS[index - 1] if index else 0.0
            high = DURATION_BOUNDS[index]
            return (low + (high - low) * (rank - seen) / count) * 1000
        seen += count
    return DURATION_BOUNDS[-1] * 1000
