"""The loop: wake, claim what free slots allow, dispatch, hand results on.

Wakes on NOTIFY (or an in-process publish), on a jittered poll, on a freed
slot after a full claim, and when a retry it scheduled falls due. Never
writes SQL: the store does; never decides retries: the dispatcher does.
"""

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
import os
import random
import socket
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eventproc.completer import Completer
from eventproc.dispatch import Dispatcher
from eventproc.errors import StoreConflict, StoreError, StoreUnavailable
from eventproc.event import Event
from eventproc.metrics import Metrics
from eventproc.processor_config import ProcessorConfig
from eventproc.registry import Registry
from eventproc.stats import Stats
from eventproc.stepping import Stepped
from eventproc.store.protocol import ClaimPolicy, Kind, Lease, Store, WriteBack
from eventproc.supervision import SideTasks

logger = logging.getLogger("eventproc.processor")

MAX_OUTAGE_BACKOFF_SECONDS = 30.0
MAX_CONFLICT_RETRIES = 3
POLL_JITTER = 0.1
COMPLETER_CLOSE_SECONDS = 15.0


def default_worker_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class Signals:
    """Test hooks: awaitable moments instead of sleeps."""

    claimed: asyncio.Event = field(default_factory=asyncio.Event)
    flushed: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)


class Processor:
    def __init__(
        self,
        store: Store,
        registry: Registry,
        config: ProcessorConfig | None = None,
        *,
        stats: Stats | None = None,
        metrics: Metrics | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.config = config or ProcessorConfig()
        self.stats = stats or Stats()
        self.metrics = metrics or Metrics()
        self.worker_id = worker_id or default_worker_id()
        self.signals = Signals()
        self.dispatcher = self._dispatcher()
        self.completer = self._completer()
        self.database_ok = True
        self.last_error: str | None = None
        self._tokens = itertools.count(1)
        # Claimed runs (the events of one aggregate, handled in order; usually
        # a single event) wait in a queue for a runner task. A runner handles
        # runs one after another while their handlers finish without waiting;
        # when one waits (I/O), another runner takes the queue meanwhile. So a
        # batch of quick handlers costs no task per event, and CONCURRENCY
        # still bounds what runs at once (runs queued or running <= slots).
        self._queued: deque[tuple[list[Event], float]] = deque()  # (run, claimed at)
        self._runners: dict[asyncio.Task[None], list[Event]] = {}  # -> the run it handles
        self._pickers = 0  # runners not waiting inside a handler
        # Runners start from this context, not from whoever made them (an
        # HTTP request's context must not leak into unrelated runs).
        self._runner_context = contextvars.copy_context()
        self._busy = 0  # events claimed and not yet handled
        # Read at scrape time: setting a gauge per event takes a lock each time.
        self.metrics.in_flight.set_function(lambda: self._busy)
        self._wakeup = asyncio.Event()
        self._claim_requested = True
        self._more_available = False
        # Claims running in the background, and the slots they may fill.
        self._claims: set[asyncio.Task[None]] = set()
        self._reserved = 0
        self._claim_error: Exception | None = None
        self._producing = False
        self._stopping = asyncio.Event()
        self._due: list[float] = []  # heap of monotonic times our retries fall due
        self._running = False
        self._side: SideTasks | None = None

    def _dispatcher(self) -> Dispatcher:
        return Dispatcher(
            self.registry,
            self.store,
            retry=self.config.retry,
            timeout_seconds=self.config.handler_timeout_seconds,
            worker_id=self.worker_id,
            metrics=self.metrics,
            blocks_aggregates=self.config.ordered and not self.config.park_failed_aggregates,
        )

    def _completer(self) -> Completer:
        return Completer(
            self.store,
            self.stats,
            self.metrics,
            on_flushed=self._flushed,
            in_order=self.config.ordered,
            claim_coming=self._claim_coming,
        )

    # -- public control ------------------------------------------------------

    def wake(self) -> None:
        """Something may be claimable now (NOTIFY, publish, replay, trigger)."""
        self._claim_requested = True
        self._wakeup.set()

    def stop(self) -> None:
        """Stop claiming; ``run`` then drains in-flight handlers within the grace."""
        self._stopping.set()
        self._wakeup.set()

    @property
    def in_flight(self) -> int:
        return self._busy

    @property
    def running(self) -> bool:
        return self._running

    @property
    def crash(self) -> Exception | None:
        """Why the processor stopped by itself (a side task crashed), if it did."""
        return self._side.crash if self._side is not None else None

    def policy(self, limit: int) -> ClaimPolicy:
        return ClaimPolicy(
            lease_seconds=self.config.lease_seconds,
            ordered=self.config.ordered,
            limit=limit,
            block_on_dead_letters=not self.config.park_failed_aggregates,
            follow=self.config.ordered,
        )

    def next_token(self) -> str:
        return f"{self.worker_id}:{next(self._tokens)}"

    async def process_event(self, event_id: uuid.UUID) -> Event:
        """Claim one event now (manual trigger) and handle it in the background.

        Raises NotFound or Conflict (already processed, leased, or waiting
        behind an earlier event of its aggregate).
        """
        event = await self.store.event_claim_one(event_id, self.next_token(), self.policy(1))
        self._start([event])
        return event

    async def process_batch(self) -> int:
        """Claim one batch now (manual trigger); handlers run in the background."""
        return await self._claim_once()

    # -- the loop ------------------------------------------------------------

    async def run(self, *, until_idle: bool = False) -> None:
        """Process until :meth:`stop` (or, with ``until_idle``, until nothing is left)."""
        self._running = True
        self.store.add_local_waker(self.wake)
        side = SideTasks(on_crash=self._on_side_crash)
        self._side = side
        completer = side.start(self.completer.run(), "eventproc-completer")
        side.start(self._keep_leases(), "eventproc-leases")
        if self.config.polling_enabled and self.config.listen:
            side.start(self.store.listen(self.wake), "eventproc-listen")
        self._producing = True
        try:
            await self._produce(until_idle)
        finally:
            self._producing = False  # also when cancelled: claimers stop too
            try:
                await self._drain(completer)
            except Exception:
                if side.crash is None:
                    raise  # a crashed completer is reported below, as a crash
            finally:
                await side.cancel(completer)
                self._running = False
        side.raise_crash()

    def _on_side_crash(self) -> None:
        assert self._side is not None and self._side.crash is not None
        self.last_error = str(self._side.crash)
        logger.critical(
            "Stopping: %s",
            self._side.crash,
            exc_info=self._side.crash.__cause__,
            extra={"action": "crashed"},
        )
        self.stop()

    async def _produce(self, until_idle: bool) -> None:
        outage = 0.0
        conflicts = 0  # in a row; a few are retried at once, then backed off from
        while not self._stopping.is_set():
            error, self._claim_error = self._claim_error, None
            conflicts = conflicts + 1 if isinstance(error, StoreConflict) else 0
            if isinstance(error, StoreConflict) and conflicts <= MAX_CONFLICT_RETRIES:
                # A claim carrying results can deadlock with a lease renewal
                # of the same rows: nothing is wrong with the database.
                self.metrics.store_errors.labels("claim").inc()
                logger.info("Claim lost a lock race, claiming again: %s", error)
                self._claim_requested = True
                continue
            if isinstance(error, StoreUnavailable):
                outage = min(max(outage * 2, 0.5), MAX_OUTAGE_BACKOFF_SECONDS)
                self._note_outage(error, outage)
                await self._sleep(outage)
                self._claim_requested = True
                continue
            if error is not None:
                self.metrics.store_errors.labels("claim").inc()
                logger.error(
                    "Claim failed: %s",
                    error,
                    exc_info=None if isinstance(error, StoreError) else error,
                    extra={"action": "claim_failed"},
                )
                await self._sleep(1.0)
                self._claim_requested = True
                continue
            if self.database_ok:
                outage = 0.0
            if self._should_claim():
                self._claim_in_background()
                continue
            if until_idle and await self._is_idle():
                return
            await self._wait()

    def _should_claim(self) -> bool:
        return self._may_claim(others=len(self._claims))

    def _may_claim(self, others: int) -> bool:
        """Whether one more claim should go out beside ``others`` still out."""
        # ENABLE_POLLING=false (the seed's meaning): only the manual triggers claim.
        free = self._free_slots()
        if not self.config.polling_enabled or free <= 0:
            return False
        # With CLAIMS_AT_ONCE > 1, more claims go out beside one still out:
        # only full-size ones, and only while their events would fit.
        if others and (others >= self.config.claims_at_once or free < self.config.batch_size):
            return False
        return self._claim_requested or self._more_available

    def _free_slots(self) -> int:
        """Events one more claim may bring.

        While no handler is waiting (the queue empties within the loop turn
        it is filled in), one batch more than CONCURRENCY: otherwise the next
        claim would only go out after the batch just claimed was handled, and
        a worker with quick handlers would sit idle for every round trip.
        Runners are capped at CONCURRENCY, so no more handlers run at once.
        """
        free = self.config.concurrency - self._busy - self._reserved
        if self._pickers == len(self._runners):
            free += self.config.batch_size
        return free

    def _reserve(self) -> int:
        """Reserve the slots of one claim; how many (0: none free, nothing reserved)."""
        limit = min(self.config.batch_size, self._free_slots())
        if limit <= 0:
            return 0
        self._reserved += limit
        return limit

    def _claim_in_background(self) -> None:
        self._claim_requested = False
        # Reserved now, not when the task first runs: the loop decides its
        # next step from the free slots before that.
        limit = self._reserve()
        if not limit:
            return
        task = asyncio.create_task(self._keep_claiming(limit))
        self._claims.add(task)

    async def _keep_claiming(self, limit: int) -> None:
        """Claim, and claim again at once while full batches keep coming and fit.

        Going on in this task, instead of handing back to the loop, sends the
        next claim before the handlers just started get to run. ``limit`` is
        already reserved.
        """
        try:
            while True:
                try:
                    await self._claim(limit)
                finally:
                    self._reserved -= limit
                if (
                    self._stopping.is_set()
                    or not self._producing
                    or not self._may_claim(len(self._claims) - 1)
                ):
                    return
                self._claim_requested = False
                limit = self._reserve()  # _may_claim saw a free slot
        except Exception as exc:  # the loop reports it and backs off
            self._claim_error = self._claim_error or exc
        finally:
            # Leave the set before waking the loop, so that it sees this
            # claimer gone (a done callback would run after the loop's turn).
            self._claims.discard(asyncio.current_task())
            self._wakeup.set()

    async def _claim_once(self) -> int:
        """One claim, awaited (manual trigger, drain mode)."""
        self._claim_requested = False
        limit = self._reserve()
        if not limit:
            return 0
        try:
            return await self._claim(limit)
        finally:
            self._reserved -= limit

    async def _claim(self, limit: int) -> int:
        if limit <= 0:  # never ask a store for LIMIT 0 or less (SQLite: no limit)
            return 0
        # The successes waiting to be written ride along: one statement for both.
        carried = self.completer.take()
        try:
            claimed = await self.store.event_claim_many(
                self.next_token(),
                self.policy(limit),
                completing=carried.completions if carried is not None else (),
            )
        except BaseException:
            self._more_available = False
            if carried is not None:
                self.completer.give_back(carried)
            raise
        if carried is not None:
            await self.completer.carried(carried)
        if not self.database_ok:
            logger.info("Database reachable again; resuming", extra={"action": "resumed"})
        self.database_ok = True
        self._more_available = len(claimed) == limit
        if claimed:
            self.metrics.claimed.inc(len(claimed))
            for run in _runs(claimed):
                self._start(run)
            self.signals.claimed.set()
        return len(claimed)

    def _claim_coming(self) -> bool:
        """Whether a claim goes out soon that can carry results back (see Completer)."""
        return (
            self._more_available
            and self._free_slots() > 0
            and self._producing
            and self.database_ok
            and self.config.polling_enabled
            and not self._stopping.is_set()
        )

    def _start(self, run: list[Event]) -> None:
        self._queued.append((run, time.monotonic()))
        self._busy += len(run)
        if not self._pickers:
            self._add_runner()

    def _add_runner(self) -> None:
        if len(self._runners) >= self.config.concurrency:
            return  # the queue waits for a runner to finish its handler
        self._pickers += 1
        task = asyncio.create_task(self._run_queue(), context=self._runner_context)
        self._runners[task] = []

    async def _run_queue(self) -> None:
        """Handle queued runs until none is left; see ``_queued``."""
        me = asyncio.current_task()
        assert me is not None
        try:
            while self._queued:
                run, claimed_at = self._queued.popleft()
                self._runners[me] = run
                # Each run in a context of its own, as a task of its own would have.
                handling = Stepped(self._handle(run, claimed_at), contextvars.copy_context())
                try:
                    if handling.first_step():
                        continue  # finished without waiting
                    self._pickers -= 1
                    if self._queued and not self._pickers:
                        self._add_runner()
                    try:
                        await handling
                    finally:
                        self._pickers += 1
                except asyncio.CancelledError:
                    if me.cancelling():
                        raise
                    # A handler awaited something cancelled by someone else:
                    # that run ends (its leases expire), the runner goes on.
                    logger.warning("A handler was cancelled from outside; its events run again")
                except Exception:  # a bug here must not strand the queue
                    logger.exception("Handling a run crashed")
        finally:
            self._pickers -= 1
            del self._runners[me]
            if self._queued and not self._pickers and not me.cancelling():
                self._add_runner()

    async def _handle(self, run: list[Event], verified: float) -> None:
        """Handle a run of events in order; the first that does not succeed ends it.

        ``verified``: when the run's leases were last known to be ours (its
        claim); a run that waited in the queue past a third of the lease is
        checked before its first event.
        """
        buffered = False  # the previous event's result is not written yet
        try:
            while run:
                event = run[0]
                if verified < time.monotonic() - self.config.lease_seconds / 3:
                    # The previous handler ran long (or this process was
                    # paused): make sure the run is still ours before going on.
                    if not await self._still_ours(run):
                        break
                    verified = time.monotonic()
                if (
                    buffered
                    and self._commits_itself(event)
                    and not await self._predecessor_written(run)
                ):
                    break
                try:
                    result: WriteBack | None = await self.dispatcher.run(event)
                except Exception:  # a bug here must not kill the loop
                    logger.exception("Dispatcher crashed", extra={"event_id": str(event.id)})
                    result = None
                run.pop(0)
                self._busy -= 1
                if result is not None:
                    self.completer.add(result)
                buffered = result is None or result.kind is not Kind.COMMITTED
                if run and not (result is not None and result.succeeded_run):
                    await self._give_back(run)
                    break
        finally:
            self._busy -= len(run)
            run.clear()
        if self._more_available:
            self._wakeup.set()

    async def _predecessor_written(self, run: list[Event]) -> bool:
        """Wait for the previous event's result before a handler that commits its own.

        A transactional handler writes its outcome at once; if its
        predecessor's were still buffered, a crash in between would leave the
        earlier event to run after the later one.
        """
        if await self.completer.wait_written():
            return True
        await self._give_back(run)
        return False

    def _commits_itself(self, event: Event) -> bool:
        handler = self.registry.get(event.event_type)
        return handler is not None and handler.transactional

    async def _still_ours(self, run: list[Event]) -> bool:
        """Renew the rest of a run; False (and the run dropped) if any lease is gone."""
        leases = [Lease.of(event) for event in run]
        try:
            renewed = await self.store.event_renew_leases(leases, self.config.lease_seconds)
        except StoreError as exc:
            logger.warning("Could not check the leases of a run, stopping it: %s", exc)
            return False
        if len(renewed) == len(leases):
            return True
        logger.warning(
            "Lost the lease of a run of %d events (another worker took its head over)",
            len(run),
            extra={"event_id": str(run[0].id), "action": "lease_lost"},
        )
        await self._give_back([event for event in run if event.id in renewed])
        return False

    async def _give_back(self, run: list[Event]) -> None:
        """Release the rest of a run whose earlier event failed: they must wait for it."""
        try:
            await self.store.event_release_many([Lease.of(event) for event in run])
        except StoreError as exc:
            logger.warning("Could not release %d events (their leases expire): %s", len(run), exc)

    def _remember_due(self, delay_seconds: float) -> None:
        heapq.heappush(self._due, time.monotonic() + delay_seconds + 0.01)

    def _pop_due(self) -> bool:
        """Forget retry times that have passed; True if any had."""
        now = time.monotonic()
        passed = False
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
            passed = True
        return passed

    def _flushed(self, retry_delays: list[float]) -> None:
        for delay in retry_delays:
            self._remember_due(delay)
        self.signals.flushed.set()
        # Claim again after every write-back: a completion may unblock the
        # next event of an aggregate, and a claim that raced this write came
        # back short (SKIP LOCKED passed the rows it was completing) even
        # though more events wait. Without this, such a worker slept until
        # the next poll (measured: a 20,000-event drain took 10 s longer).
        self._claim_requested = True
        self._wakeup.set()

    async def _wait(self) -> None:
        timeout = self._poll_timeout()
        self._wakeup.clear()
        # Re-check after clearing: a wake-up that came before the clear is not lost.
        if self._should_claim() or self._stopping.is_set() or self._claim_error is not None:
            return
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
        # cancellation that arrives as the wake-up does (busy claimers set it
        # often), and run() would never end.
        try:
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
        except TimeoutError:
            if self.config.polling_enabled:
                self._claim_requested = True
        if self._pop_due() and self.config.polling_enabled:
            self._claim_requested = True

    def _poll_timeout(self) -> float | None:
        if not self.config.polling_enabled:
            return None
        base = self.config.poll_interval_ms / 1000
        timeout = base * (1 + random.uniform(-POLL_JITTER, POLL_JITTER))
        if self._due:
            timeout = min(timeout, max(self._due[0] - time.monotonic(), 0))
        return timeout

    async def _is_idle(self) -> bool:
        # Drain mode also waits for retries this processor scheduled itself.
        if self._claims or self._runners or self._queued or self.completer.pending or self._due:
            return False
        await self.completer.wait_idle()
        if await self._claim_once():
            return False
        if self._runners or self._queued or self.completer.pending or self._due:
            return False
        self.signals.idle.set()
        return True

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    def _note_outage(self, exc: Exception, retry_in: float) -> None:
        self.metrics.store_errors.labels("claim").inc()
        if self.database_ok:
            logger.error(
                "Database unreachable, backing off: %s",
                exc,
                extra={"action": "db_down"},
            )
        else:
            logger.warning("Database still unreachable; next try in %.1fs", retry_in)
        self.database_ok = False
        self.last_error = str(exc)

    # -- leases and shutdown ---------------------------------------------------

    async def _keep_leases(self) -> None:
        """Renew the leases of running handlers well before they expire."""
        interval = max(self.config.lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            leases = [Lease.of(event) for run in self._runs_held() for event in run]
            if not leases:
                continue
            try:
                renewed = await self.store.event_renew_leases(leases, self.config.lease_seconds)
            except StoreError as exc:
                self.metrics.store_errors.labels("renew").inc()
                logger.warning("Could not renew leases: %s", exc)
                continue
            still_running = {event.id for run in self._runs_held() for event in run}
            for lease in leases:
                # An event that finished meanwhile was completed, not taken over.
                if lease.event_id not in renewed and lease.event_id in still_running:
                    logger.warning(
                        "Lease lost while the handler runs; its result will be dropped",
                        extra={"event_id": str(lease.event_id), "action": "lease_lost"},
                    )

    def _runs_held(self) -> list[list[Event]]:
        """The runs claimed and not finished: being handled, or queued."""
        return [run for run in self._runners.values() if run] + [run for run, _ in self._queued]

    async def _drain(self, completer: "asyncio.Task[None]") -> None:
        """Finish in-flight handlers within the grace, give back the rest, flush."""
        # A claim still out brings events this drain must know about.
        await asyncio.gather(*self._claims, return_exceptions=True)
        if self._runners or self._queued:
            logger.info(
                "Waiting up to %.0fs for %d running handlers",
                self.config.shutdown_grace_seconds,
                self._busy,
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.config.shutdown_grace_seconds
            # Runners may hand the queue to new runners while we wait.
            while self._runners and (left := deadline - loop.time()) > 0:
                await asyncio.wait(list(self._runners), timeout=left)
            unfinished = [event for run in self._runs_held() for event in run]
            self._busy -= sum(len(run) for run, _ in self._queued)
            self._queued.clear()
            pending = list(self._runners)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            # A runner cancelled before its first step never ran its cleanup.
            self._runners.clear()
            self._pickers = 0
            leases = [Lease.of(event) for event in unfinished]
            if leases:
                try:
                    released = await self.store.event_release_many(leases)
                    logger.warning("Released %d unfinished events", released)
                except StoreError as exc:
                    logger.error("Could not release leases (they will expire): %s", exc)
        self.completer.close()
        try:
            await asyncio.wait_for(completer, COMPLETER_CLOSE_SECONDS)
        except TimeoutError:
            logger.error(
                "Gave up writing %d results back; their leases expire and they run again",
                self.completer.pending,
            )


def _runs(claimed: list[Event]) -> list[list[Event]]:
    """Group a claim into runs: one per aggregate (in order), one per other event."""
    runs: list[list[Event]] = []
    by_aggregate: dict[uuid.UUID, list[Event]] = {}
    for event in claimed:
        if event.aggregate_id is None:
            runs.append([event])
        elif event.aggregate_id in by_aggregate:
            by_aggregate[event.aggregate_id].append(event)
        else:
            by_aggregate[event.aggregate_id] = run = [event]
            runs.append(run)
    for run in by_aggregate.values():
        run.sort(key=lambda e: (e.created_at or datetime.min.replace(tzinfo=UTC), e.id))
    return runs
