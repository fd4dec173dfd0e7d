"""The store's read-only queries, through SQLAlchemy Core.

Listing, filtering and summaries are dynamic (filters come and go), so they
stay in Core; nothing here changes an event's lifecycle (that is the named
queries' job). Reads use the driver's reader engine: on SQLite they never
wait for the writer.
"""

import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, exists, func, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.errors import AlreadyProcessed, Conflict, NotFound, StoreError
from eventproc.event import DeadLetter, Event, Outcome
from eventproc.store.driver import Driver
from eventproc.store.protocol import ClaimPolicy, EventFilter
from eventproc.store.rows import aware, row_to_dead_letter, row_to_event
from eventproc.store.schema import dead_letters, deliveries, events


async def now(driver: Driver) -> datetime:
    async with driver.reader.connect() as conn:
        return aware((await conn.execute(select(driver.now()))).scalar_one())


async def event_get(driver: Driver, event_id: uuid.UUID) -> Event | None:
    async with driver.reader.connect() as conn:
        row = (await conn.execute(select(events).where(events.c.id == event_id))).first()
    return row_to_event(row) if row else None


async def event_list(driver: Driver, query: EventFilter) -> list[Event]:
    statement: Select[Any] = select(events)
    if query.event_type is not None:
        statement = statement.where(events.c.event_type == query.event_type)
    if query.processed is not None:
        statement = statement.where(events.c.processed == query.processed)
    if query.outcome is not None:
        statement = statement.where(events.c.outcome == query.outcome)
    if query.aggregate_id is not None:
        statement = statement.where(events.c.aggregate_id == query.aggregate_id)
    if query.ids is not None:
        statement = statement.where(events.c.id.in_(list(query.ids)))
    if query.before is not None:
        statement = statement.where(events.c.created_at < query.before)
    statement = statement.order_by(events.c.created_at.desc(), events.c.id.desc()).limit(
        query.limit
    )
    async with driver.reader.connect() as conn:
        rows = (await conn.execute(statement)).all()
    return [row_to_event(row) for row in rows]


async def dead_letter_list(driver: Driver, limit: int) -> list[DeadLetter]:
    async with driver.reader.connect() as conn:
        rows = (
            await conn.execute(
                select(dead_letters).order_by(dead_letters.c.created_at.desc()).limit(limit)
            )
        ).all()
    return [row_to_dead_letter(row) for row in rows]


async def why_not_claimed(
    driver: Driver, conn: AsyncConnection, event_id: uuid.UUID, policy: ClaimPolicy
) -> StoreError:
    """Why a manual trigger could not claim the event, naming the event in the way."""
    current = (await conn.execute(select(events).where(events.c.id == event_id))).first()
    if current is None:
        return NotFound("Event not found")
    event = row_to_event(current)
    db_now = aware((await conn.execute(select(driver.now()))).scalar_one())
    if event.processed:
        return AlreadyProcessed("Event already processed")
    if event.locked_until is not None and event.locked_until >= db_now:
        return Conflict(f"Event is being processed by {event.locked_by}")
    if event.aggregate_id is None:
        return Conflict("Event could not be claimed just now; try again")
    earlier = events.alias("earlier")
    holding = earlier.c.processed == False  # noqa: E712
    if policy.block_on_dead_letters:
        holding = or_(holding, earlier.c.outcome == Outcome.DEAD_LETTERED.value)
    found = (
        await conn.execute(
            select(earlier)
            .where(
                earlier.c.aggregate_id == event.aggregate_id,
                holding,
                tuple_(earlier.c.created_at, earlier.c.id) < (event.created_at, event.id),
            )
            .order_by(earlier.c.created_at, earlier.c.id)
            .limit(1)
        )
    ).first()
    if found is None:
        return Conflict("Event could not be claimed just now; try again")
    return Conflict(
        f"Event is waiting behind an earlier event of its aggregate {event.aggregate_id}: "
        f"{found.id} ({found.event_type}) is {_state_of(row_to_event(found), db_now)}"
    )


def _state_of(event: Event, now: datetime) -> str:
    """What an event holding back its aggregate is doing, in words."""
    if event.processed:
        return "dead-lettered (replay it or discard its dead letter)"
    if event.locked_until is not None and event.locked_until >= now:
        return f"running on {event.locked_by}"
    if event.next_attempt_at is not None and event.next_attempt_at > now:
        return f"waiting for a retry at {_iso(event.next_attempt_at)}"
    return "pending (it runs first)"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# -- backfill (eventproc.backfill): past events, by event type and time ------------------


class BackfillRow(NamedTuple):
    """A past event as a backfill sees it."""

    event: Event
    delivered: bool  # it has a delivery of the backfilled handler already
    unrouted: bool  # still pending on its own row: routed (the new subscription too) when claimed


def types_present() -> Any:
    """Every distinct ``event_type`` as a recursive CTE: one index probe per type.

    A loose scan of events_type_created_idx (``min(event_type) > previous``),
    not a scan of the table; the last row is NULL (the walk's end).
    """
    first = select(func.min(events.c.event_type).label("event_type")).cte("present", recursive=True)
    later = events.alias("later")
    following = (
        select(func.min(later.c.event_type))
        .where(later.c.event_type > first.c.event_type)
        .scalar_subquery()
    )
    return first.union_all(
        select(following.label("event_type")).where(first.c.event_type.is_not(None))
    )


async def event_types_present(driver: Driver) -> list[str]:
    """Every distinct ``event_type``, in order: a backfill of ``user.*`` or ``*``
    learns which exact types to page through."""
    present = types_present()
    statement = select(present.c.event_type).where(present.c.event_type.is_not(None))
    async with driver.reader.connect() as conn:
        return [row[0] for row in await conn.execute(statement)]


async def backfill_page(
    driver: Driver,
    event_type: str,
    handler: str,
    *,
    since: datetime,
    until: datetime | None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[BackfillRow]:
    """The next ``limit`` events of one type created in [since, until), after ``after``.

    Keyset order (created_at, id), walked on events_type_created_idx (the
    type, then a created_at range: the row comparison only breaks ties);
    whether each has ``handler``'s delivery is a probe of that table's key
    (or its row says ``handler`` handled it).
    """
    delivered = exists().where(
        deliveries.c.event_id == events.c.id, deliveries.c.handler == handler
    )
    statement = select(events, delivered.label("delivered")).where(
        events.c.event_type == event_type, events.c.created_at >= since
    )
    if until is not None:
        statement = statement.where(events.c.created_at < until)
    if after is not None:
        statement = statement.where(
            events.c.created_at >= after[0], tuple_(events.c.created_at, events.c.id) > after
        )
    statement = statement.order_by(events.c.created_at, events.c.id).limit(limit)
    async with driver.reader.connect() as conn:
        rows = (await conn.execute(statement)).all()
    return [
        BackfillRow(
            event,
            # An event the subscription handled on its own row has no
            # delivery row: its completion kept metadata.handled_by.
            bool(row.delivered) or event.metadata.get("handled_by") == handler,
            not row.processed and row.routed_at is None,
        )
        for row in rows
        for event in (row_to_event(row),)
    ]
