"""What a bulk operation works on and does: its selector's matches, its frozen items, each batch.

A selector is the JSON the API validated: ``event_ids``, ``dead_letter_ids``,
``events`` (the event list's filters, through events.where_of) or
``dead_letters`` (open ones), with ``handler`` for a replay of that
subscription's deliveries only, or to pause, resume or backfill it. A
filter takes rows created up to the plan's time only.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, Text, delete, func, insert, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from eventproc.store.admin import mutations
from eventproc.store.admin.audit import Audit, record
from eventproc.store.admin.events import EventQuery, where_of
from eventproc.store.driver import Driver
from eventproc.store.rows import aware
from eventproc.store.schema import dead_letters, events, handler_pauses, operation_items
from eventproc.store.types import GUID

SAMPLE_SIZE = 10
INSTANT = ("pause", "resume")  # one item, applied by the execute call itself
_SAMPLE_KEYS = ("event_id", "event_type", "handler", "dead_letter_id")


async def preview(
    driver: Driver,
    conn: AsyncConnection,
    action: str,
    selector: dict[str, Any],
    max_items: int,
    now: datetime,
    candidates: Sequence[tuple[uuid.UUID, str]] | None,
) -> tuple[int, list[dict[str, str]]]:
    """The matches' count (up to max_items + 1) and the first few of them (oldest first)."""
    if action in INSTANT:
        return 1, [{"handler": selector["handler"]}]
    if candidates is not None:
        handler = selector["handler"]
        return len(candidates), [
            {"event_id": str(i), "event_type": t, "handler": handler}
            for i, t in candidates[: min(SAMPLE_SIZE, max_items)]
        ]
    found = matches(driver, selector, now)
    capped = found.limit(max_items + 1).subquery()
    count = int(await conn.scalar(select(func.count()).select_from(capped)) or 0)
    rows = await conn.execute(found.limit(min(SAMPLE_SIZE, max_items)))
    return count, [
        {key: str(row._mapping[key]) for key in _SAMPLE_KEYS if row._mapping[key] is not None}
        for row in rows
    ]


async def freeze(
    driver: Driver, conn: AsyncConnection, row: Any, items: Sequence[uuid.UUID] | None
) -> int:
    """Write the items (the matches in order, or ``items``), up to max_items; how many."""
    if items is not None:
        handler = row.selector["handler"]
        values = [
            {"operation_id": row.id, "position": n, "event_id": i, "handler": handler}
            for n, i in enumerate(items[: row.max_items])
        ]
        if values:
            await conn.execute(insert(operation_items), values)
        return len(values)
    source = matches(driver, row.selector, aware(row.created_at)).limit(row.max_items).subquery()
    columns = ("operation_id", "position", "event_id", "handler", "dead_letter_id")
    picked = select(
        literal(row.id, GUID()),
        source.c.position,
        source.c.event_id,
        source.c.handler,
        source.c.dead_letter_id,
    )
    await conn.execute(insert(operation_items).from_select(columns, picked))
    frozen = select(func.count()).where(operation_items.c.operation_id == row.id)
    return int(await conn.scalar(frozen) or 0)


async def batch(conn: AsyncConnection, op_id: uuid.UUID, cursor: int, size: int) -> list[Any]:
    """The next ``size`` frozen items from position ``cursor``."""
    statement = (
        select(operation_items)
        .where(operation_items.c.operation_id == op_id, operation_items.c.position >= cursor)
        .order_by(operation_items.c.position)
        .limit(size)
    )
    return list((await conn.execute(statement)).all())


def matches(driver: Driver, selector: dict[str, Any], before: datetime) -> Select[Any]:
    """What the selector takes, oldest first, numbered from 0 (``position``)."""
    letters = "dead_letter_ids" in selector or "dead_letters" in selector
    table = dead_letters if letters else events
    order = (table.c.created_at, table.c.id)
    position = (func.row_number().over(order_by=order) - 1).label("position")
    if letters:
        d = dead_letters.c
        columns = [d.event_id, d.handler, d.id.label("dead_letter_id"), d.event_type]
        clauses = _letter_clauses(selector, before)
    else:
        columns = [
            events.c.id.label("event_id"),
            literal(selector.get("handler"), Text()).label("handler"),
            literal(None, GUID()).label("dead_letter_id"),
            events.c.event_type,
        ]
        clauses = where_of(driver, _event_query(selector))
        if "events" in selector:
            clauses.append(events.c.created_at <= before)
    return select(*columns, position).where(*clauses).order_by(*order)


def _event_query(selector: dict[str, Any]) -> EventQuery:
    found = selector.get("events") or {}
    ids = selector.get("event_ids")
    path = found.get("path")
    return EventQuery(
        event_type=found.get("type"),
        handler=found.get("handler") or selector.get("handler"),  # only its deliveries' events
        state=found.get("state"),
        outcome=found.get("outcome"),
        aggregate_id=None
        if found.get("aggregate_id") is None
        else uuid.UUID(found["aggregate_id"]),
        created_by=found.get("created_by"),
        since=_time(found.get("since")),
        until=_time(found.get("until")),
        path=tuple(path.split(".")) if path else None,
        value=found.get("value"),
        error=found.get("error"),
        ids=None if ids is None else tuple(uuid.UUID(i) for i in ids),
    )


def _letter_clauses(selector: dict[str, Any], before: datetime) -> list[ColumnElement[bool]]:
    """Open dead letters only: of the ids, or of the filter, created by the plan's time."""
    d = dead_letters.c
    clauses: list[ColumnElement[bool]] = [d.replayed_at.is_(None)]
    if "dead_letter_ids" in selector:
        clauses.append(d.id.in_([uuid.UUID(i) for i in selector["dead_letter_ids"]]))
    found = selector.get("dead_letters")
    if found is not None:
        clauses.append(d.created_at <= before)
        named = (("handler", d.handler), ("event_type", d.event_type))
        for key, column in (*named, ("fingerprint", d.error_fingerprint)):
            if found.get(key) is not None:
                clauses.append(column == found[key])
        if found.get("since") is not None:
            clauses.append(d.created_at >= aware(found["since"]))
        if found.get("until") is not None:
            clauses.append(d.created_at < aware(found["until"]))
    return clauses


def _time(value: Any) -> datetime | None:
    return None if value is None else aware(value)


async def toggle(driver: Driver, conn: AsyncConnection, row: Any, audit: Audit) -> int:
    """Pause or resume the selector's handler in the execute transaction; 1 if it changed."""
    handler = row.selector["handler"]
    if row.action == "pause":
        upsert = pg_insert if driver.backend == "postgresql" else sqlite_insert
        statement: Any = (
            upsert(handler_pauses)
            .values(handler=handler, actor=audit.actor, reason=audit.reason)
            .on_conflict_do_nothing(index_elements=["handler"])
        )
    else:
        statement = delete(handler_pauses).where(handler_pauses.c.handler == handler)
    changed = int(bool((await conn.execute(statement)).rowcount))
    await record(
        conn,
        audit,
        f"handler.{row.action}",
        {"handler": handler},
        {f"{row.action}d": changed},
        "ok" if changed else "unchanged",
    )
    return changed


async def apply(
    driver: Driver, conn: AsyncConnection, action: str, items: Sequence[Any], audit: Audit
) -> int:
    """One batch's effect, in the caller's transaction; how many items it changed."""
    if not items:
        return 0
    if action == "discard":
        letters = [item.dead_letter_id for item in items]
        return await mutations.discard_dead_letters_in(driver, conn, letters)
    if action == "backfill":
        ids = [item.event_id for item in items]
        return len(await driver.run(conn, "delivery_add", [ids, items[0].handler]))
    if items[0].dead_letter_id is not None:
        return await _replay_letters(driver, conn, [i.dead_letter_id for i in items], audit)
    if items[0].handler is None:  # every delivery of the events, a fresh budget
        ids = [item.event_id for item in items]
        return len(await mutations.replay_events_in(driver, conn, ids, audit))
    changed = 0
    for item in items:  # only that subscription's delivery
        changed += int(
            await mutations.replay_delivery_in(driver, conn, item.event_id, item.handler, audit)
        )
    return changed


async def _replay_letters(
    driver: Driver, conn: AsyncConnection, ids: Sequence[uuid.UUID], audit: Audit
) -> int:
    """Each still open dead letter's delivery again (or its event, if it names no handler)."""
    changed = 0
    for _, event_id, handler in await mutations.dead_letter_targets(conn, ids):
        if handler is None:
            changed += len(await mutations.replay_events_in(driver, conn, [event_id], audit))
        else:
            done = await mutations.replay_delivery_in(driver, conn, event_id, handler, audit)
            changed += int(done)
    return changed
