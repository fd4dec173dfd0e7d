"""The processor: wires the engine's parts and runs them until stopped.

The parts, each with one owner: the producer claims (producer.py), runners
handle the runs (runners.py), leases are renewed or given back (leases.py),
the dispatcher runs one event through its handler (dispatch.py), and the
completer writes results back (completer.py). They share claiming's slot
accounting (slots.py) instead of calling into one another. Side tasks (the
completer, lease renewal, the listener) run under supervision: a crash
stops the processor loudly.
"""

import asyncio
import logging
import os
import socket
import uuid

from eventproc.engine.completer import Completer
from eventproc.engine.dispatch import Dispatcher
from eventproc.engine.handling_log import HandlingLog
from eventproc.engine.leases import Leases
from eventproc.engine.producer import Producer, Signals
from eventproc.engine.runners import Runners
from eventproc.engine.slots import Slots
from eventproc.event import Event
from eventproc.metrics import Metrics
from eventproc.processor_config import ProcessorConfig
from eventproc.registry import Registry
from eventproc.stats import Stats
from eventproc.store.protocol import ClaimPolicy, Storage
from eventproc.supervision import SideTasks

logger = logging.getLogger("eventproc.processor")

COMPLETER_CLOSE_SECONDS = 15.0


def default_worker_id() -> str:
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Processor:
    def __init__(
        self,
        store: Storage,
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
        self.slots = slots = Slots(self.config)
        self.handling = HandlingLog()  # failed attempts and per-subscription tallies (admin API)
        self.dispatcher = self._dispatcher()
        self.completer = Completer(
            store,
            self.stats,
            self.metrics,
            slots=slots,
            in_order=self.config.ordered,
            log=self.handling,
        )
        self.leases = Leases(store, self.config.lease_seconds, self.metrics)
        self.runners = Runners(
            self.config, slots, registry, self.dispatcher, self.completer, self.leases
        )
        self.producer = Producer(
            store,
            self.config,
            slots,
            self.runners,
            self.completer,
            metrics=self.metrics,
            signals=self.signals,
            worker_id=self.worker_id,
            route=registry.route_names,
        )
        # Read at scrape time: setting a gauge per event takes a lock each time.
        self.metrics.in_flight.set_function(lambda: slots.busy)
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
            ordered=self.config.ordered,
            log=self.handling,
        )

    # -- public control ------------------------------------------------------

    def wake(self) -> None:
        """Something may be claimable now (NOTIFY, publish, replay, trigger)."""
        self.producer.wake()

    def stop(self) -> None:
        """Stop claiming; ``run`` then drains in-flight handlers within the grace."""
        self.slots.stopping.set()
        self.slots.wakeup.set()

    @property
    def in_flight(self) -> int:
        return self.slots.busy

    @property
    def running(self) -> bool:
        return self._running

    @property
    def database_ok(self) -> bool:
        return self.slots.database_ok

    @property
    def last_error(self) -> str | None:
        return self.slots.last_error

    @last_error.setter
    def last_error(self, error: str | None) -> None:
        self.slots.last_error = error

    @property
    def crash(self) -> Exception | None:
        """Why the processor stopped by itself (a side task crashed), if it did."""
        return self._side.crash if self._side is not None else None

    def policy(self, limit: int) -> ClaimPolicy:
        return self.producer.policy(limit)

    def next_token(self) -> str:
        return self.producer.next_token()

    async def process_event(self, event_id: uuid.UUID) -> Event:
        """Claim one event now (manual trigger) and handle it in the background.

        Raises NotFound or Conflict (already processed, leased, or waiting
        behind an earlier event of its aggregate).
        """
        event = await self.store.event_claim_one(event_id, self.next_token(), self.policy(1))
        await self.producer.start_routed([event])
        return event

    async def process_batch(self) -> int:
        """Claim one batch now (manual trigger); handlers run in the background."""
        return await self.producer.claim_once()

    async def refresh_paused(self) -> None:
        """Read the paused subscriptions now (a pause or resume through this process's API;
        the heartbeat chore does it every few seconds): a resume wakes the claims."""
        await self.producer.refresh_paused()

    # -- the loop ------------------------------------------------------------

    async def run(self, *, until_idle: bool = False) -> None:
        """Process until :meth:`stop` (or, with ``until_idle``, until nothing is left)."""
        self._running = True
        self.store.add_local_waker(self.wake)
        side = SideTasks(on_crash=self._on_side_crash)
        self._side = side
        completer = side.start(self.completer.run(), "eventproc-completer")
        side.start(self.leases.keep(self.runners), "eventproc-leases")
        self._start_wake_ups(side)
        self.slots.producing = True
        try:
            await self.producer.produce(until_idle)
        finally:
            self.slots.producing = False  # also when cancelled: claimers stop too
            try:
                await self._drain(completer)
            except Exception:
                if side.crash is None:
                    raise  # a crashed completer is reported below, as a crash
            finally:
                await side.cancel(completer)
                # What the drain wrote back: retries it will see due next run.
                self.producer.take_flushes()
                self._running = False
        side.raise_crash()

    def _start_wake_ups(self, side: SideTasks) -> None:
        """Start the listener, or say why there is none (the listener reports its own state)."""
        if not self.config.polling_enabled:
            self.store.wake_ups.set("off", "ENABLE_POLLING=false: only manual triggers claim")
        elif not self.config.listen:
            self.store.wake_ups.set("polling", "LISTEN=false")
        else:
            side.start(self.store.listen(self.wake), "eventproc-listen")

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

    async def _drain(self, completer: "asyncio.Task[None]") -> None:
        """Finish in-flight handlers within the grace, give back the rest, flush."""
        # A claim still out brings events this drain must know about.
        await self.producer.settle_claims()
        unfinished = await self.runners.drain(self.config.shutdown_grace_seconds)
        await self.leases.release_unfinished(unfinished)
        self.completer.close()
        try:
            await asyncio.wait_for(completer, COMPLETER_CLOSE_SECONDS)
        except TimeoutError:
            logger.error(
                "Gave up writing %d results back; their leases expire and they run again",
                self.completer.pending,
            )
