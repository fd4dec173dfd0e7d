"""Table health: sizes, dead tuples, what holds vacuum back, the claim's cost, prune lag.

PostgreSQL's figures come from its statistics views (pg_stat_user_tables,
pg_stat_activity, pg_prepared_xacts, pg_replication_slots): reading them
scans no table. SQLite has no statistics of that kind: its row counts are
counted up to SQLITE_ROW_CAP, and what has no meaning there (bytes per
table, dead tuples, autovacuum, transactions) is None. The claim's cost is
measured, not estimated: the claim's own pick (due, unleased, in claim
order, one batch) run read-only and timed, which is where a bloated pending
index shows first.
"""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.store import retention
from eventproc.store.driver import Driver
from eventproc.store.rows import aware
from eventproc.store.schema import events, metadata

TABLES = tuple(sorted(metadata.tables))
SQLITE_ROW_CAP = 1_000_000
CLAIM_PROBE_ROWS = 20
SQLITE_BUSY_MS = 30_000

_PG_TABLES = text(
    """
    SELECT s.relname, s.n_live_tup, pg_total_relation_size(s.relid), s.n_dead_tup,
           s.last_autovacuum, s.last_autoanalyze
    FROM pg_stat_user_tables s
    WHERE s.schemaname = current_schema() AND s.relname = ANY(:names)
    ORDER BY s.relname
    """
)
# The oldest snapshot or transaction in this database that keeps dead rows from
# being removed: a backend's (this reading's own excluded), or a prepared transaction.
_PG_OLDEST_XACT = text(
    """
    SELECT max(age) FROM (
        SELECT extract(epoch FROM now() - xact_start)::float8 AS age
        FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
          AND xact_start IS NOT NULL
        UNION ALL
        SELECT extract(epoch FROM now() - prepared)::float8
        FROM pg_prepared_xacts WHERE database = current_database()
    ) holders
    """
)
# Replication slots hold vacuum back by transaction ids, which have no age in seconds.
_PG_SLOT_XMIN_AGE = text(
    "SELECT max(greatest(age(xmin), age(catalog_xmin))) FROM pg_replication_slots "
    "WHERE xmin IS NOT NULL OR catalog_xmin IS NOT NULL"
)


@dataclass(frozen=True, slots=True)
class TableFigures:
    table: str
    rows: int | None  # PostgreSQL: n_live_tup (an estimate); SQLite: counted, capped
    bytes: int | None  # with indexes and TOAST (pg_total_relation_size)
    dead_tuples: int | None
    last_autovacuum: datetime | None
    last_autoanalyze: datetime | None


@dataclass(frozen=True, slots=True)
class TableHealth:
    at: datetime
    backend: str
    tables: list[TableFigures]
    oldest_xact_age_seconds: float | None  # None: nothing is holding vacuum back (or SQLite)
    slot_xmin_age_xids: int | None
    claim_seconds: float
    prune_pass_started_at: datetime | None  # every row due then is gone
    prune_succeeded_at: datetime | None
    file_bytes: int | None = None  # SQLite: the database file (without its -wal)
    page_count: int | None = None
    freelist_pages: int | None = None


async def read(driver: Driver) -> TableHealth:
    async with driver.reader.connect() as conn:
        now = aware((await conn.execute(select(driver.now()))).scalar_one())
        claim_seconds = await _claim_probe(conn, driver)
        started, succeeded = await retention.last_pass(conn)
        if driver.backend == "postgresql":
            tables = await _pg_tables(conn)
            oldest = (await conn.execute(_PG_OLDEST_XACT)).scalar()
            slots = (await conn.execute(_PG_SLOT_XMIN_AGE)).scalar()
            await conn.rollback()
            return TableHealth(
                now,
                driver.backend,
                tables,
                None if oldest is None else max(float(oldest), 0.0),
                None if slots is None else int(slots),
                claim_seconds,
                started,
                succeeded,
            )
        tables = [await _sqlite_table(conn, name) for name in TABLES]
        pages = (await conn.exec_driver_sql("PRAGMA page_count")).scalar_one()
        free = (await conn.exec_driver_sql("PRAGMA freelist_count")).scalar_one()
    size = _file_bytes(Path(driver.url_for_display))
    return TableHealth(
        now, driver.backend, tables, None, None, claim_seconds, started, succeeded,
        size, int(pages), int(free),
    )  # fmt: skip


async def _claim_probe(conn: AsyncConnection, driver: Driver) -> float:
    now = driver.now()
    pick = (
        select(events.c.id)
        .where(
            events.c.processed == False,  # noqa: E712
            or_(events.c.next_attempt_at.is_(None), events.c.next_attempt_at <= now),
            or_(events.c.locked_until.is_(None), events.c.locked_until < now),
        )
        .order_by(events.c.priority.desc(), events.c.created_at, events.c.id)
        .limit(CLAIM_PROBE_ROWS)
    )
    started = time.perf_counter()
    (await conn.execute(pick)).all()
    return time.perf_counter() - started


async def _pg_tables(conn: AsyncConnection) -> list[TableFigures]:
    rows = await conn.execute(_PG_TABLES, {"names": list(TABLES)})
    return [
        TableFigures(
            row[0],
            int(row[1]),
            int(row[2]),
            int(row[3]),
            _t(row[4]),
            _t(row[5]),
        )
        for row in rows
    ]


async def _sqlite_table(conn: AsyncConnection, name: str) -> TableFigures:
    table = metadata.tables[name]
    capped = select(text("1")).select_from(table).limit(SQLITE_ROW_CAP).subquery()
    rows = (await conn.execute(select(func.count()).select_from(capped))).scalar_one()
    return TableFigures(name, int(rows), None, None, None, None)


def _file_bytes(path: Path) -> int | None:
    """A stat of one local file: no I/O worth a thread."""
    try:
        return path.stat().st_size
    except OSError:
        return None


def _t(value: Any) -> datetime | None:
    return None if value is None else aware(value)


# -- SQLite: giving pruned pages back to the file system -------------------------------


async def sqlite_auto_vacuum(driver: Driver) -> int:
    """The file's auto_vacuum mode: 0 none, 1 full, 2 incremental."""
    async with driver.reader.connect() as conn:
        return int((await conn.exec_driver_sql("PRAGMA auto_vacuum")).scalar_one())


async def sqlite_reclaim(driver: Driver, pages: int) -> int:
    """``PRAGMA incremental_vacuum(pages)`` after pruning; freelist pages left afterwards.

    Run as a script on a connection of its own: sqlite3's ``execute`` steps
    this pragma once, which frees one page; a script steps it to its end.
    On a file made without incremental auto_vacuum it does nothing: freed
    pages are reused by new rows, and ``sqlite_convert`` gives them back.
    """
    async with _raw(driver) as connection:
        await connection.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
        async with connection.execute("PRAGMA freelist_count") as cursor:
            row = await cursor.fetchone()
    return int(row[0]) if row else 0


@asynccontextmanager
async def _raw(driver: Driver) -> AsyncIterator[aiosqlite.Connection]:
    async with aiosqlite.connect(driver.url_for_display, isolation_level=None) as connection:
        await connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
        yield connection


async def sqlite_convert(driver: Driver) -> None:
    """Make the file incremental (``auto_vacuum`` is fixed at creation, so a VACUUM).

    VACUUM rewrites the whole file and holds the write lock meanwhile: it is
    run on an operator's request (``eventproc prune --execute --vacuum``), or
    by the pruner on a small file only.
    """
    async with _raw(driver) as connection:
        await connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
        await connection.execute("VACUUM")
        await connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the file shrinks now
