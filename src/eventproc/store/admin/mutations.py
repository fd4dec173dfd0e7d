"""What an operator changes: replays, discards, pauses; each with its audit row, in one transaction.

The lifecycle statements are the engine's own named queries (event_replay,
delivery_replay, dead_letter_discard), so a replay from the API is exactly
the replay the seed's SQL and the Python API make; the admin layer adds
provenance (who, which operation) to the replayed events' metadata.
"""

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.store.admin.audit import Audit, record
from eventproc.store.driver import Driver
from eventproc.store.rows import aware, uuid_of
from eventproc.store.schema import dead_letters, events, handler_pauses


async def replay_events(driver: Driver, ids: Sequence[uuid.UUID], audit: Audit) -> list[uuid.UUID]:
    """Every delivery of each processed event again, with a fresh budget (the seed's replay)."""
    async with driver.begin() as conn:
        replayed = await replay_events_in(driver, conn, ids, audit)
        await record(
            conn,
            audit,
            "event.replay",
            {"event_ids": [str(i) for i in ids]},
            {"matched": len(ids), "replayed": len(replayed)},
            "ok" if replayed else "unchanged",
        )
    return replayed


async def replay_events_in(
    driver: Driver, conn: AsyncConnection, ids: Sequence[uuid.UUID], audit: Audit
) -> list[uuid.UUID]:
    rows = await driver.run(conn, "event_replay", [list(ids)])
    replayed = [uuid_of(row[0]) for row in rows]
    await _mark(conn, replayed, audit, None)
    return replayed


async def replay_delivery(driver: Driver, event_id: uuid.UUID, handler: str, audit: Audit) -> bool:
    """One subscription's delivery of one event again; the event's other deliveries untouched."""
    async with driver.begin() as conn:
        done = await replay_delivery_in(driver, conn, event_id, handler, audit)
        await record(
            conn,
            audit,
            "delivery.replay",
            {"event_id": str(event_id), "handler": handler},
            {"replayed": int(done)},
            "ok" if done else "unchanged",
        )
    return done


async def replay_delivery_in(
    driver: Driver, conn: AsyncConnection, event_id: uuid.UUID, handler: str, audit: Audit
) -> bool:
    done = bool(await driver.run(conn, "delivery_replay", [event_id, handler]))
    if done:
        await _mark(conn, [event_id], audit, handler)
    return done


async def _mark(
    conn: AsyncConnection, ids: Sequence[uuid.UUID], audit: Audit, handler: str | None
) -> None:
    """Provenance on the replayed events: metadata.replay = {by, operation_id, handler}."""
    if not ids:
        return
    provenance: dict[str, Any] = {"by": audit.actor}
    if audit.operation_id is not None:
        provenance["operation_id"] = str(audit.operation_id)
    if handler is not None:
        provenance["handler"] = handler
    rows = (
        await conn.execute(select(events.c.id, events.c.metadata).where(events.c.id.in_(ids)))
    ).all()
    for row in rows:
        metadata = {**(row.metadata or {}), "replay": provenance}
        await conn.execute(update(events).where(events.c.id == row.id).values(metadata=metadata))


async def dead_letter_targets(
    conn: AsyncConnection, ids: Sequence[uuid.UUID]
) -> list[tuple[uuid.UUID, uuid.UUID, str | None]]:
    """(dead letter id, event id, handler) of each open dead letter of ``ids``."""
    rows = (
        await conn.execute(
            select(dead_letters.c.id, dead_letters.c.event_id, dead_letters.c.handler).where(
                dead_letters.c.id.in_(ids), dead_letters.c.replayed_at.is_(None)
            )
        )
    ).all()
    return [(uuid_of(row.id), uuid_of(row.event_id), row.handler) for row in rows]


async def discard_dead_letters_in(
    driver: Driver, conn: AsyncConnection, ids: Sequence[uuid.UUID]
) -> int:
    return len(await driver.run(conn, "dead_letter_discard", [list(ids)]))


async def pause(driver: Driver, handler: str, audit: Audit) -> bool:
    """Stop claiming ``handler``'s deliveries; the ones running finish. False: already paused."""
    insert = pg_insert if driver.backend == "postgresql" else sqlite_insert
    async with driver.begin() as conn:
        result = await conn.execute(
            insert(handler_pauses)
            .values(handler=handler, actor=audit.actor, reason=audit.reason)
            .on_conflict_do_nothing(index_elements=["handler"])
        )
        paused = bool(result.rowcount)
        await record(
            conn,
            audit,
            "handler.pause",
            {"handler": handler},
            {"paused": int(paused)},
            "ok" if paused else "unchanged",
        )
    return paused


async def resume(driver: Driver, handler: str, audit: Audit) -> bool:
    async with driver.begin() as conn:
        result = await conn.execute(
            delete(handler_pauses).where(handler_pauses.c.handler == handler)
        )
        resumed = bool(result.rowcount)
        await record(
            conn,
            audit,
            "handler.resume",
            {"handler": handler},
            {"resumed": int(resumed)},
            "ok" if resumed else "unchanged",
        )
    return resumed


async def paused_handlers(driver: Driver) -> dict[str, tuple[Any, str, str | None]]:
    """handler -> (paused_at, actor, reason)."""
    rows = await driver.read("admin_paused", [])
    return {row[0]: (aware(row[1]), row[2], row[3]) for row in rows}
