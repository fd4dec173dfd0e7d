"""Bulk operations: planned as a dry run, executed in batches at a rate by any worker.

Every worker runs :func:`carry_operations` beside its processor: it leases a
running operation (``locked_by`` / ``locked_until``), applies one batch per
interval at the operation's ``rate_per_second``, each batch renewing the
lease, and stops when the operation is done, cancelled or leased by
another worker. A worker that dies leaves its lease to run out; another one
then carries the operation on from its ``cursor``. A backfill's items are
found here, by routing (the store does not route): the events of the
subscription's types in its window that it takes and has no delivery of.
"""

import asyncio
import contextlib
import logging
import math
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from eventproc import backfill
from eventproc.errors import StoreUnavailable
from eventproc.routing import envelope_of
from eventproc.store.admin import Audit
from eventproc.store.admin.operations import Operation, Plan

if TYPE_CHECKING:
    from eventproc.runtime import Runtime

logger = logging.getLogger("eventproc.operations")

LEASE_SECONDS = 30.0  # a dead worker's operation is carried on by another after this
IDLE_SECONDS = 1.0  # how often an idle worker looks for running operations
MAX_BATCH = 500
MAX_CARRIED = 4  # operations one worker carries at once
BACKOFF_MAX_SECONDS = 15.0
RELEASE_TIMEOUT_SECONDS = 2.0


def pace(rate_per_second: float) -> tuple[int, float]:
    """(batch size, seconds between batches): about one batch a second, at the rate."""
    size = min(MAX_BATCH, max(1, math.ceil(rate_per_second)))
    return size, size / rate_per_second


async def plan(
    runtime: "Runtime",
    action: str,
    selector: dict[str, Any],
    *,
    max_items: int,
    rate_per_second: float,
    who: Audit,
) -> Plan:
    """A dry run: the matches counted (up to max_items + 1) and sampled, and a plan token."""
    candidates = None
    if action == "backfill":
        candidates = await backfill_candidates(runtime, selector, max_items + 1, None)
    return await runtime.store.admin.operations.plan(
        action,
        selector,
        max_items=max_items,
        rate_per_second=rate_per_second,
        who=who,
        candidates=candidates,
    )


async def execute(runtime: "Runtime", op_id: uuid.UUID, token: str, who: Audit) -> Operation:
    """Start a planned operation (its items frozen now); the same token again: unchanged."""
    rows = runtime.store.admin.operations
    items = None
    found = await rows.get(op_id)
    if found is not None and found.action == "backfill" and found.status == "planned":
        picked = await backfill_candidates(
            runtime, found.selector, found.max_items, found.created_at
        )
        items = [event_id for event_id, _ in picked]
    return await rows.execute(op_id, token, who, items)


async def backfill_candidates(
    runtime: "Runtime", selector: dict[str, Any], limit: int, before: datetime | None
) -> list[tuple[uuid.UUID, str]]:
    """(event id, type) of the events a backfill would give a delivery, up to ``limit``.

    Walks eventproc.backfill's pages: the subscription's types, created in
    [since, until), ``before`` (the plan's time) bounding ``until``.
    """
    handler = backfill.subscription(runtime.registry, selector["handler"])
    since = datetime.fromisoformat(selector["since"])
    until = None if selector.get("until") is None else datetime.fromisoformat(selector["until"])
    if before is not None:
        until = before if until is None else min(until, before)
    found: list[tuple[uuid.UUID, str]] = []
    for event_type in await backfill._types(runtime.store, handler):
        after: tuple[datetime, uuid.UUID] | None = None
        while len(found) < limit:
            rows = await backfill._page(
                runtime.store.driver,
                event_type,
                handler.name,
                since=since,
                until=until,
                after=after,
                limit=backfill.DEFAULT_BATCH_SIZE,
            )
            for row in rows:
                taken = handler.route.matches(envelope_of(row.event))
                if taken and not row.delivered and not row.unrouted and len(found) < limit:
                    found.append((row.event.id, row.event.event_type))
            if len(rows) < backfill.DEFAULT_BATCH_SIZE:
                break
            last = rows[-1].event
            assert last.created_at is not None  # the window's bound excludes NULL
            after = (last.created_at, last.id)
    return found


async def carry_operations(runtime: "Runtime") -> None:
    """Lease running operations and carry each in a task of its own, until cancelled.

    Never ends by an error: a database away is waited for (backing off), an
    unexpected error is logged and the loop goes on.
    """
    carried: dict[uuid.UUID, asyncio.Task[None]] = {}
    delay = IDLE_SECONDS
    try:
        while True:
            for op_id in [op_id for op_id, task in carried.items() if task.done()]:
                del carried[op_id]
            leased = None
            if len(carried) < MAX_CARRIED:
                try:
                    leased = await runtime.store.admin.operations.lease(
                        runtime.worker_id, LEASE_SECONDS
                    )
                    delay = IDLE_SECONDS
                except Exception as exc:
                    _log_outage(exc, delay)
                    delay = min(delay * 2, BACKOFF_MAX_SECONDS)
            if leased is not None:
                logger.info(
                    "Carrying operation %s (%s)",
                    leased.id,
                    leased.action,
                    extra={"action": "operation_leased"},
                )
                carried[leased.id] = asyncio.create_task(
                    carry(runtime, leased), name=f"eventproc-operation-{leased.id}"
                )
                continue  # there may be more
            await asyncio.sleep(delay)
    finally:
        for task in carried.values():
            task.cancel()
        await asyncio.gather(*carried.values(), return_exceptions=True)


async def carry(runtime: "Runtime", operation: Operation) -> None:
    """Apply batches of a leased operation at its rate until it ends or is someone else's."""
    rows, worker = runtime.store.admin.operations, runtime.worker_id
    size, interval = pace(operation.rate_per_second)
    loop = asyncio.get_running_loop()
    delay = 0.5
    try:
        while True:
            started = loop.time()
            try:
                current = await rows.step(operation.id, worker, size, LEASE_SECONDS)
            except StoreUnavailable as exc:
                _log_outage(exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_SECONDS)
                continue
            except Exception as exc:
                await _fail(runtime, operation, exc)
                return
            delay = 0.5
            if current is None or current.status != "running":
                _log_end(operation, current)
                return
            await asyncio.sleep(max(interval - (loop.time() - started), 0.0))
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(RELEASE_TIMEOUT_SECONDS):
                await rows.release(operation.id, worker)


async def _fail(runtime: "Runtime", operation: Operation, exc: Exception) -> None:
    message = f"{type(exc).__name__}: {exc}"
    logger.exception(
        "Operation %s failed: %s",
        operation.id,
        message,
        extra={"action": "operation_failed"},
    )
    try:
        await runtime.store.admin.operations.fail(operation.id, runtime.worker_id, message)
    except Exception as again:  # its lease runs out; another worker tries again
        logger.error(
            "Could not mark operation %s failed: %s",
            operation.id,
            again,
            extra={"action": "operation_fail_unrecorded"},
        )


def _log_outage(exc: Exception, delay: float) -> None:
    if isinstance(exc, StoreUnavailable):
        logger.warning(
            "Operations paused, database unavailable (%s); trying again in %.1fs",
            exc,
            delay,
            extra={"action": "db_down"},
        )
    else:
        logger.exception(
            "Unexpected error carrying operations; trying again in %.1fs",
            delay,
            extra={"action": "operations_error"},
        )


def _log_end(operation: Operation, current: Operation | None) -> None:
    status = "leased by another worker" if current is None else current.status
    logger.info(
        "Operation %s: %s",
        operation.id,
        status,
        extra={"action": "operation_stopped"},
    )
