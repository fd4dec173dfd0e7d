"""SqliteStore: the embedded default. One file, WAL, serialized writers.

SQLite has no SKIP LOCKED: every write transaction here starts with BEGIN
IMMEDIATE, so claims from several processes on one file serialize instead of
overlapping (correct, just slower). This process's publishes wake it at
once; other processes' commits are noticed through ``PRAGMA data_version``.
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any, final

import aiosqlite
from sqlalchemy import ColumnElement, Insert, and_, event, func, inspect, literal, or_, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from eventproc.event import Event
from eventproc.store import queries
from eventproc.store.protocol import (
    ClaimPolicy,
    Kind,
    Lease,
    SchemaHook,
    WriteBack,
)
from eventproc.store.schema import events, metadata
from eventproc.store.sqlite_hot import HotPath
from eventproc.store.sqlstore import (
    ERROR_CHARS,
    SqlStore,
    by_outcome,
    claim_window,
    translated,
)
from eventproc.store.types import UTCDateTime

BUSY_TIMEOUT_MS = 30_000
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
DATA_VERSION_POLL_SECONDS = 0.05
TIME_FORMAT = "%Y-%m-%d %H:%M:%f"

TRIGGERS_FILE = "sqlite_triggers_v2.sql"


def aiosqlite_url(url: str) -> URL:
    parsed = make_url(url).set(drivername="sqlite+aiosqlite")
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return parsed


@final
class SqliteStore(SqlStore):
    backend = "sqlite"

    def __init__(self, url: str, *, worker_name: str = "eventproc") -> None:
        self.url = aiosqlite_url(url)
        if self.url.database in (None, "", ":memory:"):
            raise ValueError("SQLite needs a file path: sqlite:///path/to/eventproc.db")
        engine = create_async_engine(self.url, connect_args={"timeout": 30})
        _configure(engine.sync_engine, immediate=True)
        # Reads get their own pool with ordinary (deferred) transactions: in
        # WAL mode they never wait for the writer.
        reader = create_async_engine(self.url, connect_args={"timeout": 30})
        _configure(reader.sync_engine, immediate=False)
        super().__init__(engine, worker_name=worker_name, reader=reader)
        # One writer at a time in this process, queued here instead of
        # spinning in SQLite's busy handler (which sleeps up to 100 ms a try).
        self._write_lock = asyncio.Lock()
        self._hot = HotPath(str(self.url.database), PRAGMAS)
        self.url_for_display = str(self.url.database)

    @asynccontextmanager
    async def _locked_begin(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock, self.engine.begin() as connection:
            yield connection

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._locked_begin()

    async def close(self) -> None:
        await self._hot.close()
        await super().close()

    # -- hot path (see sqlite_hot) ---------------------------------------------

    @translated
    async def event_claim_many(
        self, token: str, policy: ClaimPolicy, *, completing: Sequence[WriteBack] = ()
    ) -> list[Event]:
        window = claim_window(policy.limit)
        async with self._write_lock:
            claimed = await self._hot.claim(
                token, policy, window, by_outcome(completing), self.worker_name
            )
        return await self.finish_claim(claimed, token, policy)

    @translated
    async def event_complete_many(
        self, completions: Sequence[WriteBack], *, in_order: bool = False
    ) -> int:
        async with self._write_lock:
            return await self._hot.complete(
                by_outcome(completions), self.worker_name, in_order=in_order
            )

    # -- dialect hooks -----------------------------------------------------------

    def now(self) -> ColumnElement[datetime]:
        return func.strftime(TIME_FORMAT, "now", type_=UTCDateTime())

    def later(self, seconds: float) -> ColumnElement[datetime]:
        return func.strftime(
            TIME_FORMAT, "now", literal(f"+{seconds:.3f} seconds"), type_=UTCDateTime()
        )

    def merged_metadata(self, patch: dict[str, Any]) -> ColumnElement[Any]:
        pairs: list[Any] = []
        for key, value in patch.items():
            pairs.append(literal(key))
            if isinstance(value, bool):
                pairs.append(func.json(literal("true" if value else "false")))
            elif isinstance(value, ColumnElement):
                pairs.append(value)
            else:
                pairs.append(literal(value))
        base = func.coalesce(events.c.metadata, text("'{}'"))
        return func.json_patch(base, func.json_object(*pairs))

    def fenced(self, leases: Sequence[Lease]) -> ColumnElement[bool]:
        # SQLite plans "(id, locked_by) IN (VALUES ...)" as a full scan; one
        # "locked_by = ? AND id IN (...)" per claim token uses the primary key.
        by_token: dict[str, list[uuid.UUID]] = {}
        for lease in leases:
            by_token.setdefault(lease.token, []).append(lease.event_id)
        return or_(
            *(
                and_(events.c.locked_by == token, events.c.id.in_(ids))
                for token, ids in by_token.items()
            )
        )

    @translated
    async def event_retry_many(self, failures: Sequence[WriteBack]) -> int:
        """One statement for the whole batch (see queries/sqlite.sql)."""
        if not failures:
            return 0
        rows = [
            {
                "id": str(failure.lease.event_id),
                "token": failure.lease.token,
                "delay": f"+{failure.delay_seconds:.3f} seconds",
                "error": (failure.error or "")[:ERROR_CHARS],
                "attempt": failure.attempt,
                "counted": failure.kind is Kind.RETRY,
            }
            for failure in failures
        ]
        async with self._write_lock:
            return await self._hot.write("event_retry", {"rows": json.dumps(rows)})

    @translated
    async def event_dead_letter_many(self, burials: Sequence[WriteBack]) -> int:
        """The dead letters and the closed events, one transaction for the batch."""
        if not burials:
            return 0
        rows = [
            {
                "id": str(burial.lease.event_id),
                "token": burial.lease.token,
                "error": burial.error,
                "retry_count": burial.attempt,
                "detail": burial.detail,
                "handler": burial.handler,
                "fingerprint": burial.fingerprint,
                "letter_id": str(uuid.uuid4()),
            }
            for burial in burials
        ]
        params = {"rows": json.dumps(rows), "worker": self.worker_name}
        async with self._write_lock:
            return await self._hot.write("event_dead_letter", params)

    def insert_ignoring_conflicts(self, table: Any) -> Insert:
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["id"])

    @translated
    async def migrate(self, hooks: Sequence[SchemaHook] = ()) -> None:
        """Create what is missing: tables, columns added since, indexes, triggers.

        A file written by an earlier release gets the new (nullable) columns
        with ``ALTER TABLE ... ADD COLUMN`` before the indexes that use them.
        """
        async with self.begin() as conn:
            await conn.run_sync(_add_missing_columns)
            await conn.run_sync(metadata.create_all)
            for statement in _sqlite_statements(TRIGGERS_FILE):
                await conn.exec_driver_sql(statement)
            await conn.exec_driver_sql("UPDATE events SET processed = 0 WHERE processed IS NULL")
            for hook in hooks:
                await hook(conn)

    async def listen(self, on_wake: Callable[[], None]) -> None:
        """Wake on commits by other processes, seen through ``PRAGMA data_version``.

        SQLite has no NOTIFY. ``data_version`` changes whenever another
        connection commits to the file, and reading it costs no I/O, so a
        dedicated connection checks it every ``DATA_VERSION_POLL_SECONDS``:
        another process's publish is noticed within that time instead of the
        next ``POLL_INTERVAL_MS``. (This process's own commits also change it,
        which costs at most one spare claim per check.)
        """
        database = str(self.url.database)
        while True:
            try:
                async with aiosqlite.connect(database, isolation_level=None) as connection:
                    await connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                    seen = await _data_version(connection)
                    while True:
                        await asyncio.sleep(DATA_VERSION_POLL_SECONDS)
                        version = await _data_version(connection)
                        if version != seen:
                            seen = version
                            on_wake()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep watching; the poll interval still covers us
                await asyncio.sleep(1.0)


def _add_missing_columns(connection: Any) -> None:
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in present:
            continue  # create_all makes it whole
        have = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable and column.server_default is None:
                raise RuntimeError(f"cannot add NOT NULL column {table.name}.{column.name}")
            kind = column.type.compile(dialect=connection.dialect)
            connection.exec_driver_sql(
                f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'
            )


def _sqlite_statements(name: str) -> list[str]:
    """The statements of ``store/sql/<name>`` (a trigger file)."""
    source = resources.files("eventproc.store").joinpath("sql", name).read_text("utf-8")
    return queries.sqlite_statements(source)


async def _data_version(connection: aiosqlite.Connection) -> int:
    async with connection.execute("PRAGMA data_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


def _configure(sync_engine: Any, *, immediate: bool) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" below issue BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in PRAGMAS:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Writers take the write lock up front: a deferred transaction that
        # later writes can fail with SQLITE_BUSY without waiting.
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
