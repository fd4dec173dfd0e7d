"""The pruner: retention's deletes, in one worker at a time, in adaptive batches.

Every worker runs the chore (admin/chores.py); a lease row (eventproc_leases)
picks one. A lease row, not a PostgreSQL advisory lock: a session-level
advisory lock does not survive a transaction pooler (PgBouncer lends the
session to someone else after each transaction), and it means nothing on
SQLite. Each batch renews the lease in its own transaction, which also locks
the row until that batch commits: two pruners' batches never overlap, and a
pruner that lost its lease (paused past its expiry) stops at its next batch.

A batch's size grows while batches are quick and shrinks when one is slow,
within bounds, so that pruning never holds locks or the SQLite writer long
enough to be felt by the claims. With PRUNE_ARCHIVE=jsonl:PATH each batch's
events are appended to PATH and fsynced before its delete commits (a crash in
between leaves lines whose events are still there: the archive is at least
once; the lines carry the event id).

Before each batch the pruner gives way to its own process's claims. Small
batches did not make pruning free: in the soak, pickup p99 was 38 ms (median
of 30 s windows) while pruning against 13-16 ms before, and a batch that
starts in the middle of a burst of claims competes with them for the
database (SQLite's one writer; PostgreSQL's locks, CPU and WAL) and for this
process's event loop. So while the claim loop is behind (its last claim came
back full, or no slot is free for another), the pruner waits in short steps
and prunes in the quiet after. The signal is the engine's own slot counters,
read for nothing: a query to ask would itself compete with the claims. A
longer rest would not do instead: a rest still ends mid-burst, a wait on the
signal ends when the burst does. The signal is "behind", not "anything in
flight": at a steady rate a worker has events in flight most of the time,
and a pruner waiting for none would fall behind the inserts. Under a backlog
that never clears, each wait ends after DEFER_MAX_SECONDS and one batch runs
(up to MAX_BATCH rows per wait), so pruning slows but never stops; and the
cap is far below LEASE_SECONDS, which each batch renews, so waiting never
lets the lease expire.
"""

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from eventproc.store import retention, table_health
from eventproc.store.driver import Driver
from eventproc.store.retention import RetentionPolicy

if TYPE_CHECKING:
    from eventproc.runtime import Runtime

logger = logging.getLogger("eventproc.pruner")

LEASE_SECONDS = 60.0  # a pruner that died mid-pass holds the others back this long at most
RELEASE_SECONDS = 1.0
# Gentle by design: the soak (bench/soak.py, 500 events/s) saw the claims'
# pickup p99 go from 30-36 ms to 40-255 ms under batches of up to 5,000 rows
# aiming at 0.2 s with a rest of half that. Short batches with an equal rest
# keep the pruner at half of one connection at most, and still remove some
# 10,000 rows a second, twenty times that soak's rate.
MIN_BATCH, FIRST_BATCH, MAX_BATCH = 50, 200, 1000
TARGET_BATCH_SECONDS = 0.05  # grow below half of it, shrink above twice it
PAUSE_FRACTION = 1.0  # rest this fraction of a batch's time before the next
SQLITE_VACUUM_PAGES = 2000  # pages returned to the file system per batch
# A SQLite file made without incremental auto_vacuum is converted (one VACUUM,
# which rewrites it under the write lock) by the pruner when no bigger than this;
# a bigger one by `eventproc prune --execute --vacuum`, when the operator chooses.
SQLITE_CONVERT_BYTES = 64 * 1024 * 1024
# Giving way to the claims (see above): looked at again every step, at most
# the cap before each batch; the cap must stay well below LEASE_SECONDS.
DEFER_STEP_SECONDS = 0.05
DEFER_MAX_SECONDS = 5.0


class LeaseLost(Exception):
    """Another pruner holds the lease now (ours expired): stop this pass."""


class Pruner:
    def __init__(
        self,
        driver: Driver,
        policy: RetentionPolicy,
        *,
        holder: str | None = None,
        jsonl: Path | None = None,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        self.driver = driver
        self.policy = policy
        self.holder = holder or f"pruner:{uuid.uuid4().hex[:12]}"
        self.jsonl = jsonl
        # True while this process's claims are behind (Runtime.claims_behind): batches wait.
        self.busy = busy
        self.deferred_seconds = 0.0  # waited for the claims, in all (the counter)
        self.batch = FIRST_BATCH
        # Rows pruned by this process, per table (the counter; every table from the start).
        self.totals = dict.fromkeys((*retention.EVENT_TABLES, *retention.CLOCKED_TABLES), 0)
        self.last_success: float | None = None  # unix time of this process's last full pass
        self.passes = 0
        self._space_checked = driver.backend != "sqlite"

    async def run_pass(self) -> dict[str, int] | None:
        """One pass: everything due now, table by table; None if another pruner holds it."""
        async with self.driver.begin() as conn:
            if not await retention.lease_renew(
                conn, self.driver, self.holder, LEASE_SECONDS, take=True
            ):
                return None
            started = (await retention.cutoffs(conn, self.driver, self.policy)).now
        pruned = dict.fromkeys(self.totals, 0)
        try:
            await self._events(pruned)
            for table in retention.CLOCKED_TABLES:
                await self._clocked(table, pruned)
            async with self.driver.begin() as conn:
                await retention.pass_done(conn, self.driver, started)
                await retention.lease_release(conn, self.holder)
        except LeaseLost:
            logger.warning("Pruner lost its lease mid-pass; another worker carries on")
            return pruned
        except BaseException:  # shutdown or an outage mid-pass: let another worker go on now
            await self._release_quietly()
            raise
        self.passes += 1
        self.last_success = time.time()
        if self.driver.backend == "sqlite" and any(pruned.values()):
            await self._reclaim()
        return pruned

    async def _release_quietly(self) -> None:
        """Give the lease back within a second if the database lets us (else it expires)."""
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(RELEASE_SECONDS):
                await asyncio.shield(self._release())

    async def _release(self) -> None:
        async with self.driver.begin() as conn:
            await retention.lease_release(conn, self.holder)

    async def _reclaim(self) -> None:
        if not self._space_checked:
            self._space_checked = True
            path = Path(self.driver.url_for_display)
            size = await asyncio.to_thread(lambda: path.stat().st_size)
            small = size <= SQLITE_CONVERT_BYTES
            if await table_health.sqlite_auto_vacuum(self.driver) == 0:
                if not small:
                    logger.warning(
                        "SQLite file %s keeps pruned pages for reuse (no incremental "
                        "auto_vacuum): `eventproc prune --execute --vacuum` gives them back",
                        path,
                    )
                    return
                await table_health.sqlite_convert(self.driver)
                return
        await table_health.sqlite_reclaim(self.driver, SQLITE_VACUUM_PAGES)

    async def _events(self, pruned: dict[str, int]) -> None:
        async with self.driver.reader.connect() as conn:
            types = await retention.event_types(conn)
        for event_type in types:
            after: tuple[datetime, uuid.UUID] | None = None
            while True:
                await self._give_way()
                size = self.batch
                started = time.monotonic()
                seen, counts = await self._event_batch(event_type, after, size)
                self._add(pruned, counts)
                await self._adapt(time.monotonic() - started)
                if len(seen) < size:
                    break
                after = seen[-1]

    async def _event_batch(
        self, event_type: str, after: tuple[datetime, uuid.UUID] | None, size: int
    ) -> tuple[list[tuple[datetime, uuid.UUID]], dict[str, int]]:
        async with self.driver.begin() as conn:
            await self._fence(conn)
            cut = await retention.cutoffs(conn, self.driver, self.policy)
            seen = await retention.event_candidates(
                conn, event_type, retention.newest_cut(cut), after, size
            )
            gone, counts = await retention.delete_events(
                conn, self.driver, [row[1] for row in seen], cut, self.policy
            )
            if gone and self.jsonl is not None:
                await asyncio.to_thread(append_jsonl, self.jsonl, gone)
        return seen, counts

    async def _clocked(self, table: str, pruned: dict[str, int]) -> None:
        while True:
            await self._give_way()
            size = self.batch
            started = time.monotonic()
            async with self.driver.begin() as conn:
                await self._fence(conn)
                cut = await retention.cutoffs(conn, self.driver, self.policy)
                deleted = await retention.delete_by_clock(conn, table, cut, size)
            self._add(pruned, {table: deleted})
            await self._adapt(time.monotonic() - started)
            if deleted < size:
                return

    async def _fence(self, conn: Any) -> None:
        if not await retention.lease_renew(
            conn, self.driver, self.holder, LEASE_SECONDS, take=False
        ):
            raise LeaseLost

    async def _give_way(self) -> None:
        """Before a batch: wait while the claims are behind, DEFER_MAX_SECONDS at most."""
        busy = self.busy
        if busy is None or not busy():
            return
        started = time.monotonic()
        deadline = started + DEFER_MAX_SECONDS
        # Looked at every step, not awaited as an Event: the claim path sets
        # these counters thousands of times a second and tells no one.
        while busy() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(DEFER_STEP_SECONDS)
        self.deferred_seconds += time.monotonic() - started

    async def _adapt(self, seconds: float) -> None:
        if seconds < TARGET_BATCH_SECONDS / 2:
            self.batch = min(self.batch * 2, MAX_BATCH)
        elif seconds > TARGET_BATCH_SECONDS * 2:
            self.batch = max(self.batch // 2, MIN_BATCH)
        await asyncio.sleep(seconds * PAUSE_FRACTION)

    def _add(self, pruned: dict[str, int], counts: dict[str, int]) -> None:
        for table, rows in counts.items():
            pruned[table] = pruned.get(table, 0) + rows
            self.totals[table] = self.totals.get(table, 0) + rows


def append_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """One JSON line per event, written and fsynced before the delete commits."""
    text = "".join(json.dumps(row, default=_plain, sort_keys=True) + "\n" for row in rows)
    with path.open("a", encoding="utf-8") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


async def keep_pruning(runtime: "Runtime") -> None:
    """The chore: a pass every PRUNE_INTERVAL_SECONDS while PRUNE=on; outages are logged once."""
    settings = runtime.settings
    if not settings.prune:
        return
    pruner = runtime.pruner
    failing = False
    while True:
        try:
            pruned = await pruner.run_pass()
        except Exception as exc:  # the database away: the next pass tries again
            if not failing:
                logger.warning("Pruning failing, retrying: %s", exc, extra={"action": "prune"})
            failing = True
        else:
            if failing:
                logger.info("Pruning works again", extra={"action": "prune"})
            failing = False
            if pruned and any(pruned.values()):
                logger.info("Pruned %s", pruned, extra={"action": "prune"})
        await asyncio.sleep(settings.prune_interval_seconds)
