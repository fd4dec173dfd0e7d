"""Regression guard, not a timing test: database requests per processed event stay batched.

Claims and completions bypass SQLAlchemy on both backends (raw asyncpg, a raw
sqlite3 connection), so the count is taken below every driver: on
PostgreSQL the server's ReadyForQuery messages, seen by a proxy on the wire;
on SQLite sqlite3's trace hook on every connection the store writes with.
"""

import sqlite3
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy.engine import make_url

from eventproc import Event, HandlerContext, NewEvent, Registry
from eventproc.engine import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.store import Store, open_store
from support.proxy import Proxy

EVENTS = 1000
# Claims and completions are batched (BATCH_SIZE=20 here): about one claim and
# one completion per 20 events. A per-event request would be >= 1.
MAX_REQUESTS_PER_EVENT = 0.15


def noop_registry() -> Registry:
    registry = Registry()

    @registry.handler("t.noop")
    async def noop(event: Event, ctx: HandlerContext) -> None:
        return None

    return registry


async def drain(store: Store) -> Processor:
    processor = Processor(
        store, noop_registry(), ProcessorConfig(batch_size=20, concurrency=50, ordered=True)
    )
    await processor.run(until_idle=True)
    return processor


async def test_postgres_round_trips_per_event_stay_batched(pg_store: Store, pg_url: str) -> None:
    await pg_store.event_insert_many([NewEvent("t.noop", {"n": n}) for n in range(EVENTS)])
    url = make_url(pg_url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = url.set(port=proxy.port).update_query_dict({"sslmode": "disable"})
    store = open_store(proxied.render_as_string(hide_password=False))
    try:
        await store.ping()
        before = proxy.round_trips
        processor = await drain(store)
        round_trips = proxy.round_trips - before
    finally:
        await store.close()
        await proxy.cut()
    assert processor.stats.success_count == EVENTS
    assert round_trips > 0  # the proxy saw the drain
    assert round_trips / EVENTS <= MAX_REQUESTS_PER_EVENT, round_trips


async def test_sqlite_requests_per_event_stay_batched(sqlite_store: Store) -> None:
    await sqlite_store.event_insert_many([NewEvent("t.noop", {"n": n}) for n in range(EVENTS)])
    requests: list[str] = []

    # The hot path's own connection runs one transaction per call. sqlite3's
    # trace also fires for each row a trigger looks at, so its transactions
    # are counted, not its statements.
    def on_hot_path(statement: str) -> None:
        if statement.startswith("BEGIN"):
            requests.append("hot path transaction")

    def trace(connection: sqlite3.Connection) -> None:
        connection.set_trace_callback(on_hot_path)

    def through_sqlalchemy(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.startswith(("BEGIN", "COMMIT", "ROLLBACK")):
            requests.append(statement.split(None, 1)[0])

    await sqlite_store.driver._writer._run(trace)  # type: ignore[attr-defined]
    requests.clear()
    sa_event.listen(sqlite_store.engine.sync_engine, "before_cursor_execute", through_sqlalchemy)
    try:
        processor = await drain(sqlite_store)
    finally:
        sa_event.remove(
            sqlite_store.engine.sync_engine, "before_cursor_execute", through_sqlalchemy
        )
    assert processor.stats.success_count == EVENTS
    assert requests.count("hot path transaction") >= EVENTS / 20  # at least the claims
    assert len(requests) / EVENTS <= MAX_REQUESTS_PER_EVENT, requests[:20]
