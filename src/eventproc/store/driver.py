"""The seam under the Store: what each backend supplies, and nothing more.

A driver runs named queries (store/queries/<backend>.sql, the same names and
parameter positions on both backends), owns its connections and its clock,
migrates its schema and watches for other processes' commits. Everything an
operation means (which statement, which arguments, what the rows say) is
written once, in store.py, above it.
"""

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventproc.event import Event
from eventproc.store.protocol import SchemaHook, WakeUps
from eventproc.store.queries import Backend

Row = Sequence[Any]


class Driver(Protocol):
    backend: Backend
    url_for_display: str
    engine: AsyncEngine  # writes through SQLAlchemy: handlers' transactions, packs
    reader: AsyncEngine  # reads that never wait for a writer (PostgreSQL: no transaction)
    # Reads that need a transaction of their own (SET LOCAL of a setting).
    read_transaction: AsyncEngine

    def now(self) -> ColumnElement[datetime]:
        """The clock every scheduling decision uses, for Core reads."""
        ...

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A SQLAlchemy write transaction (committed on exit, rolled back on error)."""
        ...

    async def fetch(self, name: str, args: Sequence[Any], *, durable: bool = False) -> list[Row]:
        """Run a named query in a transaction of its own on the driver's fast path.

        The rows of every statement it holds, in order. ``durable``: the commit
        waits for the write to reach disk even where fast commits are allowed.
        """
        ...

    async def run(self, conn: AsyncConnection, name: str, args: Sequence[Any]) -> list[Row]:
        """Run a named query inside ``conn``'s open transaction; its rows."""
        ...

    async def read(self, name: str, args: Sequence[Any]) -> list[Row]:
        """Run a named read on one of ``reader``'s connections; its rows.

        For the admin API's fixed-shape reads: no statement to build or
        compile, and on PostgreSQL straight on the pooled connection's
        asyncpg driver (no transaction, no SQLAlchemy execution layers).
        Driver errors come out as eventproc.errors. Rows hold what the
        database returns: uuids and times as each backend gives them (see
        store.rows), JSON as text (the queries cast it on PostgreSQL).
        """
        ...

    def event(self, row: Row) -> Event:
        """An Event from a claim's RETURNING row."""
        ...

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self, hooks: Sequence[SchemaHook]) -> None: ...

    async def listen(self, on_wake: Callable[[], None], wake_ups: WakeUps) -> None:
        """Call ``on_wake`` whenever another process publishes; runs until cancelled.

        ``wake_ups`` says, all along, how wake-ups really arrive: a driver
        proves its notifications before reporting them (postgres/listen.py).
        """
        ...
