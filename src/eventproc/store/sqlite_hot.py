"""The SQLite hot path: claims and completions on a raw sqlite3 connection.

Through SQLAlchemy and aiosqlite, one claim was four thread hand-offs
(BEGIN IMMEDIATE, execute, fetch, COMMIT) plus statement building, ~4.5 ms
per batch of 20 and ~200 us of CPU per event (bench/README.md). Here each
transaction is one call into a thread that owns its own connection, with
named queries (store/queries/sqlite.sql, the same names as PostgreSQL's) that
sqlite3 prepares once; the contract suite in tests/store holds both backends
to the same behaviour.
"""

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

from eventproc.errors import StoreError, StoreUnavailable
from eventproc.event import Event, Outcome
from eventproc.store import queries
from eventproc.store.protocol import ClaimPolicy, Lease
from eventproc.store.sqlstore import event_from_returned

T = TypeVar("T")

BUSY_WAIT_SECONDS = 30.0  # as long as the other connections' busy_timeout
BUSY_STEP_MS = 2
BUSY_PAUSE_SECONDS = 0.0005

QUERIES = queries.load("sqlite")
# Split once: a named write may be several statements here (see queries.sqlite_statements).
_STATEMENTS = {name: queries.sqlite_statements(text) for name, text in QUERIES.items()}
_COMPLETE_SQL = QUERIES["event_complete"]


class HotPath:
    """One connection, used only from one thread: every call is one transaction."""

    def __init__(self, database: str, pragmas: Sequence[str]) -> None:
        self._database = database
        self._pragmas = pragmas
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventproc-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._closed = False

    async def claim(
        self,
        token: str,
        policy: ClaimPolicy,
        window: int,
        completing: dict[Outcome, list[Lease]],
        worker: str,
    ) -> list[Event]:
        """Complete ``completing`` (in order when ordered), then claim: one transaction."""
        completions = _completion_params(completing, worker, in_order=policy.ordered)
        params = {
            "token": token,
            "lease": f"+{policy.lease_seconds:.3f} seconds",
            "limit": policy.limit,
            "window": window,
        }
        # Completions run first in the same transaction: the claim sees them done.
        sql = QUERIES[
            queries.claim_query(
                ordered=policy.ordered,
                block_on_dead_letters=policy.block_on_dead_letters,
                carrying=bool(completions),
            )
        ]

        def complete_then_claim(conn: sqlite3.Connection) -> list[Any]:
            for values in completions:
                conn.execute(_COMPLETE_SQL, values)
            return conn.execute(sql, params).fetchall()

        rows = await self._run(complete_then_claim)
        return [_row_to_event(row) for row in rows]

    async def write(self, name: str, params: dict[str, Any]) -> int:
        """Run the named write (all its statements) in one transaction: the first's row count."""
        statements = _STATEMENTS[name]

        def run(conn: sqlite3.Connection) -> int:
            counts = [conn.execute(statement, params).rowcount for statement in statements]
            return counts[0]

        return await self._run(run)

    async def complete(
        self, by_outcome: dict[Outcome, list[Lease]], worker: str, *, in_order: bool
    ) -> int:
        statements = _completion_params(by_outcome, worker, in_order=in_order)

        def write(conn: sqlite3.Connection) -> int:
            return sum(conn.execute(_COMPLETE_SQL, params).rowcount for params in statements)

        return await self._run(write)

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


def _completion_params(
    by_outcome: dict[Outcome, list[Lease]], worker: str, *, in_order: bool
) -> list[dict[str, Any]]:
    """One _COMPLETE_SQL parameter set per outcome and claim token."""
    if not by_outcome:
        return []
    flushed = json.dumps(
        [[str(lease.event_id), lease.token] for leases in by_outcome.values() for lease in leases]
    )
    statements: list[dict[str, Any]] = []
    for outcome, leases in by_outcome.items():
        by_token: dict[str, list[str]] = {}
        for lease in leases:
            by_token.setdefault(lease.token, []).append(str(lease.event_id))
        for token, ids in by_token.items():
            statements.append(
                {"outcome": outcome.value, "worker": worker, "token": token,
                 "ids": json.dumps(ids), "in_order": in_order, "flushed": flushed}
            )  # fmt: skip
    return statements


def _row_to_event(row: Sequence[Any]) -> Event:
    return event_from_returned(row, as_uuid=_uuid, as_time=_time)


def _uuid(value: str | None) -> uuid.UUID | None:
    return uuid.UUID(value) if value is not None else None


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
