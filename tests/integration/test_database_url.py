"""libpq URL parameters take effect on a real PostgreSQL, on every kind of connection.

The pool (SQLAlchemy), the hot path (raw asyncpg) and the LISTEN connection
each get their arguments from the parsed URL; these tests look at each one
from the server's side (pg_stat_activity, SHOW) or at its socket.
"""

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from sqlalchemy import text

from eventproc.engine import Processor
from eventproc.errors import StoreError
from eventproc.event import Event, NewEvent
from eventproc.handler import HandlerContext
from eventproc.processor_config import ProcessorConfig
from eventproc.registry import Registry
from eventproc.store import ClaimPolicy, Store, open_store
from eventproc.store.postgres.driver import PostgresDriver
from eventproc.store.postgres.url import ConnectionKind, Pooler
from support.waiting import eventually

POLICY = ClaimPolicy(lease_seconds=30, ordered=False, limit=5)


def with_query(url: str, query: str) -> str:
    return url + ("&" if "?" in url else "?") + query


@contextlib.asynccontextmanager
async def listening(store: Store) -> AsyncIterator[asyncio.Event]:
    """The store's LISTEN connection, running; the event is set at each wake-up."""
    woken = asyncio.Event()
    task = asyncio.create_task(store.listen(woken.set))
    try:
        await asyncio.wait_for(woken.wait(), 10)  # set once connected
        yield woken
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def sessions_named(admin_url: str, name: str) -> list[asyncpg.Record]:
    admin = await asyncpg.connect(admin_url)
    try:
        return list(
            await admin.fetch(
                "SELECT pid, query FROM pg_stat_activity WHERE application_name = $1", name
            )
        )
    finally:
        await admin.close()


async def test_application_name_names_pool_hot_path_and_listener(
    pg_store: Store, pg_url: str
) -> None:
    name = f"ep-{uuid.uuid4().hex[:8]}"
    store = Store(PostgresDriver(with_query(pg_url, f"application_name={name}"), worker_name="t"))
    try:
        async with store.begin() as conn:
            pooled = (await conn.execute(text("SHOW application_name"))).scalar_one()
        async with store.driver._connection() as hot:
            hot_name = await hot.fetchval("SHOW application_name")
        async with listening(store):
            sessions = await sessions_named(pg_url, name)
    finally:
        await store.close()
    assert pooled == name and hot_name == name
    assert any(row["query"].startswith("LISTEN") for row in sessions), sessions
    assert len(sessions) >= 3  # pool, hot path, listener


async def test_connections_are_named_eventproc_by_default(pg_store: Store, pg_url: str) -> None:
    async with pg_store.driver._connection() as hot:  # type: ignore[attr-defined]
        assert await hot.fetchval("SHOW application_name") == "eventproc"


async def test_options_settings_apply_to_every_connection(pg_store: Store, pg_url: str) -> None:
    name = f"ep-{uuid.uuid4().hex[:8]}"
    options = "options=-c%20statement_timeout%3D4321ms%20-c%20application_name%3D" + name
    store = Store(PostgresDriver(with_query(pg_url, options), worker_name="t", async_commit=True))
    try:
        async with store.begin() as conn:
            pooled = (await conn.execute(text("SHOW statement_timeout"))).scalar_one()
            plan = (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one()
        async with store.driver._connection() as hot:
            hot_timeout = await hot.fetchval("SHOW statement_timeout")
            hot_commit = await hot.fetchval("SHOW synchronous_commit")
        async with listening(store):
            # The listener's name comes from options too: its settings were sent.
            listener = [r for r in await sessions_named(pg_url, name) if "LISTEN" in r["query"]]
    finally:
        await store.close()
    assert pooled == "4321ms" and hot_timeout == "4321ms"
    assert plan == "force_custom_plan" and hot_commit == "off"  # eventproc's own, kept
    assert len(listener) == 1


async def test_connect_timeout_bounds_a_connect_that_gets_no_answer(pg_url: str) -> None:
    # A server that accepts TCP connections and never says a word (a blackhole
    # past the handshake): only the timeout ends the wait.
    accepted: list[asyncio.StreamWriter] = []

    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    silent = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    store = open_store(f"postgresql://postgres@127.0.0.1:{port}/x?connect_timeout=2")
    started = time.monotonic()
    try:
        with pytest.raises(StoreError):
            await asyncio.wait_for(store.ping(), 30)
    finally:
        elapsed = time.monotonic() - started
        await store.close()
        for writer in accepted:
            writer.close()
        silent.close()
        await silent.wait_closed()
    assert accepted  # the connect got as far as the server
    assert 1.5 <= elapsed < 6, elapsed


def _socket_of(connection: asyncpg.Connection) -> socket.socket:
    sock: socket.socket = connection._transport.get_extra_info("socket")
    return sock


async def test_keepalive_parameters_are_set_on_the_sockets(pg_url: str) -> None:
    url = with_query(pg_url, "keepalives_idle=37&keepalives_interval=7&keepalives_count=4")
    store = Store(PostgresDriver(url, worker_name="t"))
    try:
        async with store.driver._connection() as hot:
            hot_socket = _socket_of(hot)
            hot_options = (
                hot_socket.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
                hot_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
                hot_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
                hot_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            )
        async with store.begin() as conn:
            raw = await conn.get_raw_connection()
            pooled_socket = _socket_of(raw.driver_connection)  # type: ignore[arg-type]
            pooled_idle = pooled_socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
    finally:
        await store.close()
    assert hot_options[0] != 0 and hot_options[1:] == (37, 7, 4)
    assert pooled_idle == 37

    listen_args = Store(PostgresDriver(pg_url, worker_name="t")).driver._listen_connect_args
    off = Store(PostgresDriver(with_query(pg_url, "keepalives=0"), worker_name="t"))
    try:
        async with off.driver._connection() as hot:
            assert _socket_of(hot).getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
    finally:
        await off.close()
    listener = await asyncpg.connect(**listen_args)
    try:
        assert _socket_of(listener).getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
    finally:
        await listener.close()


async def test_target_session_attrs_is_honoured(pg_url: str) -> None:
    primary = open_store(with_query(pg_url, "target_session_attrs=read-write"))
    try:
        await primary.ping()
    finally:
        await primary.close()
    standby = open_store(with_query(pg_url, "target_session_attrs=standby&connect_timeout=3"))
    try:
        with pytest.raises(StoreError, match="standby"):
            await standby.ping()
    finally:
        await standby.close()


async def test_sslmode_reaches_every_connection(pg_url: str) -> None:
    # The test server has ssl=off: require must fail on each kind, disable must work.
    required = Store(PostgresDriver(with_query(pg_url, "sslmode=require"), worker_name="t"))
    try:
        with pytest.raises(StoreError):
            await required.ping()
        with pytest.raises(StoreError):
            async with required.driver._connection():
                pass
        with pytest.raises((ConnectionError, OSError, asyncpg.PostgresError)):
            await asyncpg.connect(**required.driver._listen_connect_args)
    finally:
        await required.close()
    disabled = Store(PostgresDriver(with_query(pg_url, "sslmode=disable"), worker_name="t"))
    try:
        await disabled.ping()
        assert disabled.driver.target.driver_args(ConnectionKind.LISTEN)["dsn"].endswith(
            "sslmode=disable"
        )
    finally:
        await disabled.close()


async def test_pgbouncer_and_cache_options_work_end_to_end(pg_store: Store, pg_url: str) -> None:
    """Issue 13's URL options: typed, and none of them reaches the LISTEN connection."""
    url = with_query(
        pg_url, "pgbouncer=true&statement_cache_size=0&prepared_statement_cache_size=0"
    )
    store = Store(PostgresDriver(url, worker_name="t"))
    registry = Registry()
    done = asyncio.Event()

    @registry.handler("t.ping")
    async def ping(event: Event, ctx: HandlerContext) -> None:
        done.set()

    processor = Processor(store, registry, ProcessorConfig(poll_interval_ms=3_600_000))
    task = asyncio.create_task(processor.run())
    try:
        async with store.driver._connection() as hot:
            assert hot._stmt_cache.get_max_size() == 0
        await asyncio.sleep(0.5)  # the listener connects
        await pg_store.event_insert_many([NewEvent("t.ping", {})])  # another engine: NOTIFY only
        await asyncio.wait_for(done.wait(), 10)  # woken by NOTIFY, claimed on the hot path

        async def completed() -> bool:  # written back on the hot path too
            return processor.stats.success_count == 1

        await eventually(completed)
        async with store.begin() as conn:  # and the pool works with its cache off
            assert (await conn.execute(text("SELECT count(*) FROM events"))).scalar_one() == 1
    finally:
        processor.stop()
        await task
        await store.close()
    assert store.driver.target.pooler is Pooler.TRANSACTION


async def test_listener_reconnects_with_the_same_arguments(pg_url: str) -> None:
    """A killed listener comes back with its application_name (its arguments are kept)."""
    name = f"ep-{uuid.uuid4().hex[:8]}"
    store = Store(PostgresDriver(with_query(pg_url, f"application_name={name}"), worker_name="t"))
    try:
        async with listening(store) as woken:
            [first] = [r for r in await sessions_named(pg_url, name) if "LISTEN" in r["query"]]
            woken.clear()
            admin = await asyncpg.connect(pg_url)
            try:
                await admin.execute("SELECT pg_terminate_backend($1)", first["pid"])
            finally:
                await admin.close()
            await asyncio.wait_for(woken.wait(), 15)  # reconnected

            async def back() -> bool:
                rows = await sessions_named(pg_url, name)
                return any("LISTEN" in r["query"] and r["pid"] != first["pid"] for r in rows)

            await eventually(back)
    finally:
        await store.close()
