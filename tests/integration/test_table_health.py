"""Table health against the database's own statistics; the endpoint, /health and /metrics."""

import asyncio
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from alembic import command
from sqlalchemy import Connection, delete, insert

from eventproc.config import Settings
from eventproc.http import create_app
from eventproc.runtime import Runtime
from eventproc.store import open_store, table_health
from eventproc.store.migrations import alembic_config
from eventproc.store.schema import events, events_archive, leases
from support.admin_api import TOKENS, admin_registry
from support.databases import _dsn
from support.served import serving

HOT = ("events", "event_deliveries", "event_attempts")


def _rows(count: int, *, days_ago: float = 0) -> list[dict[str, Any]]:
    at = datetime.now(UTC) - timedelta(days=days_ago)
    return [
        {
            "id": uuid.uuid4(),
            "event_type": "health.test",
            "payload": {"n": n},
            "processed": True,
            "outcome": "succeeded",
            "processed_at": at,
            "created_at": at,
        }
        for n in range(count)
    ]


@pytest.fixture
async def runtime(store_url: str) -> AsyncIterator[Runtime]:
    settings = Settings(
        database_url=store_url,
        poll_interval_ms=60_000,
        api_tokens=",".join(f"{role}:{token}" for role, token in TOKENS.items()),
        stats_max_age_seconds=0,
        table_health_max_age_seconds=0,
        prune=True,
    )
    runtime = Runtime(settings, registry=admin_registry())
    await runtime.prepare(attempts=1)
    async with runtime.store.engine.begin() as conn:
        await conn.execute(delete(leases))
        await conn.execute(delete(events_archive))
    yield runtime
    await runtime.store.close()


@pytest.mark.parametrize("backend", ["postgres"])
async def test_postgres_figures_match_its_statistics(runtime: Runtime, store_url: str) -> None:
    store = runtime.store
    async with store.engine.begin() as conn:
        await conn.execute(insert(events), _rows(300))
        await conn.execute(delete(events).where(events.c.payload["n"].as_integer() < 100))
    raw = await asyncpg.connect(_dsn(store_url))
    try:
        await raw.execute("ANALYZE events")
        query = (
            "SELECT relname, n_live_tup, n_dead_tup, pg_total_relation_size(relid) "
            "FROM pg_stat_user_tables WHERE relname = ANY($1::text[])"
        )
        for _ in range(20):  # the counters settle within about a second of the writes
            before = {r[0]: tuple(r[1:]) for r in await raw.fetch(query, list(HOT))}
            health = await table_health.read(store.driver)
            after = {r[0]: tuple(r[1:]) for r in await raw.fetch(query, list(HOT))}
            if before == after:
                break
            await asyncio.sleep(0.2)
    finally:
        await raw.close()
    found = {t.table: t for t in health.tables}
    for name in HOT:
        live, dead, size = after[name]
        assert (found[name].rows, found[name].dead_tuples, found[name].bytes) == (live, dead, size)
    # At least the 100 deleted: an earlier test's backend on this database may
    # flush its own counts of dead rows after the fixture's TRUNCATE (PostgreSQL
    # sends a backend's table counters on at most once a second).
    assert found["events"].rows == 200 and found["events"].dead_tuples >= 100
    assert found["events"].last_autoanalyze is None or found["events"].last_autoanalyze.tzinfo
    assert health.claim_seconds > 0 and health.file_bytes is None


@pytest.mark.parametrize("backend", ["postgres"])
async def test_oldest_transaction_holding_vacuum_back(runtime: Runtime, store_url: str) -> None:
    holder = await asyncpg.connect(_dsn(store_url))
    try:
        none_yet = await table_health.read(runtime.store.driver)
        assert none_yet.oldest_xact_age_seconds is None or none_yet.oldest_xact_age_seconds < 5
        transaction = holder.transaction(isolation="repeatable_read")
        await transaction.start()
        await holder.fetchval("SELECT count(*) FROM events")  # takes a snapshot (backend_xmin)
        await asyncio.sleep(1.5)
        health = await table_health.read(runtime.store.driver)
        own = await holder.fetchval(
            "SELECT extract(epoch FROM now() - xact_start) FROM pg_stat_activity "
            "WHERE pid = pg_backend_pid()"
        )
        assert health.oldest_xact_age_seconds is not None
        assert 1.4 <= health.oldest_xact_age_seconds <= float(own) + 5
        await transaction.rollback()
        await asyncio.sleep(0.1)
        after = await table_health.read(runtime.store.driver)
        assert after.oldest_xact_age_seconds is None or after.oldest_xact_age_seconds < 1.4
    finally:
        await holder.close()


def file_size(path: Path) -> int:
    return path.stat().st_size


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sqlite_figures_match_its_pragmas(runtime: Runtime) -> None:
    store = runtime.store
    async with store.engine.begin() as conn:
        await conn.execute(insert(events), _rows(120))
    health = await table_health.read(store.driver)
    path = Path(store.driver.url_for_display)
    with sqlite3.connect(path) as raw:
        pages = raw.execute("PRAGMA page_count").fetchone()[0]
        free = raw.execute("PRAGMA freelist_count").fetchone()[0]
        counted = raw.execute("SELECT count(*) FROM events").fetchone()[0]
    found = {t.table: t for t in health.tables}
    assert found["events"].rows == counted == 120
    assert found["events"].bytes is None and found["events"].dead_tuples is None
    assert (health.page_count, health.freelist_pages) == (pages, free)
    assert health.file_bytes == file_size(path)
    assert health.oldest_xact_age_seconds is None and health.claim_seconds > 0


async def analyze(runtime: Runtime) -> None:
    """PostgreSQL's n_live_tup follows writes within a second or so; ANALYZE sets it now."""
    if runtime.backend == "postgresql":
        async with runtime.store.engine.begin() as conn:
            await conn.exec_driver_sql("ANALYZE events")


async def test_endpoint_health_and_metrics(runtime: Runtime) -> None:
    async with runtime.store.engine.begin() as conn:
        await conn.execute(insert(events), _rows(5, days_ago=10))
    await analyze(runtime)
    headers = {"Authorization": f"Bearer {TOKENS['viewer']}"}
    async with (
        serving(create_app(runtime)) as url,
        httpx.AsyncClient(base_url=url, timeout=10) as anonymous,
        httpx.AsyncClient(base_url=url, timeout=10, headers=headers) as viewer,
    ):
        assert (await anonymous.get("/admin/v1/tables")).status_code == 401
        before = (await viewer.get("/admin/v1/tables")).json()
        assert before["pruning"] is True and before["prune_lag_seconds"] is None
        assert {t["table"] for t in before["tables"]} >= set(HOT)
        assert {t["table"]: t["rows"] for t in before["tables"]}["events"] == 5
        assert (await viewer.get("/admin/v1/tables?x=1")).status_code == 422
        assert (await runtime.pruner.run_pass()) is not None
        await analyze(runtime)
        after = (await viewer.get("/admin/v1/tables")).json()
        health = (await viewer.get("/health")).json()
        metrics = (await viewer.get("/metrics")).text
    assert {t["table"]: t["rows"] for t in after["tables"]}["events"] == 0
    assert after["prune_lag_seconds"] is not None and after["prune_lag_seconds"] < 30
    assert after["prune_last_success_at"] is not None
    assert (after["sqlite"] is None) == (runtime.backend == "postgresql")
    assert health["tables"]["rows"]["events"] == 0 and health["tables"]["pruning"] is True
    assert 'eventproc_table_rows{table="events"} 0.0' in metrics
    assert 'eventproc_pruned_rows_total{table="events"} 5.0' in metrics
    assert "eventproc_prune_lag_seconds" in metrics and "eventproc_claim_seconds" in metrics
    assert "eventproc_prune_last_success_timestamp_seconds" in metrics
    if runtime.backend == "postgresql":
        assert 'eventproc_table_dead_tuples{table="events"}' in metrics
        assert "eventproc_oldest_xact_age_seconds" in metrics
    else:
        assert "eventproc_sqlite_freelist_pages" in metrics


def _reloptions(url: str) -> dict[str, list[str] | None]:
    async def read() -> dict[str, list[str] | None]:
        conn = await asyncpg.connect(_dsn(url))
        try:
            rows = await conn.fetch(
                "SELECT relname, reloptions FROM pg_class WHERE relname = ANY($1::text[])",
                list(HOT),
            )
        finally:
            await conn.close()
        return {row[0]: row[1] for row in rows}

    return asyncio.run(read())


def test_migration_sets_and_resets_autovacuum(fresh_pg_url: str) -> None:
    async def migrate() -> None:
        store = open_store(fresh_pg_url)
        await store.migrate()
        await store.migrate()  # idempotent
        await store.close()

    asyncio.run(migrate())
    for options in _reloptions(fresh_pg_url).values():
        assert options is not None
        assert "autovacuum_vacuum_scale_factor=0.02" in options
        assert "autovacuum_vacuum_insert_scale_factor=0.05" in options
        assert "autovacuum_analyze_scale_factor=0.02" in options

    async def downgrade() -> None:
        store = open_store(fresh_pg_url)

        def run(connection: Connection) -> None:
            command.downgrade(alembic_config(connection), "0007")

        async with store.engine.begin() as conn:
            await conn.run_sync(run)
        await store.close()

    asyncio.run(downgrade())
    left = _reloptions(fresh_pg_url)
    assert all(not any("autovacuum" in o for o in options or ()) for options in left.values())
    assert left["events"] == ["fillfactor=50"]  # 0003's setting stays
