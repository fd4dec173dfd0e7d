"""Summaries for /health, /metrics and the CLI: counts and blocked aggregates.

Read-only Core queries, each bounded: a scrape must cost the same whatever
the backlog.
"""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, exists, func, or_, select, tuple_
from sqlalchemy.engine import Row

from eventproc.event import Outcome
from eventproc.store.driver import Driver
from eventproc.store.protocol import BlockedAggregate, BlockedSummary, StoreStats
from eventproc.store.rows import aware
from eventproc.store.schema import dead_letters, deliveries, events

BLOCKED_SCAN = 1000  # most blocked aggregates one summary reads (the count is capped there)


async def blocked_summary(driver: Driver, *, include_dead_letters: bool) -> BlockedSummary:
    """Every blocked aggregate (up to BLOCKED_SCAN), oldest block first, with totals.

    The head of a block is the earliest retrying (or, with
    ``include_dead_letters``, dead-lettered) event of an aggregate that has
    later pending events; those wait behind it.
    """
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
        .where(events.c.aggregate_id.is_not(None), blocking)
        .subquery("heads")
    )
    waiting, *counts = _waiting_behind(driver, ranked)
    statement = (
        select(ranked, *counts)
        # A head with nothing behind it blocks nothing (a dead letter of
        # long ago): left out here, so that old ones never crowd out the
        # blocked aggregates from the bounded scan.
        .where(ranked.c.rank == 1, exists().where(waiting))
        .order_by(ranked.c.created_at, ranked.c.id)
        .limit(BLOCKED_SCAN)
    )
    async with driver.reader.connect() as conn:
        rows = (await conn.execute(statement)).all()
        db_now = aware((await conn.execute(select(now))).scalar_one())
    return _summary_of(rows, db_now)


def _waiting_behind(driver: Driver, head: Any) -> list[Any]:
    """The condition "pending after ``head`` in its aggregate", then scalar
    subqueries over those events (how many, how many due, since when)."""
    later = events.alias("later")
    now = driver.now()
    after = and_(
        later.c.aggregate_id == head.c.aggregate_id,
        later.c.processed == False,  # noqa: E712
        tuple_(later.c.created_at, later.c.id) > tuple_(head.c.created_at, head.c.id),
    )
    due = and_(
        after,
        or_(later.c.next_attempt_at.is_(None), later.c.next_attempt_at <= now),
        or_(later.c.locked_until.is_(None), later.c.locked_until < now),
    )
    return [
        after,
        select(func.count()).where(after).scalar_subquery().label("waiting"),
        select(func.count()).where(due).scalar_subquery().label("waiting_due"),
        select(func.min(later.c.created_at)).where(after).scalar_subquery().label("waiting_since"),
    ]


def _summary_of(rows: Sequence[Row[Any]], now: Any) -> BlockedSummary:
    items = [
        BlockedAggregate(
            aggregate_id=row.aggregate_id,
            aggregate_type=row.aggregate_type,
            event_id=row.id,
            event_type=row.event_type,
            reason="retrying" if not row.processed else "dead_lettered",
            waiting=row.waiting,
            retry_at=row.next_attempt_at if not row.processed else None,
            waiting_since=aware(row.waiting_since),
            waiting_due=row.waiting_due,
        )
        for row in rows
    ]
    return BlockedSummary(items=tuple(items), capped=len(rows) >= BLOCKED_SCAN, database_now=now)


async def stats_snapshot(driver: Driver) -> StoreStats:
    """Backlog in events; due and in flight in work items (events on their rows, deliveries)."""
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
    async with driver.reader.connect() as conn:
        backlog, due, in_flight, oldest = (await conn.execute(statement)).one()
        due_deliveries, leased_deliveries = (await conn.execute(open_deliveries)).one()
        dead = (
            await conn.execute(
                select(func.count())
                .select_from(dead_letters)
                .where(dead_letters.c.replayed_at.is_(None))
            )
        ).scalar_one()
        db_now = (await conn.execute(select(now))).scalar_one()
    return StoreStats(
        backlog=backlog,
        due=due + due_deliveries,
        in_flight=in_flight + leased_deliveries,
        oldest_pending_at=aware(oldest) if oldest is not None else None,
        dead_letters=dead,
        database_now=aware(db_now),
    )


def _ready(table: Any, now: Any) -> tuple[Any, Any]:
    return (
        or_(table.c.next_attempt_at.is_(None), table.c.next_attempt_at <= now),
        or_(table.c.locked_until.is_(None), table.c.locked_until < now),
    )
