"""Write results back in batches: one statement per kind per flush.

Results that arrive while a flush is running wait for the next one, so the
batch size grows with load and an idle worker flushes at once. A flush that
fails because the database is away keeps its results and tries again; the
leases may expire meanwhile, and then the events simply run again (delivery
is at least once).
"""

import asyncio
import logging
from collections.abc import Callable

from eventproc.dispatch import Committed, WriteBack
from eventproc.errors import StoreError, StoreUnavailable
from eventproc.event import Outcome
from eventproc.metrics import Metrics
from eventproc.stats import Stats
from eventproc.store.protocol import Burial, Completion, Failure, Store

logger = logging.getLogger("eventproc.completer")

MAX_BACKOFF_SECONDS = 5.0


class Completer:
    def __init__(
        self,
        store: Store,
        stats: Stats,
        metrics: Metrics,
        *,
        on_flushed: Callable[[list[float]], None] = lambda delays: None,
        in_order: bool = False,
    ) -> None:
        self.store = store
        self.in_order = in_order  # ORDERING=aggregate: see Store.event_complete_many
        self.stats = stats
        self.metrics = metrics
        self.on_flushed = on_flushed
        self._completions: list[Completion] = []
        self._failures: list[Failure] = []
        self._burials: list[Burial] = []
        self._committed = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        # Buffered results are numbered so that a caller can wait for "all
        # that I added so far" to be written (see wait_written).
        self._added = 0
        self._written = 0
        self._dropped_through = 0
        self._progress = asyncio.Condition()

    @property
    def pending(self) -> int:
        return len(self._completions) + len(self._failures) + len(self._burials)

    def add(self, result: WriteBack) -> None:
        if isinstance(result, Committed):
            self._committed += 1
        elif isinstance(result, Completion):
            self._completions.append(result)
            self._added += 1
        elif isinstance(result, Failure):
            self._failures.append(result)
            self._added += 1
        else:
            self._burials.append(result)
            self._added += 1
        self._idle.clear()
        self._ready.set()

    async def run(self) -> None:
        """Flush whenever something is waiting, until :meth:`close` (or cancelled)."""
        backoff = 0.1
        while True:
            if not self._closing:
                await self._ready.wait()
            self._ready.clear()
            if self._closing and not self.pending and not self._committed:
                return
            if await self.flush():
                backoff = 0.1
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                self._ready.set()

    def close(self) -> None:
        """Let :meth:`run` finish the flush in progress and what is buffered, then return.

        Cancelling instead could roll back a flush half-way: results would be
        lost and their events run again.
        """
        self._closing = True
        self._ready.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    async def wait_written(self) -> bool:
        """Wait until every result added so far is in the database.

        A run uses it before a transactional handler commits on its own, so
        that the event's predecessor is never left behind it. False when a
        result was dropped (the caller must not go on).
        """
        target = self._added
        self._ready.set()
        async with self._progress:
            await self._progress.wait_for(lambda: self._written >= target)
        return self._dropped_through < target

    async def flush(self) -> bool:
        """Write everything buffered; False if the database refused (kept for later)."""
        completions, self._completions = self._completions, []
        failures, self._failures = self._failures, []
        burials, self._burials = self._burials, []
        committed, self._committed = self._committed, 0
        upto = self._added  # this batch: everything added before the swap
        try:
            if completions:
                await self.store.event_complete_many(completions, in_order=self.in_order)
            if failures:
                await self.store.event_retry_many(failures)
            if burials:
                await self.store.event_dead_letter_many(burials)
        except StoreUnavailable as exc:
            # Everything goes back: the statements that did commit are fenced
            # and idempotent (a second completion of a completed row matches
            # nothing).
            self.metrics.store_errors.labels("complete").inc()
            logger.error("Could not write results back, will retry: %s", exc)
            self._completions[:0] = completions
            self._failures[:0] = failures
            self._burials[:0] = burials
            self._committed += committed
            return False
        except StoreError as exc:
            # Not a connectivity problem: the same rows would fail the same
            # way. Their leases expire and the events run again.
            self.metrics.store_errors.labels("complete").inc()
            lost = len(completions) + len(failures) + len(burials)
            logger.error("Dropping %d results after a database error: %s", lost, exc)
            self._dropped_through = upto
        else:
            skipped = sum(1 for c in completions if c.outcome is Outcome.SKIPPED)
            self.stats.record(
                succeeded=len(completions) - skipped + committed,
                skipped=skipped,
                failed=sum(1 for f in failures if f.counted),
                dead=len(burials),
            )
        async with self._progress:
            self._written = upto
            self._progress.notify_all()
        if not self.pending:
            self._idle.set()
        # Retry delays count from now, after the write: never earlier than the
        # database's own next_attempt_at.
        self.on_flushed([failure.delay_seconds for failure in failures])
        return True
