"""Build the declared indexes concurrently, resuming whatever an interrupted run left.

Each index is one autocommit ``CREATE INDEX CONCURRENTLY IF NOT EXISTS``:
it takes SHARE UPDATE EXCLUSIVE on the table, which INSERT, UPDATE and
SELECT ... FOR UPDATE do not wait for, so publishers and claims go on while
it builds. A build that was cancelled, terminated or failed (a unique index
over duplicates) leaves the index INVALID (``pg_index.indisvalid``); ``IF
NOT EXISTS`` would skip it for ever, so an INVALID index is dropped with
``DROP INDEX CONCURRENTLY`` and built again. Re-running ``eventproc migrate``
after any interruption therefore finishes the job.

One builder at a time (two concurrent builds on one table can deadlock in
their wait phases): the builder holds the ``concurrent-indexes`` lease (see
lease.py). A second starter that finds the lease held WAITS until the
holder is done (or its lease expires, and then takes over), and returns only
once every index is valid. Why wait rather than go on without the index:
``migrate`` returning means the schema is complete; a worker claiming from a
large ``events`` table without ``events_pending_idx`` would scan the whole
table on every claim, competing with the very build it waits for; and the
wait holds no lock on any table, so publishers do not notice it.
"""

import asyncio
import enum
import logging
import time
from collections.abc import Iterable, Sequence

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventproc.errors import StoreError
from eventproc.store.migrations.indexes import CONCURRENT_INDEXES, ConcurrentIndex
from eventproc.store.migrations.lease import Lease

logger = logging.getLogger(__name__)

LEASE_NAME = "concurrent-indexes"
POLL_SECONDS = 0.5

_STATE = text(
    """
    SELECT i.indisvalid,
           EXISTS (SELECT 1 FROM pg_stat_progress_create_index p
                   WHERE p.index_relid = i.indexrelid) AS building
    FROM pg_index i WHERE i.indexrelid = to_regclass(:name)
    """
)


class IndexState(enum.Enum):
    MISSING = "missing"
    VALID = "valid"
    BUILDING = "building"  # INVALID, and a backend is building it right now
    INVALID = "invalid"  # INVALID and nobody builds it: left by an interrupted build


async def index_state(connection: AsyncConnection, name: str) -> IndexState:
    """What the catalog says about ``name`` (a build in progress is only visible
    to the same role or a superuser; otherwise it shows as INVALID)."""
    row = (await connection.execute(_STATE, {"name": name})).first()
    if row is None:
        return IndexState.MISSING
    if row[0]:
        return IndexState.VALID
    return IndexState.BUILDING if row[1] else IndexState.INVALID


async def unfinished(
    engine: AsyncEngine, indexes: Iterable[ConcurrentIndex]
) -> list[ConcurrentIndex]:
    """The indexes that are not (yet) valid: one catalog query each, no lock taken."""
    async with engine.connect() as conn:
        return [
            index
            for index in indexes
            if await index_state(conn, index.name) is not IndexState.VALID
        ]


async def build_indexes(
    engine: AsyncEngine,
    holder: str,
    applied: set[str],
    indexes: Sequence[ConcurrentIndex] = CONCURRENT_INDEXES,
) -> list[str]:
    """Build (or repair) every index of an ``applied`` revision; the names built.

    Returns at once, without writing anything, when all are valid (every start).
    """
    wanted = [index for index in indexes if index.revision in applied]
    if not await unfinished(engine, wanted):
        return []
    lease = Lease(engine, LEASE_NAME, holder)
    if not await _acquire_or_wait(lease, engine, wanted):
        return []  # another starter built them while we waited
    async with lease.renewed():
        return await _build_all(engine, await unfinished(engine, wanted))


async def _acquire_or_wait(
    lease: Lease, engine: AsyncEngine, wanted: Sequence[ConcurrentIndex]
) -> bool:
    """True once we hold the lease; False if the holder finished everything meanwhile."""
    told = False
    while not await lease.try_acquire():
        if not told:
            current = await lease.current_holder()
            logger.info(
                "Waiting for %s to finish building indexes (%s)",
                current[0] if current else "another starter",
                ", ".join(index.name for index in wanted),
            )
            told = True
        await asyncio.sleep(POLL_SECONDS)
        if not await unfinished(engine, wanted):
            return False
    return True


async def _build_all(engine: AsyncEngine, todo: Sequence[ConcurrentIndex]) -> list[str]:
    built: list[str] = []
    async with engine.connect() as pooled:
        conn = await pooled.execution_options(isolation_level="AUTOCOMMIT")
        for index in todo:
            if await _build_one(conn, index):
                built.append(index.name)
    return built


async def _build_one(conn: AsyncConnection, index: ConcurrentIndex) -> bool:
    """Make ``index`` valid; False if it already was (someone else finished it)."""
    state = await index_state(conn, index.name)
    while state is IndexState.BUILDING:  # e.g. the backend of a killed `migrate`
        await asyncio.sleep(POLL_SECONDS)
        state = await index_state(conn, index.name)
    if state is IndexState.VALID:
        return False
    if state is IndexState.INVALID:
        logger.warning(
            "Index %s was left invalid by an interrupted build; rebuilding it", index.name
        )
        await conn.exec_driver_sql(index.drop_sql())
    started = time.monotonic()
    await conn.exec_driver_sql(index.create_sql())
    if await index_state(conn, index.name) is not IndexState.VALID:
        raise StoreError(f"index {index.name} is not valid after building it concurrently")
    logger.debug(
        "Built index %s on %s concurrently in %.1f s",
        index.name,
        index.table,
        time.monotonic() - started,
    )
    return True
