"""PostgreSQL claims and completions run on raw connections kept apart from the pool."""

import asyncio

import asyncpg
import pytest
from sqlalchemy import text

from eventproc.errors import StoreUnavailable
from eventproc.event import NewEvent
from eventproc.store import ClaimPolicy, Lease, Store, WriteBack
from eventproc.store.postgres.driver import PostgresDriver
from support.waiting import eventually

POLICY = ClaimPolicy(lease_seconds=30, ordered=False, limit=5)


async def test_a_killed_claim_connection_is_replaced(pg_store: Store, pg_url: str) -> None:
    await pg_store.event_insert_many([NewEvent("t", {"n": n}) for n in range(10)])
    first = await pg_store.event_claim_many("w:1", POLICY)
    admin = await asyncpg.connect(pg_url)
    try:
        # Every other session of this database, the idle claim connection included.
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert killed >= 1

        async def others_gone() -> bool:
            return not await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )

        await eventually(others_gone)
    finally:
        await admin.close()
    failures = 0
    while True:
        try:
            second = await pg_store.event_claim_many("w:2", POLICY)
            break
        except StoreUnavailable:  # a dead connection was tried: dropped, not kept
            failures += 1
            assert failures <= pg_store.driver.footprint.hot, (
                "dead connections went back to the idle list"
            )
    assert {e.id for e in first}.isdisjoint(e.id for e in second) and len(second) == 5
    done = [WriteBack.succeeded(Lease.of(event)) for event in first + second]
    assert await pg_store.event_write_back(done) == 10


async def test_claims_reuse_a_few_connections(pg_store: Store, pg_url: str) -> None:
    await pg_store.event_insert_many([NewEvent("t", {"n": n}) for n in range(100)])
    for n in range(20):
        claimed = await pg_store.event_claim_many(f"w:{n}", POLICY)
        await pg_store.event_write_back([WriteBack.succeeded(Lease.of(e)) for e in claimed])
    admin = await asyncpg.connect(pg_url)
    try:
        sessions = await admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    # The pool's own connections (publishing) plus at most the hot ones.
    assert sessions <= pg_store.driver.footprint.hot + 2


@pytest.mark.parametrize("async_commit", [True, False])
async def test_only_the_hot_path_commits_asynchronously(pg_url: str, async_commit: bool) -> None:
    store = Store(PostgresDriver(pg_url, worker_name="test", async_commit=async_commit))
    try:
        async with store.driver._connection() as hot:
            hot_setting = await hot.fetchval("SHOW synchronous_commit")
        async with store.begin() as conn:
            pooled = (await conn.execute(text("SHOW synchronous_commit"))).scalar_one()
    finally:
        await store.close()
    assert hot_setting == ("off" if async_commit else "on")
    assert pooled == "on"  # transactional handlers, retries, dead letters


async def test_sqlalchemy_only_url_options_do_not_reach_the_driver(pg_url: str) -> None:
    # PgBouncer users put prepared_statement_cache_size=0 in the URL for SQLAlchemy.
    url = pg_url + ("&" if "?" in pg_url else "?") + "prepared_statement_cache_size=0"
    store = Store(PostgresDriver(url, worker_name="test"))
    try:
        await store.migrate()
        await store.event_insert_many([NewEvent("t", {})])
        [claimed] = await store.event_claim_many("w:1", POLICY)
        assert await store.event_write_back([WriteBack.succeeded(Lease.of(claimed))]) == 1
    finally:
        await store.close()


async def test_a_read_cut_short_by_a_timeout_stops_on_the_server(
    pg_store: Store, pg_url: str
) -> None:
    """The admin lists' 5 s bound (store/admin/events.py) is an asyncio timeout around
    read_sql: the statement must end on the server too, not run on, holding a core."""
    driver = pg_store.driver
    assert isinstance(driver, PostgresDriver)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await driver.read_sql("SELECT pg_sleep(30), $1::int", [7])
    admin = await asyncpg.connect(pg_url)
    try:

        async def stopped() -> bool:
            return not await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                "AND query LIKE 'SELECT pg_sleep(30)%'"
            )

        await eventually(stopped, within=3)
    finally:
        await admin.close()
    # The pool hands out a working connection afterwards.
    assert [tuple(r) for r in await driver.read_sql("SELECT $1::int", [5])] == [(5,)]
