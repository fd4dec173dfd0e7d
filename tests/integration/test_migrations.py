"""Alembic on PostgreSQL: head matches schema.py, and a seed database is adopted in place."""

import asyncio
import uuid

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from eventproc import Event, HandlerContext, NewEvent, Registry
from eventproc.engine import Processor
from eventproc.store import open_store
from eventproc.store.protocol import ClaimPolicy
from eventproc.store.schema import metadata
from support.seed import SEED_SCHEMA


async def test_migrated_schema_matches_schema_module(fresh_pg_url: str) -> None:
    store = open_store(fresh_pg_url)
    await store.migrate()
    await store.migrate()  # idempotent

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_name": _ours}
        )
        return list(compare_metadata(context, metadata))

    async with store.engine.connect() as conn:
        differences = await conn.run_sync(diff)
    await store.close()
    assert differences == []


def _ours(name: str | None, type_: str, parent_names: object) -> bool:
    return type_ != "table" or name in metadata.tables


async def test_seed_database_is_upgraded_in_place_and_keeps_rows(fresh_pg_url: str) -> None:
    conn = await asyncpg.connect(fresh_pg_url)
    await conn.execute(SEED_SCHEMA)
    done_id, pending_id, dead_event = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO events (id, event_type, payload, metadata, processed, created_by) VALUES "
        "($1, 'user.verified', '{\"a\": 1}', '{\"retry_count\": 0}', true, 'svc'), "
        "($2, 'seed.pending', '{\"b\": 2}', NULL, false, 'svc')",
        done_id,
        pending_id,
    )
    await conn.execute(
        "INSERT INTO event_dead_letters (id, event_id, event_type, payload, error_message, "
        "retry_count, original_created_at) VALUES ($1, $2, 't', '{}', 'old failure', 5, now())",
        uuid.uuid4(),
        dead_event,
    )
    await conn.close()

    store = open_store(fresh_pg_url)
    await store.migrate()
    done = await store.event_get(done_id)
    assert done is not None and done.processed and done.payload == {"a": 1}
    assert done.metadata == {"retry_count": 0} and done.attempts == 0 and done.priority == 0
    [letter] = await store.dead_letter_list()
    assert letter.event_id == dead_event and letter.error_message == "old failure"

    # Rows inserted afterwards with plain SQL (seed columns only) are processed.
    conn = await asyncpg.connect(fresh_pg_url)
    plain_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO events (id, event_type, payload) VALUES ($1, 'seed.pending', '{}')", plain_id
    )
    await conn.close()
    registry = Registry()
    seen: list[uuid.UUID] = []

    @registry.handler("seed.pending")
    async def pending(event: Event, ctx: HandlerContext) -> None:
        seen.append(event.id)

    await Processor(store, registry).run(until_idle=True)
    assert sorted(seen) == sorted([pending_id, plain_id])
    await store.close()


async def test_concurrent_migrations_do_not_collide(fresh_pg_url: str) -> None:
    stores = [open_store(fresh_pg_url) for _ in range(3)]
    await asyncio.gather(*(s.migrate() for s in stores))
    for s in stores:
        await s.close()


async def test_claiming_a_bulk_loaded_row_keeps_it_on_its_page(fresh_pg_url: str) -> None:
    # With pages packed full, the claim's new row version would move to
    # another page and into every index; the migration leaves room for it.
    store = open_store(fresh_pg_url)
    await store.migrate()
    await store.event_insert_many([NewEvent("t.ok", {"pad": "x" * 100}) for _ in range(400)])
    conn = await asyncpg.connect(fresh_pg_url)
    try:
        before = dict(await conn.fetch("SELECT id, (ctid::text::point)[0] FROM events"))
        pages = len(set(before.values()))
        claimed = await store.event_claim_many("w:1", ClaimPolicy(30, False, 40))
        after = dict(
            await conn.fetch(
                "SELECT id, (ctid::text::point)[0] FROM events WHERE id = any($1::uuid[])",
                [event.id for event in claimed],
            )
        )
        options = await conn.fetchval("SELECT reloptions FROM pg_class WHERE relname = 'events'")
    finally:
        await conn.close()
        await store.close()
    assert pages > 2 and len(claimed) == 40
    assert "fillfactor=50" in options
    assert all(after[event_id] == before[event_id] for event_id in after)
