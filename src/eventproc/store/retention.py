"""Retention: which rows may go, and the batches that remove (or archive) them.

Every guard is in the statement that deletes, so a row that became needed
between choosing and deleting (replayed, say) stays. Cutoffs are computed
from the database's clock, read once per batch. Events are walked per type
on events_type_created_idx (created_at is never later than the clock an
outcome is kept by), so a batch is an index range, not a table scan.
"""

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, exists, func, literal, not_, or_, select
from sqlalchemy import insert as sa_insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.event import Outcome
from eventproc.store.driver import Driver
from eventproc.store.reads import types_present
from eventproc.store.rows import aware
from eventproc.store.schema import (
    admin_actions,
    attempts,
    dead_letters,
    deliveries,
    events,
    events_archive,
    leases,
)
from eventproc.store.types import UTCDateTime

PRUNER = "pruner"  # the lease row's name
EVENT_TABLES = ("events", "event_deliveries", "event_attempts", "event_dead_letters")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each kind of row is kept, in days (RETAIN_*), and where pruned events go."""

    succeeded_days: float = 7.0
    skipped_days: float = 7.0
    dead_lettered_days: float = 30.0  # discarded events and dead letters too
    partial_days: float = 30.0
    attempts_days: float = 30.0
    audit_days: float = 365.0
    handler_days: Mapping[str, float] = field(default_factory=dict)
    block_on_dead_letters: bool = False  # AGGREGATE_FAILURE=block
    archive: str = "none"  # none | table | jsonl


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """The policy's clocks as instants: a row finished before its cutoff may go."""

    now: datetime
    by_outcome: dict[str, datetime]
    by_handler: dict[str, datetime]
    attempts: datetime
    audit: datetime
    dead_letters: datetime


@dataclass(frozen=True, slots=True)
class Planned:
    """What a dry run found for one table (and outcome): how many, oldest and newest."""

    table: str
    outcome: str | None
    rows: int
    oldest: datetime | None
    newest: datetime | None


def _ago(now: datetime, days: float) -> datetime:
    return now - timedelta(days=days)


async def cutoffs(conn: AsyncConnection, driver: Driver, policy: RetentionPolicy) -> Cutoffs:
    now = aware((await conn.execute(select(driver.now()))).scalar_one())
    outcomes = {
        Outcome.SUCCEEDED.value: policy.succeeded_days,
        Outcome.SKIPPED.value: policy.skipped_days,
        Outcome.DEAD_LETTERED.value: policy.dead_lettered_days,
        Outcome.DISCARDED.value: policy.dead_lettered_days,
        Outcome.PARTIAL.value: policy.partial_days,
    }
    return Cutoffs(
        now=now,
        by_outcome={name: _ago(now, days) for name, days in outcomes.items()},
        by_handler={name: _ago(now, days) for name, days in policy.handler_days.items()},
        attempts=_ago(now, policy.attempts_days),
        audit=_ago(now, policy.audit_days),
        dead_letters=_ago(now, policy.dead_lettered_days),
    )


def _at(value: datetime) -> Any:
    return literal(value, UTCDateTime())


def _finished() -> ColumnElement[Any]:
    # Seed-era rows finished before eventproc adopted the table have no processed_at.
    return func.coalesce(events.c.processed_at, events.c.created_at)


def _handled_by(driver: Driver) -> ColumnElement[Any]:
    if driver.backend == "postgresql":
        return func.jsonb_extract_path_text(events.c.metadata, "handled_by")
    return func.json_extract(events.c.metadata, "$.handled_by")


def _kept_long_enough(driver: Driver, cut: Cutoffs, outcome_cut: datetime) -> ColumnElement[bool]:
    """Every handler of the event (its deliveries', or the one on its row) lets it go.

    A handler named in RETAIN_HANDLER_DAYS keeps its events by its own clock,
    shorter or longer; the others by the outcome's.
    """
    if not cut.by_handler:
        return and_(_finished() < _at(outcome_cut))
    d = deliveries.alias("kept_by")

    def clock(column: ColumnElement[Any]) -> ColumnElement[Any]:
        whens = [(column == name, _at(at)) for name, at in cut.by_handler.items()]
        return case(*whens, else_=_at(outcome_cut))

    too_new = exists().where(d.c.event_id == events.c.id, _finished() >= clock(d.c.handler))
    has_deliveries = exists().where(d.c.event_id == events.c.id)
    on_row = _finished() < clock(_handled_by(driver))
    return and_(not_(too_new), or_(has_deliveries, on_row))


def due_events(driver: Driver, cut: Cutoffs, policy: RetentionPolicy) -> ColumnElement[bool]:
    """The guards: finished, past its clock, and needed by nothing."""
    by_outcome = [
        and_(
            events.c.outcome == name
            if name != Outcome.SUCCEEDED.value
            else or_(events.c.outcome == name, events.c.outcome.is_(None)),
            _kept_long_enough(driver, cut, at),
        )
        for name, at in cut.by_outcome.items()
    ]
    d = deliveries.alias("unfinished")
    letter = dead_letters.alias("open_letter")
    guards = [
        events.c.processed == True,  # noqa: E712
        or_(*by_outcome),
        # an unfinished delivery (a raw UPDATE may have set processed regardless)
        not_(exists().where(d.c.event_id == events.c.id, d.c.status == "pending")),
        # an open dead letter keeps its event replayable until the letter's own clock passes
        not_(
            exists().where(
                letter.c.event_id == events.c.id,
                letter.c.replayed_at.is_(None),
                letter.c.created_at >= _at(cut.dead_letters),
            )
        ),
    ]
    if policy.block_on_dead_letters:
        # AGGREGATE_FAILURE=block: a dead-lettered event (or delivery) holds its aggregate back.
        dead = deliveries.alias("dead_delivery")
        guards.append(
            not_(
                and_(
                    events.c.aggregate_id.is_not(None),
                    or_(
                        events.c.outcome == Outcome.DEAD_LETTERED.value,
                        exists().where(
                            dead.c.event_id == events.c.id,
                            dead.c.outcome == Outcome.DEAD_LETTERED.value,
                        ),
                    ),
                )
            )
        )
    return and_(*guards)


def newest_cut(cut: Cutoffs) -> datetime:
    """No event created after this is due under any clock (created_at <= its finish)."""
    return max([*cut.by_outcome.values(), *cut.by_handler.values()])


async def event_types(conn: AsyncConnection) -> list[str]:
    present = types_present()
    statement = select(present.c.event_type).where(present.c.event_type.is_not(None))
    return [row[0] for row in await conn.execute(statement)]


async def event_candidates(
    conn: AsyncConnection,
    event_type: str,
    before: datetime,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[tuple[datetime, uuid.UUID]]:
    """The next ``limit`` events of a type created before ``before``, in keyset order."""
    statement = select(events.c.created_at, events.c.id).where(
        events.c.event_type == event_type, events.c.created_at < _at(before)
    )
    if after is not None:
        statement = statement.where(
            or_(
                events.c.created_at > _at(after[0]),
                and_(events.c.created_at == _at(after[0]), events.c.id > after[1]),
            )
        )
    statement = statement.order_by(events.c.created_at, events.c.id).limit(limit)
    return [(aware(row[0]), row[1]) for row in await conn.execute(statement)]


async def delete_events(
    conn: AsyncConnection,
    driver: Driver,
    ids: Sequence[uuid.UUID],
    cut: Cutoffs,
    policy: RetentionPolicy,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Delete those of ``ids`` that are due, with their deliveries, attempts and letters.

    Returns the deleted events' rows (every column), for an archive, and the
    rows deleted per table; with PRUNE_ARCHIVE=table the events are already
    in events_archive, in this transaction.
    """
    counts = dict.fromkeys(EVENT_TABLES, 0)
    if not ids:
        return [], counts
    statement = (
        delete(events)
        .where(events.c.id.in_(list(ids)), due_events(driver, cut, policy))
        .returning(*events.c)
    )
    gone = [dict(row._mapping) for row in await conn.execute(statement)]
    counts["events"] = len(gone)
    if not gone:
        return gone, counts
    gone_ids = [row["id"] for row in gone]
    for table in (deliveries, attempts, dead_letters):
        result = await conn.execute(delete(table).where(table.c.event_id.in_(gone_ids)))
        counts[table.name] = int(result.rowcount or 0)
    if policy.archive == "table":
        await conn.execute(sa_insert(events_archive), gone)
    return gone, counts


async def delete_by_clock(conn: AsyncConnection, table_name: str, cut: Cutoffs, limit: int) -> int:
    """Attempts, audit rows and replayed (or orphaned) dead letters, each on its own clock."""
    table, clock, where = _clocked(table_name, cut)
    key = table.c.id
    chosen = select(key).where(where).order_by(clock).limit(limit)
    result = await conn.execute(delete(table).where(key.in_(chosen.scalar_subquery())))
    return int(result.rowcount or 0)


def _clocked(table_name: str, cut: Cutoffs) -> tuple[Any, Any, ColumnElement[bool]]:
    if table_name == "event_attempts":
        return attempts, attempts.c.finished_at, attempts.c.finished_at < _at(cut.attempts)
    if table_name == "admin_actions":
        return admin_actions, admin_actions.c.at, admin_actions.c.at < _at(cut.audit)
    if table_name == "event_dead_letters":
        orphan = not_(exists().where(events.c.id == dead_letters.c.event_id))
        return (
            dead_letters,
            dead_letters.c.created_at,
            and_(
                dead_letters.c.created_at < _at(cut.dead_letters),
                or_(dead_letters.c.replayed_at.is_not(None), orphan),
            ),
        )
    raise ValueError(f"no retention clock for {table_name}")


CLOCKED_TABLES = ("event_attempts", "event_dead_letters", "admin_actions")


async def plan(driver: Driver, policy: RetentionPolicy) -> list[Planned]:
    """What a prune would remove now, per table and outcome (reads only, counts everything)."""
    async with driver.reader.connect() as conn:
        cut = await cutoffs(conn, driver, policy)
        statement = (
            select(events.c.outcome, func.count(), func.min(_finished()), func.max(_finished()))
            .where(events.c.created_at < _at(newest_cut(cut)), due_events(driver, cut, policy))
            .group_by(events.c.outcome)
            .order_by(events.c.outcome)
        )
        found = [
            Planned("events", row[0] or Outcome.SUCCEEDED.value, row[1], _t(row[2]), _t(row[3]))
            for row in await conn.execute(statement)
        ] or [Planned("events", None, 0, None, None)]
        for name in CLOCKED_TABLES:
            _, clock, where = _clocked(name, cut)
            row = (
                await conn.execute(
                    select(func.count(), func.min(clock), func.max(clock)).where(where)
                )
            ).one()
            found.append(Planned(name, None, row[0], _t(row[1]), _t(row[2])))
    return found


def _t(value: Any) -> datetime | None:
    return None if value is None else aware(value)


# -- the lease: one pruner at a time, on every backend and through any pooler ----------


async def lease_renew(
    conn: AsyncConnection, driver: Driver, holder: str, seconds: float, *, take: bool
) -> bool:
    """Hold (or, with ``take``, take a free or expired) lease for ``seconds`` more.

    Inside a batch's transaction the row stays locked until its commit on
    PostgreSQL, so two pruners' batches can never overlap, session or not.
    """
    now = aware((await conn.execute(select(driver.now()))).scalar_one())
    if take:
        dialect_insert = postgresql.insert if driver.backend == "postgresql" else sqlite.insert
        await conn.execute(
            dialect_insert(leases)
            .values(name=PRUNER)
            .on_conflict_do_nothing(index_elements=["name"])
        )
    mine = leases.c.holder == holder
    free = or_(leases.c.holder.is_(None), leases.c.expires_at < _at(now))
    result = await conn.execute(
        leases.update()
        .where(leases.c.name == PRUNER, or_(mine, free) if take else mine)
        .values(holder=holder, expires_at=_at(now + timedelta(seconds=seconds)))
    )
    return bool(result.rowcount)


async def lease_release(conn: AsyncConnection, holder: str) -> None:
    await conn.execute(
        leases.update()
        .where(leases.c.name == PRUNER, leases.c.holder == holder)
        .values(holder=None, expires_at=None)
    )


async def pass_done(conn: AsyncConnection, driver: Driver, started: datetime) -> None:
    """A pass found nothing more due: every row due at ``started`` is gone."""
    await conn.execute(
        leases.update()
        .where(leases.c.name == PRUNER)
        .values(pass_started_at=_at(started), succeeded_at=driver.now())
    )


async def last_pass(conn: AsyncConnection) -> tuple[datetime | None, datetime | None]:
    row = (
        await conn.execute(
            select(leases.c.pass_started_at, leases.c.succeeded_at).where(leases.c.name == PRUNER)
        )
    ).first()
    return (None, None) if row is None else (_t(row[0]), _t(row[1]))
