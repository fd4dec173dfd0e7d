"""The producer: wake, claim what free slots allow, hand the runs to the runners.

Wakes on NOTIFY (or an in-process publish), on a jittered poll, on a freed
slot after a full claim, after every write-back (:attr:`Completer.flushes`),
and when a retry it wrote falls due. Never writes SQL: the store does; never
decides retries: the dispatcher does. Knows the subscriptions paused through
the admin API (read before its first claim, then kept fresh by the worker's
heartbeat chore and by API calls in this process): claimed events route
around them onto waiting deliveries.
"""

import asyncio
import contextlib
import heapq
import itertools
import logging
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eventproc.engine.completer import Completer
from eventproc.engine.fanout import Route, in_claim_order, route_claim, runs_of
from eventproc.engine.runners import Runners
from eventproc.engine.slots import Slots
from eventproc.errors import StoreConflict, StoreError, StoreUnavailable
from eventproc.event import Event
from eventproc.metrics import Metrics
from eventproc.processor_config import ProcessorConfig
from eventproc.store.protocol import ClaimPolicy, Lease, Storage

logger = logging.getLogger("eventproc.processor")

MAX_OUTAGE_BACKOFF_SECONDS = 30.0
MAX_CONFLICT_RETRIES = 3
POLL_JITTER = 0.1


@dataclass
class Signals:
    """Test hooks: awaitable moments instead of sleeps."""

    claimed: asyncio.Event = field(default_factory=asyncio.Event)
    flushed: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)


class Producer:
    def __init__(
        self,
        store: Storage,
        config: ProcessorConfig,
        slots: Slots,
        runners: Runners,
        completer: Completer,
        *,
        metrics: Metrics,
        signals: Signals,
        worker_id: str,
        route: Route,
    ) -> None:
        self.store = store
        self.config = config
        self.slots = slots
        self.runners = runners
        self.completer = completer
        self.metrics = metrics
        self.signals = signals
        self.worker_id = worker_id
        self.route = route
        # Whether a delivery claim may find something: deliveries wait for
        # retries, for an earlier delivery of their aggregate, or for a lease
        # to expire. Set when one of ours falls due or a flush wrote any, on
        # every poll, and after a delivery claim that came back full.
        self.deliveries_maybe = True
        self._tokens = itertools.count(1)
        self._claim_requested = True
        # Claims running in the background (their slots are in Slots.reserved).
        self._claims: set[asyncio.Task[None]] = set()
        self._claim_error: Exception | None = None
        self._due: list[float] = []  # heap of monotonic times our retries fall due
        self.paused: frozenset[str] = frozenset()  # subscriptions paused (admin API)
        self._paused_known = False  # read before the first claim of each run
        self.last_claim_at: datetime | None = None  # when a claim last brought work

    async def refresh_paused(self) -> None:
        """Read the paused subscriptions (a small table); a resume wakes the claims."""
        self.set_paused(await self.store.handlers_paused())

    def set_paused(self, names: Iterable[str]) -> None:
        paused = frozenset(names)
        resumed = bool(self.paused - paused)
        self.paused, self._paused_known = paused, True
        if resumed:  # their deliveries are claimable now
            self.deliveries_maybe = True
            self.wake()

    def wake(self) -> None:
        """Something may be claimable now (NOTIFY, publish, replay, trigger)."""
        self._claim_requested = True
        self.slots.wakeup.set()

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

    async def produce(self, until_idle: bool) -> None:
        """Claim until stopped (or, with ``until_idle``, until nothing is left)."""
        outage = 0.0
        conflicts = 0  # in a row; a few are retried at once, then backed off from
        self._paused_known = False  # a pause may have come from another process
        while not self.slots.stopping.is_set():
            error, self._claim_error = self._claim_error, None
            conflicts = conflicts + 1 if isinstance(error, StoreConflict) else 0
            if isinstance(error, StoreConflict) and conflicts <= MAX_CONFLICT_RETRIES:
                # A claim carrying results can deadlock with a lease renewal
                # of the same rows: nothing is wrong with the database.
                self.metrics.store_errors.labels("claim").inc()
                logger.info("Claim lost a lock race, claiming again: %s", error)
                self._claim_requested = True
                continue
            if error is not None:
                outage = await self._back_off(error, outage)
                self._claim_requested = True
                continue
            if self.slots.database_ok:
                outage = 0.0
            if self._should_claim():
                self._claim_in_background()
                continue
            if until_idle and await self._is_idle():
                return
            await self._wait()

    async def _back_off(self, error: Exception, outage: float) -> float:
        """Report a failed claim and wait before the next; the outage back-off so far."""
        if isinstance(error, StoreUnavailable):
            outage = min(max(outage * 2, 0.5), MAX_OUTAGE_BACKOFF_SECONDS)
            self._note_outage(error, outage)
            await self._sleep(outage)
            return outage
        self.metrics.store_errors.labels("claim").inc()
        logger.error(
            "Claim failed: %s",
            error,
            exc_info=None if isinstance(error, StoreError) else error,
            extra={"action": "claim_failed"},
        )
        await self._sleep(1.0)
        return outage

    def _should_claim(self) -> bool:
        return self._may_claim(others=len(self._claims))

    def _may_claim(self, others: int) -> bool:
        """Whether one more claim should go out beside ``others`` still out."""
        self.take_flushes()
        # ENABLE_POLLING=false (the seed's meaning): only the manual triggers claim.
        free = self.slots.free()
        if not self.config.polling_enabled or free <= 0:
            return False
        # With CLAIMS_AT_ONCE > 1, more claims go out beside one still out:
        # only full-size ones, and only while their events would fit.
        if others and (others >= self.config.claims_at_once or free < self.config.batch_size):
            return False
        return self._claim_requested or self.slots.more_available

    def _claim_in_background(self) -> None:
        self._claim_requested = False
        # Reserved now, not when the task first runs: the loop decides its
        # next step from the free slots before that.
        limit = self.slots.reserve()
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
                    self.slots.reserved -= limit
                if (
                    self.slots.stopping.is_set()
                    or not self.slots.producing
                    or not self._may_claim(len(self._claims) - 1)
                ):
                    return
                self._claim_requested = False
                limit = self.slots.reserve()  # _may_claim saw a free slot
        except Exception as exc:  # the loop reports it and backs off
            self._claim_error = self._claim_error or exc
        finally:
            # Leave the set before waking the loop, so that it sees this
            # claimer gone (a done callback would run after the loop's turn).
            self._claims.discard(asyncio.current_task())
            self.slots.wakeup.set()

    async def claim_once(self) -> int:
        """One claim, awaited (manual trigger, drain mode)."""
        self._claim_requested = False
        limit = self.slots.reserve()
        if not limit:
            return 0
        try:
            return await self._claim(limit)
        finally:
            self.slots.reserved -= limit

    async def _claim(self, limit: int) -> int:
        if limit <= 0:  # never ask a store for LIMIT 0 or less (SQLite: no limit)
            return 0
        if not self._paused_known:  # fails like a claim: backed off from, retried
            await self.refresh_paused()
        token = self.next_token()
        found: list[Event] = []
        if self.deliveries_maybe:
            found = await self.store.delivery_claim_many(token, self.policy(limit))
            self.deliveries_maybe = len(found) == limit
            if len(found) == limit:
                self.slots.more_available = True
                self._start(found)
                return limit
        taken = len(found)
        # The successes waiting to be written ride along: one statement for both.
        carried = self.completer.take()
        try:
            claimed = await self.store.event_claim_many(
                token,
                self.policy(limit - taken),
                completing=carried.completions if carried is not None else (),
            )
        except BaseException:
            self.slots.more_available = False
            if carried is not None:
                self.completer.give_back(carried)
            self._start(found)
            raise
        if carried is not None:
            await self.completer.carried(carried)
        if not self.slots.database_ok:
            logger.info("Database reachable again; resuming", extra={"action": "resumed"})
        self.slots.database_ok = True
        self.slots.more_available = len(claimed) == limit - taken
        # One start for both: an event on its row that follows deliveries this
        # claim holds (of its handler and aggregate) joins their run.
        try:
            if claimed:
                self.metrics.claimed.inc(len(claimed))
                found += await self._routed(claimed)
        finally:
            self._start(found)
        return taken + len(claimed)

    async def _routed(self, claimed: list[Event]) -> list[Event]:
        """Route the claim; move the events that fan out (or must wait) onto deliveries."""
        routed = route_claim(claimed, self.route, self.paused)
        if not routed.plans:
            return routed.on_rows
        try:
            opened = await self.store.delivery_open(routed.plans, self.config.lease_seconds)
        except BaseException:
            moving = {plan.lease for plan in routed.plans}
            with contextlib.suppress(Exception):
                await self.store.event_release_many([*moving, *map(Lease.of, routed.on_rows)])
            raise
        if any(not plan.run_now for plan in routed.plans):
            # Nothing of those runs now, so nothing will wake this loop when
            # it is done: look again at once (a drain must see it is idle).
            self.deliveries_maybe = self._claim_requested = True
        return in_claim_order([*routed.on_rows, *opened])

    async def start_routed(self, claimed: list[Event]) -> None:
        """Route events claimed elsewhere (a manual trigger) and start them."""
        if not self._paused_known:  # claimed already: go on with what is known
            with contextlib.suppress(StoreError):
                await self.refresh_paused()
        self._start(await self._routed(claimed))

    def _start(self, work: list[Event]) -> None:
        if not work:
            return
        self.last_claim_at = datetime.now(UTC)
        for run in runs_of(work):
            self.runners.start(run)
        self.signals.claimed.set()

    async def settle_claims(self) -> None:
        """Wait for the claims still out: they bring events a drain must know about."""
        await asyncio.gather(*self._claims, return_exceptions=True)

    def take_flushes(self) -> None:
        """Take in the write-backs the completer published since the last call."""
        flushes = self.completer.flushes
        if flushes.empty():
            return
        while not flushes.empty():
            flushed = flushes.get_nowait()
            self.deliveries_maybe = self.deliveries_maybe or flushed.deliveries
            for delay in flushed.retry_delays:
                heapq.heappush(self._due, flushed.at + delay + 0.01)
        self.signals.flushed.set()
        # Claim again after every write-back: a completion may unblock the
        # next event of an aggregate, and a claim that raced this write came
        # back short (SKIP LOCKED passed the rows it was completing) even
        # though more events wait. Without this, such a worker slept until
        # the next poll (measured: a 20,000-event drain took 10 s longer).
        self._claim_requested = True

    def _pop_due(self) -> bool:
        """Forget retry times that have passed; True if any had."""
        now = time.monotonic()
        passed = False
        while self._due and self._due[0] <= now:
            heapq.heappop(self._due)
            passed = True
        return passed

    async def _wait(self) -> None:
        wakeup = self.slots.wakeup
        wakeup.clear()
        # Re-check after clearing: a wake-up that came before the clear is not lost.
        if self._should_claim() or self.slots.stopping.is_set() or self._claim_error is not None:
            return
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
        # cancellation that arrives as the wake-up does (busy claimers set it
        # often), and run() would never end.
        try:
            async with asyncio.timeout(self._poll_timeout()):
                await wakeup.wait()
        except TimeoutError:
            if self.config.polling_enabled:
                self._claim_requested = self.deliveries_maybe = True
        if self._pop_due() and self.config.polling_enabled:
            self._claim_requested = self.deliveries_maybe = True

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
        self.take_flushes()
        if self._claims or self.runners.active or self.completer.pending or self._due:
            return False
        await self.completer.wait_idle()
        self.deliveries_maybe = True  # idle means no delivery is left either
        if await self.claim_once():
            return False
        self.take_flushes()
        if self.runners.active or self.completer.pending or self._due:
            return False
        self.signals.idle.set()
        return True

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.slots.stopping.wait()

    def _note_outage(self, exc: Exception, retry_in: float) -> None:
        self.metrics.store_errors.labels("claim").inc()
        if self.slots.database_ok:
            logger.error(
                "Database unreachable, backing off: %s",
                exc,
                extra={"action": "db_down"},
            )
        else:
            logger.warning("Database still unreachable; next try in %.1fs", retry_in)
        self.slots.database_ok = False
        self.slots.last_error = str(exc)
