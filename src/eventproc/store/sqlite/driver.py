"""SqliteDriver: the embedded default. One file, WAL, serialized writers.

SQLite has no SKIP LOCKED: every write transaction here starts with BEGIN
IMMEDIATE, so claims from several processes on one file serialize instead of
overlapping (correct, just slower). This process's publishes wake it at
once; other processes' commits are noticed through ``PRAGMA data_version``.
"""

import asyncio
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, final

import aiosqlite
from sqlalchemy import ColumnElement, event, func
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from eventproc.event import Event
from eventproc.store import queries
from eventproc.store.driver import Row
from eventproc.store.errors import translating
from eventproc.store.protocol import SchemaHook, WakeUps
from eventproc.store.rows import event_from_returned
from eventproc.store.sqlite.schema import create_schema
from eventproc.store.sqlite.writer import Statement, Writer
from eventproc.store.types import UTCDateTime, sqlite_time

BUSY_TIMEOUT_MS = 30_000
PRAGMAS = (
    # First, before any table exists: a new file gives pruned pages back to the file
    # system (the pruner's incremental_vacuum). On an older file it changes nothing.
    "PRAGMA auto_vacuum=INCREMENTAL",
    "PRAGMA journal_mode=WAL",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
)
DATA_VERSION_POLL_SECONDS = 0.05
WATCHING = (
    "SQLite: other processes' commits seen in PRAGMA data_version every "
    f"{DATA_VERSION_POLL_SECONDS * 1000:g} ms"
)
TIME_FORMAT = "%Y-%m-%d %H:%M:%f"

_PARAMETER = re.compile(r"\?(\d+)")


def _statements(text: str) -> tuple[Statement, ...]:
    """A named query's statements, each with the number of arguments it binds.

    sqlite3 wants exactly as many arguments as a statement's highest ``?N``.
    """
    return tuple(
        (statement, max((int(n) for n in _PARAMETER.findall(statement)), default=0))
        for statement in queries.sqlite_statements(text)
    )


# Split once, at import: a named query may be several statements here.
STATEMENTS = {name: _statements(text) for name, text in queries.load("sqlite").items()}


def aiosqlite_url(url: str) -> URL:
    parsed = make_url(url).set(drivername="sqlite+aiosqlite")
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return parsed


@final
class SqliteDriver:
    backend: queries.Backend = "sqlite"

    def __init__(self, url: str) -> None:
        self.url = aiosqlite_url(url)
        if self.url.database in (None, "", ":memory:"):
            raise ValueError("SQLite needs a file path: sqlite:///path/to/eventproc.db")
        self.engine = create_async_engine(self.url, connect_args={"timeout": 30})
        _configure(self.engine.sync_engine, immediate=True)
        # Reads get their own pool with ordinary (deferred) transactions: in
        # WAL mode they never wait for the writer.
        self.reader = create_async_engine(self.url, connect_args={"timeout": 30})
        _configure(self.reader.sync_engine, immediate=False)
        self.read_transaction = self.reader
        # One writer at a time in this process, queued here instead of
        # spinning in SQLite's busy handler (which sleeps up to 100 ms a try).
        self._write_lock = asyncio.Lock()
        self._writer = Writer(str(self.url.database), PRAGMAS)
        self.url_for_display = str(self.url.database)

    def now(self) -> ColumnElement[datetime]:
        return func.strftime(TIME_FORMAT, "now", type_=UTCDateTime())

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self._locked_begin()

    @asynccontextmanager
    async def _locked_begin(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock, self.engine.begin() as connection:
            yield connection

    def event(self, row: Row) -> Event:
        return event_from_returned(row)

    async def fetch(self, name: str, args: Sequence[Any], *, durable: bool = False) -> list[Row]:
        # WAL with synchronous=NORMAL already makes the trade ASYNC_COMMIT
        # makes on PostgreSQL, for every commit: nothing more to do for durable.
        async with self._write_lock:
            return await self._writer.fetch(STATEMENTS[name], _encoded(args))

    async def run(self, conn: AsyncConnection, name: str, args: Sequence[Any]) -> list[Row]:
        values = _encoded(args)
        rows: list[Row] = []
        for text, arity in STATEMENTS[name]:
            result = await conn.exec_driver_sql(text, tuple(values[:arity]))
            if result.returns_rows:
                rows += result.all()
        return rows

    async def read(self, name: str, args: Sequence[Any]) -> list[Row]:
        # The reader's pool: WAL readers never wait for the writer (nor take its lock).
        async with translating(), self.reader.connect() as conn:
            return await self.run(conn, name, args)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        await self._writer.close()
        await self.engine.dispose()
        await self.reader.dispose()

    async def migrate(self, hooks: Sequence[SchemaHook]) -> None:
        async with self.begin() as conn:
            await create_schema(conn)
            for hook in hooks:
                await hook(conn)

    async def listen(self, on_wake: Callable[[], None], wake_ups: WakeUps) -> None:
        """Wake on commits by other processes, seen through ``PRAGMA data_version``.

        SQLite has no NOTIFY. ``data_version`` changes whenever another
        connection commits to the file, and reading it costs no I/O, so a
        dedicated connection checks it every ``DATA_VERSION_POLL_SECONDS``:
        another process's publish is noticed within that time instead of the
        next ``POLL_INTERVAL_MS``. (This process's own commits also change it,
        which costs at most one spare claim per check.) Nothing can swallow
        these the way a pooler swallows NOTIFY: watching is the proof.
        """
        database = str(self.url.database)
        while True:
            try:
                async with aiosqlite.connect(database, isolation_level=None) as connection:
                    await connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                    seen = await _data_version(connection)
                    wake_ups.set("data_version", WATCHING)
                    while True:
                        await asyncio.sleep(DATA_VERSION_POLL_SECONDS)
                        version = await _data_version(connection)
                        if version != seen:
                            seen = version
                            on_wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep watching; the poll interval still covers us
                wake_ups.lost(f"data_version watcher failed ({exc}); retrying")
                await asyncio.sleep(1.0)


def _encoded(args: Sequence[Any]) -> list[Any]:
    """Arguments as sqlite3 binds them: lists as JSON arrays, uuids as their text."""
    return [
        json.dumps([_plain(item) for item in value]) if isinstance(value, list) else _plain(value)
        for value in args
    ]


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):  # as the columns hold times (UTCDateTime)
        return sqlite_time(value)
    return value


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
