"""Runners: handle claimed runs, each in order, without a task per quick handler.

Claimed runs (the events of one aggregate, handled in order; usually a
single event) wait in a queue for a runner task. A runner handles runs one
after another while their handlers finish without waiting; when one waits
(I/O), another runner takes the queue meanwhile. So a batch of quick
handlers costs no task per event, and CONCURRENCY still bounds what runs at
once (runs queued or running <= slots).

Each run is stepped by hand (:class:`Stepped`) up to its first wait, inside
the runner's task. Creating a task (or arming a timer) for work that
finishes without ever waiting costs more than the work, for quick event
handlers. A coroutine stepped here runs at once; only if it waits does the
caller go on to await the rest, which then behaves exactly as awaiting the
coroutine would have. The dispatcher steps handler calls the same way.
"""

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

from eventproc.engine.completer import Completer
from eventproc.engine.leases import Leases
from eventproc.engine.slots import Slots
from eventproc.event import Event
from eventproc.processor_config import ProcessorConfig
from eventproc.registry import Registry
from eventproc.store.protocol import Kind, WriteBack

if TYPE_CHECKING:
    from eventproc.engine.dispatch import Dispatcher

logger = logging.getLogger("eventproc.processor")


class _SameContext:
    """Stands in for a contextvars.Context: runs the call in the current one."""

    @staticmethod
    def run(function: Callable[..., Any], *args: Any) -> Any:
        return function(*args)


_SAME_CONTEXT: Any = _SameContext()


class Stepped:
    """A coroutine stepped by hand inside the current task (in ``context`` if given).

    ``first_step`` runs it up to its first wait; awaiting the object then goes
    on where it stopped, as ``await`` would have. The current task stays the
    one that steps it, so ``asyncio.timeout`` and cancellation inside reach
    it as usual.
    """

    __slots__ = ("_context", "_coro", "_waiting_on")

    def __init__(
        self, coro: Coroutine[Any, Any, None], context: contextvars.Context | None = None
    ) -> None:
        self._coro = coro
        self._context = context if context is not None else _SAME_CONTEXT
        self._waiting_on: Any = None

    def first_step(self) -> bool:
        """True if the coroutine finished without waiting."""
        try:
            self._waiting_on = self._context.run(self._coro.send, None)
        except StopIteration:
            return True
        return False

    def __await__(self) -> Generator[Any, Any, None]:
        waiting_on = self._waiting_on
        while True:
            try:
                sent = yield waiting_on
            except GeneratorExit:
                self._coro.close()
                raise
            except BaseException as exc:
                try:
                    waiting_on = self._context.run(self._coro.throw, exc)
                except StopIteration:
                    return
            else:
                try:
                    waiting_on = self._context.run(self._coro.send, sent)
                except StopIteration:
                    return


class Runners:
    """The run queue and the runner tasks that handle it (see the module docstring)."""

    def __init__(
        self,
        config: ProcessorConfig,
        slots: Slots,
        registry: Registry,
        dispatcher: "Dispatcher",
        completer: Completer,
        leases: Leases,
    ) -> None:
        self.config = config
        self.slots = slots
        self.registry = registry
        self.dispatcher = dispatcher
        self.completer = completer
        self.leases = leases
        self._queued: deque[tuple[list[Event], float]] = deque()  # (run, claimed at)
        self._tasks: dict[asyncio.Task[None], list[Event]] = {}  # -> the run it handles
        # Runners start from this context, not from whoever made them (an
        # HTTP request's context must not leak into unrelated runs).
        self._context = contextvars.copy_context()

    @property
    def active(self) -> bool:
        """Whether a run is queued or being handled."""
        return bool(self._tasks or self._queued)

    def held(self) -> list[list[Event]]:
        """The runs claimed and not finished: being handled, or queued."""
        return [run for run in self._tasks.values() if run] + [run for run, _ in self._queued]

    def start(self, run: list[Event]) -> None:
        self._queued.append((run, time.monotonic()))
        self.slots.busy += len(run)
        if not self.slots.pickers:
            self._add_runner()

    def _add_runner(self) -> None:
        if len(self._tasks) >= self.config.concurrency:
            return  # the queue waits for a runner to finish its handler
        self.slots.pickers += 1
        task = asyncio.create_task(self._run_queue(), context=self._context)
        self._tasks[task] = []
        self.slots.runners = len(self._tasks)

    async def _run_queue(self) -> None:
        """Handle queued runs until none is left."""
        me = asyncio.current_task()
        assert me is not None
        slots = self.slots
        try:
            while self._queued:
                run, claimed_at = self._queued.popleft()
                self._tasks[me] = run
                # Each run in a context of its own, as a task of its own would have.
                handling = Stepped(self._handle(run, claimed_at), contextvars.copy_context())
                try:
                    if handling.first_step():
                        continue  # finished without waiting
                    slots.pickers -= 1
                    if self._queued and not slots.pickers:
                        self._add_runner()
                    try:
                        await handling
                    finally:
                        slots.pickers += 1
                except asyncio.CancelledError:
                    if me.cancelling():
                        raise
                    # A handler awaited something cancelled by someone else:
                    # that run ends (its leases expire), the runner goes on.
                    logger.warning("A handler was cancelled from outside; its events run again")
                except Exception:  # a bug here must not strand the queue
                    logger.exception("Handling a run crashed")
        finally:
            slots.pickers -= 1
            del self._tasks[me]
            slots.runners = len(self._tasks)
            if self._queued and not slots.pickers and not me.cancelling():
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
                    if not await self.leases.still_ours(run):
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
                self.slots.busy -= 1
                if result is not None:
                    self.completer.add(result)
                buffered = result is None or result.kind is not Kind.COMMITTED
                if run and not (result is not None and result.succeeded_run):
                    await self.leases.give_back(run)
                    break
        finally:
            self.slots.busy -= len(run)
            run.clear()
        if self.slots.more_available:
            self.slots.wakeup.set()

    async def _predecessor_written(self, run: list[Event]) -> bool:
        """Wait for the previous event's result before a handler that commits its own.

        A transactional handler writes its outcome at once; if its
        predecessor's were still buffered, a crash in between would leave the
        earlier event to run after the later one.
        """
        if await self.completer.wait_written():
            return True
        await self.leases.give_back(run)
        return False

    def _commits_itself(self, event: Event) -> bool:
        handler = self.registry.subscription(event.handler) if event.handler else None
        return handler is not None and handler.transactional

    async def drain(self, grace_seconds: float) -> list[Event]:
        """Let running handlers finish within the grace, cancel the rest; what did not finish."""
        if not self.active:
            return []
        logger.info("Waiting up to %.0fs for %d running handlers", grace_seconds, self.slots.busy)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        # Runners may hand the queue to new runners while we wait.
        while self._tasks and (left := deadline - loop.time()) > 0:
            await asyncio.wait(list(self._tasks), timeout=left)
        unfinished = [event for run in self.held() for event in run]
        self.slots.busy -= sum(len(run) for run, _ in self._queued)
        self._queued.clear()
        pending = list(self._tasks)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        # A runner cancelled before its first step never ran its cleanup.
        self._tasks.clear()
        self.slots.runners = self.slots.pickers = 0
        return unfinished
