"""Write results back in batches: one store call per flush, whatever the mix.

Results that arrive while a flush is running wait for the next one, so the
batch size grows with load and an idle worker flushes at once. A flush that
fails because the database is away keeps its results and tries again; the
leases may expire meanwhile, and then the events simply run again (delivery
is at least once).

A busy worker's successes usually ride back with its next claim instead
(:meth:`Completer.take`): one statement and one commit per batch instead of
two. The completer holds them for that only while :class:`Slots` says a
claim is coming, and never longer than HOLD_SECONDS. Only the producer takes
them (:meth:`Completer.take`, then ``carried`` or ``give_back``).

The completer never calls into the rest of the engine: it publishes every
write-back on :attr:`Completer.flushes` (with the retry delays it wrote) and
sets ``Slots.wakeup``; the producer takes them from there, claims again and
remembers when the retries fall due.
"""

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from eventproc.engine.handling_log import HandlingLog
from eventproc.engine.slots import Slots
from eventproc.errors import StoreError, StoreUnavailable
from eventproc.metrics import Metrics
from eventproc.processor_config import ProcessorConfig
from eventproc.stats import Stats
from eventproc.store.protocol import Kind, Storage, WriteBack

logger = logging.getLogger("eventproc.completer")

MAX_BACKOFF_SECONDS = 5.0
HOLD_SECONDS = 0.05  # longest a success waits for a claim to carry it


@dataclass(slots=True)
class Carried:
    """Successes a claim writes back with it (see :meth:`Completer.take`)."""

    completions: list[WriteBack]
    committed: int  # transactional successes, counted in stats when these land
    upto: int  # every result numbered up to here is in this batch
    since: float  # when the oldest of them was added (monotonic)


@dataclass(frozen=True, slots=True)
class Flushed:
    """A write-back that landed, as published on :attr:`Completer.flushes`."""

    at: float  # monotonic, just after the write: retry delays count from here
    retry_delays: tuple[float, ...]  # of the retries and reschedules it wrote
    # It wrote deliveries: one may have unblocked another, or a retry moved
    # onto one, and a delivery claim may find work.
    deliveries: bool = False


class Completer:
    def __init__(
        self,
        store: Storage,
        stats: Stats,
        metrics: Metrics,
        *,
        slots: Slots | None = None,
        in_order: bool = False,
        log: HandlingLog | None = None,
    ) -> None:
        self.store = store
        self.log = log  # the dispatcher's: its failed attempts are stored after each write-back
        self.in_order = in_order  # ORDERING=aggregate: see Store.event_write_back
        self.stats = stats
        self.metrics = metrics
        # Read only: whether a claim is coming (without a producer, none is).
        self.slots = slots if slots is not None else Slots(ProcessorConfig())
        # Every write-back that landed, for the producer (River's subscribeCh).
        self.flushes: asyncio.Queue[Flushed] = asyncio.Queue()
        # Results in the order they were added. Successes only (``closing``)
        # may ride back with a claim; a failure in the buffer means a flush.
        self._batch: list[WriteBack] = []
        self._oldest = 0.0  # when the first buffered result was added
        self._failing = 0  # of _batch, results that are not successes
        self._committed = 0
        self._unblocking = False  # a transactional delivery committed since the last flush
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
        self._waiters = 0  # callers of wait_written still waiting
        # One writer at a time, a flush or a claim carrying results: results
        # must land in the order they were numbered.
        self._writing = False
        self._write_done = asyncio.Event()
        self._write_done.set()

    @property
    def pending(self) -> int:
        return len(self._batch)

    def add(self, result: WriteBack) -> None:
        if result.kind is Kind.COMMITTED:
            self._committed += 1
            # A transactional delivery's own commit may unblock the next one.
            self._unblocking = self._unblocking or (
                self.in_order and result.lease.handler is not None
            )
        else:
            if not self._batch:
                self._oldest = time.monotonic()
            self._batch.append(result)
            self._failing += not _carriable(result)
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
                if not self._writing:
                    return
                # A claim still carries results: if it fails they come back here.
                await self._write_done.wait()
                self._ready.set()
                continue
            wait = self._left_for_a_claim()
            if wait > 0:
                # Woken early when a claim took them (or gave them back), or
                # when something that cannot wait arrives.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._ready.wait()
                self._ready.set()
                continue
            if not self.pending and not self._committed:
                continue  # a claim carried them
            if await self.flush():
                backoff = 0.1
            else:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                self._ready.set()

    def _left_for_a_claim(self) -> float:
        """Seconds to leave the buffered successes for a coming claim; 0: flush now."""
        if (
            self._closing
            or self._waiters
            or not self._batch
            or self._failing
            or not self.slots.claim_coming()
        ):
            return 0.0
        return max(self._oldest + HOLD_SECONDS - time.monotonic(), 0.0)

    def take(self) -> Carried | None:
        """The buffered successes, for a claim to write back atomically with itself.

        None unless nothing else is being written and nothing but successes
        waits: results must land in the order they were added (wait_written
        relies on it). The caller must hand the batch to :meth:`carried` or
        :meth:`give_back`.
        """
        if self._writing or not self._batch or self._failing:
            return None
        self._writing = True
        self._write_done.clear()
        carried = Carried(self._batch, self._committed, self._added, self._oldest)
        self._batch = []
        self._committed = 0
        return carried

    async def carried(self, batch: Carried) -> None:
        """The claim that took ``batch`` committed: its results are in the database."""
        self._release()
        self._record(batch.completions, batch.committed)
        await self._written_up_to(batch.upto)
        self._publish(())

    def give_back(self, batch: Carried) -> None:
        """The claim that took ``batch`` failed: the batch is written the usual way."""
        self._release()
        self._keep(batch.completions, batch.committed, since=batch.since)
        self._idle.clear()
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
        self._waiters += 1
        self._ready.set()
        try:
            async with self._progress:
                await self._progress.wait_for(lambda: self._written >= target)
        finally:
            self._waiters -= 1
        return self._dropped_through < target

    async def flush(self) -> bool:
        """Write everything buffered; False if the database refused (kept for later)."""
        while self._writing:  # a claim is carrying earlier results
            await self._write_done.wait()
        self._writing = True
        self._write_done.clear()
        try:
            return await self._flush()
        finally:
            self._release()

    async def _flush(self) -> bool:
        batch, self._batch, self._failing = self._batch, [], 0
        committed, self._committed = self._committed, 0
        unblocking, self._unblocking = self._unblocking, False
        upto = self._added  # this batch: everything added before the swap
        try:
            if batch:
                await self.store.event_write_back(batch, in_order=self.in_order)
        except StoreUnavailable as exc:
            # Everything goes back: the write is one transaction, fenced, and
            # idempotent (a second completion of a completed row matches nothing).
            self.metrics.store_errors.labels("complete").inc()
            logger.error("Could not write results back, will retry: %s", exc)
            self._keep(batch, committed)
            return False
        except StoreError as exc:
            # Not a connectivity problem: the same rows would fail the same
            # way. Their leases expire and the events run again.
            self.metrics.store_errors.labels("complete").inc()
            lost = len(batch)
            logger.error("Dropping %d results after a database error: %s", lost, exc)
            self._dropped_through = upto
        except Exception:  # a bug must not end the completer: keep them, retry with backoff
            self.metrics.store_errors.labels("complete").inc()
            logger.exception("Unexpected error writing results back, will retry")
            self._keep(batch, committed)
            return False
        else:
            self._record(batch, committed)
            await self._store_attempts()
        await self._written_up_to(upto)
        # Retry delays count from now, after the write: never earlier than the
        # database's own next_attempt_at.
        self._publish(
            tuple(item.delay_seconds for item in batch if item.rescheduling),
            deliveries=unblocking or self._unblocks(batch),
        )
        return True

    async def _store_attempts(self) -> None:
        """The failed attempts so far, into the attempt log; kept for the next flush if refused."""
        if self.log is None or not self.log.has_attempts:
            return
        attempts = self.log.take_attempts()
        try:
            await self.store.attempts_record(attempts)
        except StoreError as exc:
            logger.warning("Could not store %d failed attempts, will retry: %s", len(attempts), exc)
            self.log.give_back_attempts(attempts)

    def _unblocks(self, batch: list[WriteBack]) -> bool:
        """Whether the batch may have let a waiting delivery go (ORDERING=aggregate).

        A delivery that finished may be the one its handler's later ones of
        the aggregate wait for; retries need no claim now (the producer
        remembers when they fall due), nor does anything with ORDERING=none,
        where no delivery waits.
        """
        return self.in_order and any(
            item.lease.handler is not None and not item.rescheduling for item in batch
        )

    def _publish(self, retry_delays: tuple[float, ...], *, deliveries: bool = False) -> None:
        self.flushes.put_nowait(Flushed(time.monotonic(), retry_delays, deliveries))
        self.slots.wakeup.set()

    def _keep(
        self,
        batch: list[WriteBack],
        committed: int,
        *,
        since: float | None = None,
    ) -> None:
        """Put a batch that was not written back in front of what came since.

        ``since``: when its oldest result was added, if known (now if not).
        """
        if not self._batch:
            self._oldest = time.monotonic() if since is None else since
        self._batch[:0] = batch
        self._failing += sum(not _carriable(item) for item in batch)
        self._committed += committed

    def _release(self) -> None:
        self._writing = False
        self._write_done.set()

    def _record(
        self,
        batch: list[WriteBack],
        committed: int,
    ) -> None:
        kinds = [item.kind for item in batch]
        self.stats.record(
            succeeded=kinds.count(Kind.SUCCEEDED) + committed,
            skipped=kinds.count(Kind.SKIPPED),
            failed=kinds.count(Kind.RETRY),
            dead=kinds.count(Kind.DEAD_LETTERED),
        )

    async def _written_up_to(self, upto: int) -> None:
        async with self._progress:
            self._written = upto
            self._progress.notify_all()
        if not self.pending:
            self._idle.set()


def _carriable(result: WriteBack) -> bool:
    """Whether a claim may carry it: a success on an event's own row.

    A delivery's result needs its own statement (and must land before the
    rows' successes behind it), so one in the buffer means a flush.
    """
    return result.kind in _CARRIABLE and result.lease.handler is None


_CARRIABLE = frozenset((Kind.SUCCEEDED, Kind.SKIPPED))  # the kinds WriteBack.closing closes
