"""Migrating a busy seed table: publishers never wait long, interrupted builds resume.

Real PostgreSQL throughout; the "publisher" is a plain asyncpg connection
inserting seed-style rows, as the replaced service's publishers do.
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest

from eventproc.errors import StoreError, StoreUnavailable
from eventproc.store import Store, open_store
from eventproc.store.migrations.concurrent import LEASE_NAME
from eventproc.store.migrations.indexes import CONCURRENT_INDEXES
from eventproc.store.migrations.online import LockPolicy, upgrade_online
from eventproc.store.schema import dead_letters, events
from support.seed import SEED_INSERT, create_seed_tables
from support.waiting import eventually

PENDING_IDX = "events_pending_idx"
INDEX_STATE = "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)"


@pytest.fixture
async def admin(fresh_pg_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(fresh_pg_url)
    yield conn
    await conn.close()


@pytest.fixture
async def migrated(fresh_pg_url: str) -> AsyncIterator[Store]:
    """A store on a fully migrated database whose events_pending_idx is to be built again."""
    store = open_store(fresh_pg_url)
    await store.migrate()
    conn = await asyncpg.connect(fresh_pg_url)
    await conn.execute(f"DROP INDEX {PENDING_IDX}")
    await conn.close()
    yield store
    await store.close()


async def _timed_insert(conn: asyncpg.Connection, limit: float = 2.0) -> float:
    """Seconds one publisher INSERT took (``inf``: still waiting after ``limit``)."""
    started = time.monotonic()
    try:
        await conn.execute(SEED_INSERT, timeout=limit)
    except TimeoutError:
        return float("inf")
    return time.monotonic() - started


async def _building_pid(conn: asyncpg.Connection, index: str) -> int | None:
    return await conn.fetchval(
        "SELECT pid FROM pg_stat_progress_create_index WHERE index_relid = to_regclass($1)",
        index,
    )


async def _open_writer(url: str) -> tuple[asyncpg.Connection, asyncpg.transaction.Transaction]:
    """A transaction that has inserted into events and stays open: a concurrent
    index build waits for it (its first wait phase), with the index already
    in the catalog, INVALID."""
    writer = await asyncpg.connect(url)
    transaction = writer.transaction()
    await transaction.start()
    await writer.execute(SEED_INSERT)
    return writer, transaction


async def _invalid_and_building(admin: asyncpg.Connection) -> bool:
    return await _building_pid(admin, PENDING_IDX) is not None


def test_every_index_of_the_shared_tables_is_built_concurrently() -> None:
    # Other services write to these tables: an index on them built inside a
    # revision would hold their INSERTs for the whole build.
    declared = {index.name for index in CONCURRENT_INDEXES}
    in_schema = {str(index.name) for table in (events, dead_letters) for index in table.indexes}
    assert in_schema - declared == set(), (
        "declare these in eventproc/store/migrations/indexes.py (CONCURRENT_INDEXES) "
        "instead of creating them in a revision"
    )


async def test_an_invalid_index_left_by_a_failed_build_is_rebuilt(
    migrated: Store, admin: asyncpg.Connection
) -> None:
    # A concurrent build that fails (here a unique index over duplicates)
    # leaves the index in the catalog, INVALID: IF NOT EXISTS alone skips it.
    await admin.execute(SEED_INSERT)
    await admin.execute(SEED_INSERT)
    with pytest.raises(asyncpg.UniqueViolationError):
        await admin.execute(
            f"CREATE UNIQUE INDEX CONCURRENTLY {PENDING_IDX} ON events (event_type)"
        )
    assert await admin.fetchval(INDEX_STATE, PENDING_IDX) is False

    await migrated.migrate()

    assert await admin.fetchval(INDEX_STATE, PENDING_IDX) is True
    definition = await admin.fetchval("SELECT pg_get_indexdef(to_regclass($1))", PENDING_IDX)
    assert definition.startswith(f"CREATE INDEX {PENDING_IDX} ON public.events USING btree ")
    assert "(priority DESC, created_at, id) WHERE (NOT processed)" in definition


async def test_a_build_terminated_midway_is_finished_by_the_next_migrate(
    migrated: Store, admin: asyncpg.Connection, fresh_pg_url: str
) -> None:
    writer, transaction = await _open_writer(fresh_pg_url)
    building = asyncio.create_task(migrated.migrate())
    try:
        await eventually(lambda: _invalid_and_building(admin))
        # Publishers are not held up by the build (a plain CREATE INDEX would hold them).
        assert await _timed_insert(admin) < 0.5
        await admin.execute(
            "SELECT pg_terminate_backend($1)", await _building_pid(admin, PENDING_IDX)
        )
        with pytest.raises(StoreError):
            await building
    finally:
        await transaction.rollback()
        await writer.close()
    assert await admin.fetchval(INDEX_STATE, PENDING_IDX) is False
    assert await admin.fetchval("SELECT count(*) FROM eventproc_migration_lease") == 0

    await migrated.migrate()

    assert await admin.fetchval(INDEX_STATE, PENDING_IDX) is True


async def test_a_second_starter_waits_for_the_build_in_progress(
    migrated: Store, admin: asyncpg.Connection, fresh_pg_url: str
) -> None:
    second = open_store(fresh_pg_url)
    writer, transaction = await _open_writer(fresh_pg_url)
    first = asyncio.create_task(migrated.migrate())
    try:
        await eventually(lambda: _invalid_and_building(admin))
        waiting = asyncio.create_task(second.migrate())
        await asyncio.sleep(1.5)
        assert not waiting.done()  # the build is still blocked by the writer
        holder = await admin.fetchval(
            "SELECT holder FROM eventproc_migration_lease WHERE name = $1", LEASE_NAME
        )
        assert holder.startswith(migrated.worker_name + ":")
    finally:
        await transaction.rollback()
        await writer.close()
    await asyncio.wait_for(asyncio.gather(first, waiting), 30)
    await second.close()
    assert await admin.fetchval(INDEX_STATE, PENDING_IDX) is True


async def test_the_lease_of_a_builder_that_died_is_taken_over(
    migrated: Store, admin: asyncpg.Connection
) -> None:
    # A `migrate` killed with -9 cannot release its lease: it expires.
    await admin.execute(
        "INSERT INTO eventproc_migration_lease (name, holder, expires_at) "
        "VALUES ($1, 'dead-host:1:abc', now() + interval '1 second')",
        LEASE_NAME,
    )
    started = time.monotonic()
    await asyncio.wait_for(migrated.migrate(), 20)
    assert time.monotonic() - started >= 0.5
    assert await admin.fetchval(INDEX_STATE, PENDING_IDX) is True


async def test_two_concurrent_migrations_of_a_seed_table_both_succeed(
    fresh_pg_url: str, admin: asyncpg.Connection
) -> None:
    await create_seed_tables(admin, rows=20_000)
    stores = [open_store(fresh_pg_url) for _ in range(2)]
    try:
        await asyncio.wait_for(asyncio.gather(*(store.migrate() for store in stores)), 60)
    finally:
        for store in stores:
            await store.close()
    states = await admin.fetch(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = any($1::text[])",
        [index.name for index in CONCURRENT_INDEXES],
    )
    assert dict(states) == {index.name: True for index in CONCURRENT_INDEXES}
    assert await admin.fetchval("SELECT count(*) FROM events") == 20_000


async def test_an_alter_behind_a_long_transaction_retries_and_inserts_go_on(
    fresh_pg_url: str, admin: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    # A report query (ACCESS SHARE) holds events for 3 s. ALTER TABLE needs
    # ACCESS EXCLUSIVE; queued without a timeout it would hold every INSERT
    # arriving after it for the whole 3 s.
    await create_seed_tables(admin, rows=1_000)
    reader = await asyncpg.connect(fresh_pg_url)
    transaction = reader.transaction()
    await transaction.start()
    await reader.execute("LOCK TABLE events IN ACCESS SHARE MODE")
    store = open_store(fresh_pg_url)
    caplog.set_level(logging.INFO, logger="eventproc.store.migrations")
    started = time.monotonic()
    migrating = asyncio.create_task(store.migrate())
    try:
        latencies = []
        for _ in range(20):
            await asyncio.sleep(0.1)
            latencies.append(await _timed_insert(admin))
        assert max(latencies) < 0.5, latencies
        assert not migrating.done()
    finally:
        await transaction.commit()
        await reader.close()
    await asyncio.wait_for(migrating, 30)
    await store.close()
    assert time.monotonic() - started >= 2.0
    assert any("did not get its locks" in record.getMessage() for record in caplog.records)
    columns = await admin.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'events'"
    )
    assert {"priority", "attempts", "locked_by"} <= {row[0] for row in columns}
    assert await admin.fetchval("SELECT count(*) FROM events") == 1_020


async def test_a_migration_that_never_gets_its_lock_gives_up_with_one_clear_error(
    fresh_pg_url: str, admin: asyncpg.Connection
) -> None:
    await create_seed_tables(admin)
    await admin.execute("BEGIN; LOCK TABLE events IN ACCESS SHARE MODE")
    store = open_store(fresh_pg_url)
    try:
        with pytest.raises(StoreUnavailable, match=r"could not take its locks in \d+ attempts"):
            await upgrade_online(
                store.engine, (), holder="test", policy=LockPolicy(give_up_after=0.5)
            )
    finally:
        await admin.execute("ROLLBACK")
        await store.close()
    assert await admin.fetchval("SELECT to_regclass('eventproc_alembic_version')") is None
