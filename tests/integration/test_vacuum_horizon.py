"""What holds vacuum back besides a running transaction: a prepared one and a replication slot.

The shared server allows neither (max_prepared_transactions = 0, wal_level =
replica), so this test makes a throwaway cluster of its own with both on
(the chaos suite's, bench/chaos/chaos_cluster.py), and checks that table
health reports each while it exists and stops when it goes.
"""

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from eventproc.store import open_store, table_health

CHAOS_DIR = Path(__file__).resolve().parents[2] / "bench" / "chaos"
if str(CHAOS_DIR) not in sys.path:
    sys.path.insert(0, str(CHAOS_DIR))

from chaos_cluster import ThrowawayCluster  # noqa: E402


@pytest.fixture
def cluster() -> Iterator[ThrowawayCluster]:
    server = ThrowawayCluster(database="postgres")
    server.create()
    with (server.data / "postgresql.conf").open("a") as conf:
        conf.write("max_prepared_transactions = 5\nwal_level = logical\n")
    try:
        server.start()
        yield server
    finally:
        server.destroy()


async def _reading(url: str, *, migrate: bool = False) -> table_health.TableHealth:
    store = open_store(url, worker_name="test")
    try:
        if migrate:  # before anything holds vacuum back: concurrent index builds wait for it
            await store.migrate()
        return await table_health.read(store.driver)
    finally:
        await store.close()


@pytest.mark.timeout(60)
async def test_a_prepared_transaction_and_a_slot_are_reported(cluster: ThrowawayCluster) -> None:
    url = cluster.url("postgres")
    before = await _reading(url, migrate=True)
    assert before.oldest_xact_age_seconds is None and before.slot_xmin_age_xids is None
    conn = await asyncpg.connect(url)
    try:
        # The slot first: creating one waits for every transaction in progress.
        await conn.fetchval("SELECT pg_create_logical_replication_slot('held', 'test_decoding')")
        await conn.execute("CREATE TABLE scratch (n int)")  # events' insert NOTIFYs: not this
        await conn.execute("BEGIN")
        await conn.execute("INSERT INTO scratch VALUES (1)")
        await conn.execute("PREPARE TRANSACTION 'held_back'")  # outlives its session
        for _ in range(5):  # transaction ids go by: the slot's catalog_xmin ages
            await conn.execute("SELECT txid_current()")
        await asyncio.sleep(1.2)
        held = await _reading(url)
        assert held.oldest_xact_age_seconds is not None and held.oldest_xact_age_seconds >= 1.0
        assert held.slot_xmin_age_xids is not None and held.slot_xmin_age_xids >= 5
        await conn.execute("COMMIT PREPARED 'held_back'")
        await conn.fetchval("SELECT pg_drop_replication_slot('held')")
    finally:
        await conn.close()
    after = await _reading(url)
    assert after.oldest_xact_age_seconds is None and after.slot_xmin_age_xids is None
