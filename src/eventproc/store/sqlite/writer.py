"""The SQLite hot path: named queries on a raw sqlite3 connection in a thread of its own.

Through SQLAlchemy and aiosqlite, one claim was four thread hand-offs
(BEGIN IMMEDIATE, execute, fetch, COMMIT) plus statement building, ~4.5 ms
per batch of 20 and ~200 us of CPU per event (bench/README.md). Here each
transaction is one call into a thread that owns its own connection, and
sqlite3 prepares each statement once; the contract suite in tests/store
holds both backends to the same behaviour.
"""

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from eventproc.errors import StoreError, StoreUnavailable

T = TypeVar("T")

BUSY_WAIT_SECONDS = 30.0  # as long as the other connections' busy_timeout
BUSY_STEP_MS = 2
BUSY_PAUSE_SECONDS = 0.0005

Statement = tuple[str, int]  # the text and how many of the arguments it takes


class Writer:
    """One connection, used only from one thread: every call is one transaction."""

    def __init__(self, database: str, pragmas: Sequence[str]) -> None:
        self._database = database
        self._pragmas = pragmas
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventproc-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    async def fetch(self, statements: Sequence[Statement], args: Sequence[Any]) -> list[Any]:
        """Run the statements in one transaction; the rows of all of them, in order."""

        def run(conn: sqlite3.Connection) -> list[Any]:
            rows: list[Any] = []
            for text, arity in statements:
                rows += conn.execute(text, args[:arity]).fetchall()
            return rows

        return await self._run(run)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._executor, self._disconnect)
        self._executor.shutdown(wait=False)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._transaction, work)
        except sqlite3.OperationalError as exc:  # locked, busy, disk I/O, file gone
            raise StoreUnavailable(f"database unavailable: {exc}") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"database error: {exc}") from exc

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connect()
        try:
            self._begin(conn)
            result = work(conn)
            conn.execute("COMMIT")
        except BaseException:
            # A connection left inside a transaction (a failed COMMIT or
            # ROLLBACK) would refuse every later BEGIN and might keep the
            # file's write lock: start again from a fresh one instead.
            try:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._disconnect()
            raise
        return result

    def _begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, waiting for another process's writer in short steps.

        SQLite's own busy handler sleeps 1, 2, 5, 10 ... up to 100 ms between
        tries, so a worker sharing the file with a busy publisher fell behind
        by seconds (bench/README.md); this connection's handler gives up after
        BUSY_STEP_MS and the wait goes on here, trying every few milliseconds.
        """
        deadline = time.monotonic() + BUSY_WAIT_SECONDS
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(BUSY_PAUSE_SECONDS)

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            conn = sqlite3.connect(
                self._database, isolation_level=None, check_same_thread=False, timeout=30
            )
            try:
                for pragma in self._pragmas:
                    conn.execute(pragma)
                conn.execute(f"PRAGMA busy_timeout={BUSY_STEP_MS}")
            except BaseException:
                conn.close()
                raise
            self._connection = conn
        return self._connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()
