"""Summaries for /health, /metrics and the CLI: counts and blocked aggregates.

Read-only Core queries, each bounded: a scrape must cost the same whatever
the backlog.
"""

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, tuple_
from sqlalchemy.engine import Row

from eventproc.event import Outcome
from eventproc.store.driver import Driver
from eventproc.store.protocol import BlockedAggregate, BlockedSummary, StoreStats
from eventproc.store.rows import aware
from eventproc.store.schema import dead_letters, deliveries, events

BLOCKED_SCAN = 1000  # most blocked aggregates one summary reads (the count is capped there)

# Statements built once per (backend, shape): they hold no values (the time
# is the database's now()), and building one (subqueries proxying every
# column) took more of a /health request's CPU than running it.
_BUILT: dict[tuple[str, str, bool], Any] = {}


def _built(driver: Driver, name: str, flag: bool, build: Callable[[Driver, bool], Any]) -> Any:
    key = (driver.backend, name, flag)
    statement = _BUILT.get(key)
    if statement is None:
        statement = _BUILT[key] = build(driver, flag)
    return statement


async def blocked_summary(driver: Driver, *, include_dead_letters: bool) -> BlockedSummary:
    """Every blocked aggregate (up to BLOCKED_SCAN), oldest block first, with totals.

    Two kinds of head: an event still handled on its own row holds back
    every later event of its aggregate; a delivery holds back only its own
    handler's later deliveries there (ordering is per (handler, aggregate)).
    """
    async with driver.reader.connect() as conn:
        heads = _built(driver, "row_heads", include_dead_letters, _row_heads)
        rows = (await conn.execute(heads)).all()
        heads = _built(driver, "delivery_heads", include_dead_letters, _delivery_heads)
        held = (await conn.execute(heads)).all()
        db_now = aware((await conn.execute(select(driver.now()))).scalar_one())
    return _summary_of([*map(_row_item, rows), *map(_delivery_item, held)], db_now)


def _row_heads(driver: Driver, include_dead_letters: bool) -> Any:
    """The earliest retrying (or dead-lettered) event on its own row of each
    aggregate that has later pending events; those wait behind it. A routed
    event is no head here: its deliveries are."""
    now = driver.now()
    retrying = and_(events.c.processed == False, events.c.next_attempt_at > now)  # noqa: E712
    blocking = (
        or_(retrying, events.c.outcome == Outcome.DEAD_LETTERED.value)
        if include_dead_letters
        else retrying
    )
    ranked = (
        select(
            *events.c,
            func.row_number()
            .over(partition_by=events.c.aggregate_id, order_by=(events.c.created_at, events.c.id))
            .label("rank"),
        )
        .where(events.c.aggregate_id.is_not(None), events.c.routed_at.is_(None), blocking)
        .subquery("heads")
    )
    waiting, *counts = _waiting_behind(driver, ranked)
    return (
        select(ranked, *counts)
        # A head with nothing behind it blocks nothing (a dead letter of
        # long ago): left out here, so that old ones never crowd out the
        # blocked aggregates from the bounded scan.
        .where(ranked.c.rank == 1, exists().where(waiting))
        .order_by(ranked.c.created_at, ranked.c.id)
        .limit(BLOCKED_SCAN)
    )


def _delivery_heads(driver: Driver, include_dead_letters: bool) -> Any:
    """The earliest retrying (or dead-lettered) delivery of each (handler,
    aggregate) that has later pending deliveries of that handler there.

    Read from the rows event_deliveries_aggregate_idx holds (pending or
    dead-lettered, with an aggregate); the waiting counts by the same index.
    """
    now = driver.now()
    retrying = and_(deliveries.c.status == "pending", deliveries.c.next_attempt_at > now)
    blocking = (
        or_(retrying, deliveries.c.outcome == Outcome.DEAD_LETTERED.value)
        if include_dead_letters
        else retrying
    )
    ranked = (
        select(
            *deliveries.c,
            func.row_number()
            .over(
                partition_by=(deliveries.c.aggregate_id, deliveries.c.handler),
                order_by=(deliveries.c.event_created_at, deliveries.c.event_id),
            )
            .label("rank"),
        )
        .where(deliveries.c.aggregate_id.is_not(None), blocking)
        .subquery("delivery_heads")
    )
    waiting, *counts = _deliveries_behind(driver, ranked)
    return (
        select(ranked, events.c.aggregate_type, *counts)
        .join_from(ranked, events, events.c.id == ranked.c.event_id)
        .where(ranked.c.rank == 1, exists().where(waiting))
        .order_by(ranked.c.event_created_at, ranked.c.event_id, ranked.c.handler)
        .limit(BLOCKED_SCAN)
    )


def _waiting_behind(driver: Driver, head: Any) -> list[Any]:
    """The condition "pending after ``head`` in its aggregate", then scalar
    subqueries over those events (how many, how many due, since when)."""
    later = events.alias("later")
    after = and_(
        later.c.aggregate_id == head.c.aggregate_id,
        later.c.processed == False,  # noqa: E712
        tuple_(later.c.created_at, later.c.id) > tuple_(head.c.created_at, head.c.id),
    )
    return _counts(driver, later, after, later.c.created_at)


def _deliveries_behind(driver: Driver, head: Any) -> list[Any]:
    """As :func:`_waiting_behind`, over the later pending deliveries of the
    head's handler in its aggregate."""
    later = deliveries.alias("later")
    after = and_(
        later.c.aggregate_id == head.c.aggregate_id,
        later.c.handler == head.c.handler,
        later.c.status == "pending",
        tuple_(later.c.event_created_at, later.c.event_id)
        > tuple_(head.c.event_created_at, head.c.event_id),
    )
    return _counts(driver, later, after, later.c.event_created_at)


def _counts(driver: Driver, later: Any, after: Any, created_at: Any) -> list[Any]:
    due = and_(after, *_ready(later, driver.now()))
    return [
        after,
        select(func.count()).where(after).scalar_subquery().label("waiting"),
        select(func.count()).where(due).scalar_subquery().label("waiting_due"),
        select(func.min(created_at)).where(after).scalar_subquery().label("waiting_since"),
    ]


# A head's place in the summary's order (the head event's created_at, its id,
# its handler) and what it reports.
_Item = tuple[tuple[Any, uuid.UUID, str], BlockedAggregate]


def _row_item(row: Row[Any]) -> _Item:
    return _item(row, row.id, row.created_at, retrying=not row.processed, handler=None)


def _delivery_item(row: Row[Any]) -> _Item:
    retrying = row.status == "pending"
    return _item(row, row.event_id, row.event_created_at, retrying=retrying, handler=row.handler)


def _item(
    row: Row[Any], event_id: uuid.UUID, created_at: Any, *, retrying: bool, handler: str | None
) -> _Item:
    """A head, on an event's row or a delivery (whose event id and time are its own columns)."""
    item = BlockedAggregate(
        aggregate_id=row.aggregate_id,
        aggregate_type=row.aggregate_type,
        event_id=event_id,
        event_type=row.event_type,
        reason="retrying" if retrying else "dead_lettered",
        waiting=row.waiting,
        retry_at=row.next_attempt_at if retrying else None,
        waiting_since=aware(row.waiting_since),
        waiting_due=row.waiting_due,
        handler=handler,
    )
    return (_moment(created_at), event_id, handler or ""), item


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _moment(value: Any) -> datetime:
    return aware(value) if value is not None else _EARLIEST


def _summary_of(found: Sequence[_Item], now: Any) -> BlockedSummary:
    """Both kinds of head in one order, oldest block first, cut at BLOCKED_SCAN."""
    ordered = sorted(found, key=lambda pair: pair[0])
    items = tuple(item for _, item in ordered[:BLOCKED_SCAN])
    return BlockedSummary(items=items, capped=len(found) >= BLOCKED_SCAN, database_now=now)


async def stats_snapshot(driver: Driver) -> StoreStats:
    """Backlog in events; due and in flight in work items (events on their rows, deliveries)."""
    statement, open_deliveries, open_letters, now = _built(driver, "stats", False, _stats)
    async with driver.reader.connect() as conn:
        backlog, due, in_flight, oldest = (await conn.execute(statement)).one()
        due_deliveries, leased_deliveries = (await conn.execute(open_deliveries)).one()
        dead = (await conn.execute(open_letters)).scalar_one()
        db_now = (await conn.execute(now)).scalar_one()
    return StoreStats(
        backlog=backlog,
        due=due + due_deliveries,
        in_flight=in_flight + leased_deliveries,
        oldest_pending_at=aware(oldest) if oldest is not None else None,
        dead_letters=dead,
        database_now=aware(db_now),
    )


def _stats(driver: Driver, _: bool) -> tuple[Any, Any, Any, Any]:
    now = driver.now()
    pending = events.c.processed == False  # noqa: E712
    on_row = and_(pending, events.c.routed_at.is_(None))
    statement = select(
        func.count().filter(pending),
        func.count().filter(on_row, *_ready(events, now)),
        func.count().filter(on_row, events.c.locked_until >= now),
        func.min(events.c.created_at).filter(pending),
    ).where(pending)
    open_deliveries = select(
        func.count().filter(*_ready(deliveries, now)),
        func.count().filter(deliveries.c.locked_until >= now),
    ).where(deliveries.c.status == "pending")
    open_letters = (
        select(func.count()).select_from(dead_letters).where(dead_letters.c.replayed_at.is_(None))
    )
    return statement, open_deliveries, open_letters, select(now)


def _ready(table: Any, now: Any) -> tuple[Any, Any]:
    return (
        or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now),
        or_(table.c.locked_until.is_(None), table.c.locked_until < now),
    )
