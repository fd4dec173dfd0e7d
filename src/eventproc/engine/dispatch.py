"""Run one claimed event through its handler and decide what happens next.

Returns the write-back for the completer; never writes it itself, except for
transactional handlers, whose completion commits with their own writes.
"""

import asyncio
import logging
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from types import CoroutineType

from pydantic import ValidationError

from eventproc import tracing
from eventproc.engine import handling_log
from eventproc.engine.call_sinks import SuccessSink, SuccessSinks
from eventproc.engine.handling_log import FailedAttempt, HandlingLog
from eventproc.engine.runners import Stepped
from eventproc.errors import LeaseLost, PermanentError, RetryLater, StoreUnavailable
from eventproc.event import Event, NewEvent
from eventproc.fingerprint import fingerprint
from eventproc.handler import Connection, HandlerContext
from eventproc.logs import EventLine
from eventproc.metrics import OTHER_TYPE, Metrics, error_type_of, type_label
from eventproc.registry import Handler, Registry
from eventproc.retry import RetryPolicy
from eventproc.store.protocol import Kind, Lease, Storage, WriteBack

logger = logging.getLogger("eventproc.dispatch")
log_processed = EventLine(logger, "Event processed", action="succeeded")

# An event that met eventproc's own database trouble runs again after this
# long, without spending an attempt of its handler's budget.
STORE_TROUBLE_DELAY_SECONDS = 1.0


class Dispatcher:
    def __init__(
        self,
        registry: Registry,
        store: Storage,
        *,
        retry: RetryPolicy,
        timeout_seconds: float,
        worker_id: str,
        metrics: Metrics,
        blocks_aggregates: bool = False,
        ordered: bool = False,
        log: HandlingLog | None = None,
    ) -> None:
        self.registry = registry
        self.log = log if log is not None else HandlingLog()  # for the admin surface
        # ORDERING=aggregate with AGGREGATE_FAILURE=block: a dead letter holds
        # back its aggregate's later events, which deserves a warning.
        self.blocks_aggregates = blocks_aggregates
        self.ordered = ordered  # ORDERING=aggregate: a transaction completes only in order
        self.store = store
        self.retry = retry
        self.timeout_seconds = timeout_seconds
        self.worker_id = worker_id
        self.metrics = metrics
        self._sinks = SuccessSinks(metrics, self.log, registry)

    async def run(self, event: Event) -> WriteBack | None:
        """Handle ``event`` (routed: ``event.handler``); ``None``: the lease was lost."""
        lease = Lease.of(event)
        attempt = event.attempts
        if attempt > self.retry.max_retries:
            return self._bury(
                event,
                lease,
                f"claimed {attempt} times without finishing: its workers died or "
                "lost their lease while handling it",
                handler=None,
            )
        known = self._sinks.find(event.handler, event.event_type) if event.handler else None
        if known is None:
            return self._unroutable(event, lease)
        handler, sink = known
        try:
            payload = (
                handler.payload_model.model_validate(event.payload)
                if handler.payload_model is not None
                else event.payload
            )
        except ValidationError as exc:
            return self._bury(
                event,
                lease,
                f"Invalid payload for {event.event_type}: {_fields_of(exc)}",
                handler=handler,
            )
        return await self._call(event, lease, handler, payload, sink)

    def _unroutable(self, event: Event, lease: Lease) -> WriteBack:
        """No subscription takes the event (skipped), or a delivery's is gone (dead letter)."""
        if event.delivery:
            # Its subscription was removed (or renamed) since the delivery
            # was made: an operator replays it elsewhere or discards it.
            return self._bury(
                event, lease, f"no subscription named {event.handler!r} is registered", None
            )
        logger.warning(
            "No handler registered for event type: %s (no subscription takes it)",
            event.event_type,
            extra=_fields(event, action="skipped"),
        )
        self.metrics.count(OTHER_TYPE, "skipped")
        return WriteBack.skipped(lease)

    async def _call(
        self, event: Event, lease: Lease, handler: Handler, payload: object, sink: SuccessSink
    ) -> WriteBack | None:
        tracer = tracing.tracer()
        span = (
            tracing.start(tracer, event, handler.name, sink.destination, self.worker_id)
            if tracer is not None
            else None
        )
        started_at = time.time()
        started = time.perf_counter()
        timeout = handler.timeout_seconds or self.timeout_seconds
        try:
            result = await self._invoke(event, lease, handler, payload, started, timeout)
        except asyncio.CancelledError:
            if span is not None:
                span.cancelled()
            raise
        except Exception as exc:  # a handler may raise anything
            failure = Failure(exc, time.perf_counter() - started, started_at, timeout)
            return self._after_failure(event, lease, handler, failure, sink.destination, span)
        duration = time.perf_counter() - started
        if span is not None:
            span.succeeded()
        sink.record(event, duration, started_at)
        log_processed(
            event.id, event.event_type, event.attempts, duration * 1000, started_at + duration
        )
        return result

    def _after_failure(
        self,
        event: Event,
        lease: Lease,
        handler: Handler,
        failure: "Failure",
        destination: tuple[str, bool],
        span: tracing.ProcessSpan | None,
    ) -> WriteBack | None:
        """Decide, count and log a call that raised."""
        exc = failure.exc
        result = self._after_error(event, lease, handler, exc, failure.timeout)
        # The same label as the attempt's count in eventproc_events.
        outcome = "store_unavailable" if isinstance(exc, StoreUnavailable) else _outcome_of(result)
        error_type = error_type_of(exc)
        if span is not None:
            span.failed(exc, outcome, error_type)
        if result is not None:
            self._log_failure(event, handler, result, outcome, failure.seconds, exc)
        self.metrics.handled(
            event,
            handler.name,
            destination,
            outcome,
            error_type,
            failure.seconds,
            failure.started_at,
        )
        return result

    def _log_failure(
        self,
        event: Event,
        handler: Handler,
        result: WriteBack,
        outcome: str,
        seconds: float,
        exc: BaseException,
    ) -> None:
        """The attempt, for the admin API's attempt log (written after the write-back)."""
        attempt = FailedAttempt(
            event_id=event.id,
            handler=handler.name,
            attempt=event.attempts,
            worker=event.locked_by,
            finished_at=handling_log.now(),
            duration_ms=round(seconds * 1000, 3),
            outcome=outcome,
            error=result.error,
            detail=result.detail or "".join(traceback.format_exception(exc)),
        )
        counted = result.kind in (Kind.RETRY, Kind.DEAD_LETTERED)
        self.log.failed(handler.name, seconds, attempt, counted=counted)

    async def _invoke(
        self,
        event: Event,
        lease: Lease,
        handler: Handler,
        payload: object,
        started: float,
        limit_seconds: float,
    ) -> WriteBack:
        if handler.transactional:
            # The handler's time starts once it has its connection: waiting
            # for one (DATABASE_POOL_SIZE reached) is backpressure, bounded by
            # the pool's timeout (then StoreUnavailable: rescheduled, uncounted).
            async with self.store.event_transaction(
                lease, in_order=self.ordered, handler=handler.name
            ) as conn:
                async with asyncio.timeout(limit_seconds):
                    await handler.func(event, self._context(event, payload, conn))
            return WriteBack.committed(lease)
        call = handler.func(event, self._context(event, payload, None))
        if type(call) is not CoroutineType:
            async with asyncio.timeout(limit_seconds):
                await call
        else:
            # A handler that returns without waiting needs no timer:
            # asyncio can only interrupt it where it waits.
            stepped = Stepped(call)
            if not stepped.first_step():
                async with asyncio.timeout(limit_seconds - (time.perf_counter() - started)):
                    await stepped
        return WriteBack.succeeded(lease, handler.name)

    def _after_error(
        self, event: Event, lease: Lease, handler: Handler, exc: Exception, timeout: float
    ) -> WriteBack | None:
        """What a handler's exception means for its event."""
        if isinstance(exc, LeaseLost):
            logger.warning(
                "Lease lost; another worker owns the event now, result dropped",
                extra=_fields(event, action="lease_lost"),
            )
            return None
        if isinstance(exc, PermanentError):
            return self._bury(event, lease, str(exc) or type(exc).__name__, handler, exc)
        if isinstance(exc, RetryLater):
            logger.info(
                "Event rescheduled in %.1fs: %s",
                exc.delay_seconds,
                exc.reason,
                extra=_fields(event, action="rescheduled"),
            )
            self.metrics.count(_type_label(event, handler), "rescheduled")
            return WriteBack.rescheduled(
                lease, exc.delay_seconds, exc.reason, event.attempts, handler.name
            )
        if isinstance(exc, StoreUnavailable):
            # eventproc's own database (its connection, the event's
            # transaction, ctx.publish) failed: not the handler's fault.
            logger.warning(
                "Database unavailable while handling; running it again in %.0fs, "
                "attempt not counted: %s",
                STORE_TROUBLE_DELAY_SECONDS,
                exc,
                extra=_fields(event, action="store_unavailable"),
            )
            self.metrics.count(_type_label(event, handler), "store_unavailable")
            return WriteBack.rescheduled(
                lease, STORE_TROUBLE_DELAY_SECONDS, str(exc), event.attempts, handler.name
            )
        if isinstance(exc, TimeoutError):
            return self._fail(event, lease, handler, f"handler timed out after {timeout:g}s", exc)
        message = str(exc) or type(exc).__name__
        return self._fail(event, lease, handler, f"{type(exc).__name__}: {message}", exc)

    def _context(
        self, event: Event, payload: object, connection: Connection | None
    ) -> HandlerContext:
        return HandlerContext(
            event,
            payload,
            attempt=event.attempts,
            worker_id=self.worker_id,
            publisher=self._publish,
            connection=connection,
        )

    async def _publish(self, events: Sequence[NewEvent], connection: Connection | None) -> None:
        await self.store.event_insert_many(events, connection)

    def _fail(
        self,
        event: Event,
        lease: Lease,
        handler: Handler,
        message: str,
        exc: BaseException,
    ) -> WriteBack:
        if self.retry.exhausted(event.attempts):
            # The count lives in the dead letter's retry_count, not in the
            # message, so that equal failures read (and group) alike.
            return self._bury(event, lease, message, handler, exc)
        delay = self.retry.delay_ms(event.attempts) / 1000
        logger.warning(
            "Handler failed, retrying in %.3fs: %s",
            delay,
            message,
            extra=_fields(event, action="retry"),
        )
        self.metrics.count(_type_label(event, handler), "retried")
        return WriteBack.retry(lease, delay, message, event.attempts, handler.name)

    def _bury(
        self,
        event: Event,
        lease: Lease,
        message: str,
        handler: Handler | None,
        exc: BaseException | None = None,
    ) -> WriteBack:
        logger.error(
            "Event dead-lettered after %d attempt(s): %s",
            event.attempts,
            message,
            extra=_fields(event, action="dead_lettered"),
        )
        if handler is None and event.handler:
            handler = self.registry.subscription(event.handler)
        self.metrics.count(_type_label(event, handler), "dead_lettered")
        if self.blocks_aggregates and event.aggregate_id is not None:
            logger.warning(
                "Aggregate %s is blocked: its later events wait until this dead-lettered "
                "event is replayed or its dead letter discarded (AGGREGATE_FAILURE=block)",
                event.aggregate_id,
                extra=_fields(event, action="aggregate_blocked"),
            )
        detail = "".join(traceback.format_exception(exc)) if exc is not None else None
        return WriteBack.dead_lettered(
            lease,
            message,
            event.attempts,
            detail=detail,
            handler=handler.name if handler else event.handler,
            fingerprint=fingerprint(message),
        )


@dataclass(frozen=True, slots=True)
class Failure:
    """A handler call that raised: what, after how long, begun when, under which limit."""

    exc: Exception
    seconds: float
    started_at: float
    timeout: float


def _outcome_of(result: WriteBack | None) -> str:
    """The metric label of a handler call that raised."""
    if result is None:
        return "lease_lost"
    return _LABELS[result.kind]


_LABELS = {
    Kind.DEAD_LETTERED: "dead_lettered",
    Kind.RETRY: "retried",
    Kind.RESCHEDULED: "rescheduled",
    Kind.SUCCEEDED: "succeeded",
    Kind.SKIPPED: "succeeded",
    Kind.COMMITTED: "succeeded",
}


def _type_label(event: Event, handler: Handler | None) -> str:
    """The metrics' bounded label for the event's type (metrics.type_label)."""
    return type_label(handler.types, event.event_type)[0] if handler is not None else OTHER_TYPE


def _fields(event: Event, **extra: object) -> dict[str, object]:
    return {
        "event_id": str(event.id),
        "event_type": event.event_type,
        "attempt": event.attempts,
        **extra,
    }


def _fields_of(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "payload"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)
