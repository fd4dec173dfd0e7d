"""Shared fixtures: a real PostgreSQL database per session, a SQLite file per test.

PostgreSQL comes from EVENTPROC_TEST_DATABASE_URL (an admin URL; default
postgresql://postgres@127.0.0.1:5432/postgres). If it cannot be reached the
tests that need it FAIL: they are never skipped.

The contract suite (tests/store) and tests marked ``through_pgbouncer`` run
on a third backend, ``pgbouncer``: the same PostgreSQL database through a
real PgBouncer in transaction mode (support/pgbouncer.py), with
``?pgbouncer=true`` in the URL.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from eventproc.store import Store, open_store
from support.databases import ADMIN_URL, _dsn, drop_database, make_database
from support.pgbouncer import PgBouncer, PgBouncerError

SCRUBBED = (
    "DATABASE_URL",
    "SUPABASE_URL",
    "PORT",
    "POLL_INTERVAL_MS",
    "BATCH_SIZE",
    "MAX_RETRIES",
    "ENABLE_POLLING",
    "LOG_LEVEL",
    "NODE_ENV",
    "ENVIRONMENT",
    "CONCURRENCY",
    "LEASE_SECONDS",
    "HANDLER_TIMEOUT_SECONDS",
    "RETRY_BASE_MS",
    "RETRY_MAX_MS",
    "ORDERING",
    "AGGREGATE_FAILURE",
    "BLOCKED_AGGREGATE_MAX_AGE_SECONDS",
    "LISTEN",
    "HANDLERS",
    "API_TOKEN",
    "LOG_FORMAT",
    "HOST",
    "WORKER_ID",
    "SHUTDOWN_GRACE_SECONDS",
    "ALLOW_UNAUTHENTICATED",
    "MAX_BODY_BYTES",
    "STATS_MAX_AGE_SECONDS",
    "HANDLER_FIGURES_MAX_AGE_SECONDS",
    "TABLE_HEALTH_MAX_AGE_SECONDS",
    "PRUNE",
    "PRUNE_INTERVAL_SECONDS",
    "PRUNE_ARCHIVE",
    "RETAIN_SUCCEEDED_DAYS",
    "RETAIN_SKIPPED_DAYS",
    "RETAIN_DEAD_LETTERED_DAYS",
    "RETAIN_PARTIAL_DAYS",
    "RETAIN_ATTEMPTS_DAYS",
    "RETAIN_AUDIT_DAYS",
    "RETAIN_HANDLER_DAYS",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "POOLER",
)
BACKENDS = ["sqlite", "postgres"]
POOLED_BACKENDS = [*BACKENDS, "pgbouncer"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "through_pgbouncer: also run on the backend behind a transaction pooler"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """tests/store and tests marked through_pgbouncer run on three backends, the others two."""
    if "backend" not in metafunc.fixturenames or _parametrized_itself(metafunc):
        return
    pooled = metafunc.definition.get_closest_marker("through_pgbouncer") is not None
    pooled = pooled or metafunc.definition.path.parent.name == "store"
    metafunc.parametrize("backend", POOLED_BACKENDS if pooled else BACKENDS)


def _parametrized_itself(metafunc: pytest.Metafunc) -> bool:
    """A test that names its own backends (``@pytest.mark.parametrize("backend", ...)``)."""
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0]
        if "backend" in (names.split(",") if isinstance(names, str) else names):
            return True
    return False


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests build their own settings; the developer's environment must not leak in."""
    for name in SCRUBBED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env, no eventproc.db in the checkout


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """One migrated database for the whole session (runs Alembic every time)."""
    url = make_database("eventproc_test")

    async def migrate() -> None:
        store = open_store(url)
        try:
            await store.migrate()
        finally:
            await store.close()

    asyncio.run(migrate())
    yield url
    drop_database(url)


# Every table of eventproc's (the admin surface's included): emptied between tests.
EVENTPROC_TABLES = (
    "events",
    "event_dead_letters",
    "event_deliveries",
    "event_attempts",
    "admin_actions",
    "admin_operations",
    "admin_operation_items",
    "handler_pauses",
    "eventproc_workers",
    "handler_stats",
    "eventproc_leases",
    "events_archive",
)


async def truncate_postgres(url: str, extra_tables: tuple[str, ...] = ()) -> None:
    conn = await asyncpg.connect(_dsn(url))
    try:
        tables = ", ".join((*EVENTPROC_TABLES, *extra_tables))
        await conn.execute(f"TRUNCATE {tables} CASCADE")
    finally:
        await conn.close()


@pytest.fixture
async def pg_store(pg_url: str) -> AsyncIterator[Store]:
    await truncate_postgres(pg_url)
    store = open_store(pg_url, worker_name="test")
    yield store
    await store.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'eventproc.db'}"


@pytest.fixture
async def sqlite_store(sqlite_url: str) -> AsyncIterator[Store]:
    store = open_store(sqlite_url, worker_name="test")
    await store.migrate()
    yield store
    await store.close()


@pytest.fixture(scope="session")
def pgbouncer() -> Iterator[PgBouncer]:
    """One PgBouncer in transaction mode for the session: server connections outlive tests."""
    yield from _pooler("transaction")


@pytest.fixture(scope="session")
def session_pooler() -> Iterator[PgBouncer]:
    """A PgBouncer in session mode (Supabase's session pooler, port 5432 of the pooler host)."""
    yield from _pooler("session")


def _pooler(mode: str) -> Iterator[PgBouncer]:
    """A PgBouncer in ``mode`` in front of the test server; never skipped (fails instead)."""
    try:
        pooler = PgBouncer(ADMIN_URL, mode)
        pooler.start()
    except PgBouncerError as exc:
        pytest.fail(f"{exc} (the pooler tests are never skipped)", pytrace=False)
    try:
        yield pooler
    finally:
        pooler.stop()


@pytest.fixture
def store_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The URL of a ready (migrated, empty) database of the parametrised backend."""
    if backend in ("postgres", "pgbouncer"):
        url = str(request.getfixturevalue("pg_url"))
        asyncio.run(truncate_postgres(url))
        if backend == "pgbouncer":
            pooler: PgBouncer = request.getfixturevalue("pgbouncer")
            return pooler.url(url, pgbouncer="true")
        return url
    url = str(request.getfixturevalue("sqlite_url"))

    async def migrate() -> None:
        store = open_store(url)
        await store.migrate()
        await store.close()

    asyncio.run(migrate())
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """The contract-suite store: runs every test on SQLite and on PostgreSQL."""
    store = open_store(store_url, worker_name="test")
    yield store
    await store.close()


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """An empty PostgreSQL database of the test's own (not migrated), dropped afterwards."""
    url = make_database("eventproc_fresh")
    yield url
    drop_database(url)
