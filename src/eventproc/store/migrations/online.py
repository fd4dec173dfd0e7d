"""``eventproc migrate`` on PostgreSQL without making publishers wait.

Three phases, none of which holds a lock on a busy table for long:

1. **Revisions**, one transaction each. Each takes the transaction-level
   advisory lock (concurrent starters queue on it, holding nothing else) and
   runs its DDL under a short ``lock_timeout``. ``ALTER TABLE`` and ``CREATE/
   DROP TRIGGER`` need locks that INSERT conflicts with (ACCESS EXCLUSIVE,
   SHARE ROW EXCLUSIVE), and a request waiting for such a lock blocks every
   INSERT queued after it; behind a long transaction that would be every
   publisher for as long as that transaction lasts. With the timeout the
   request gives up after ``lock_timeout_ms``, the whole transaction rolls
   back (releasing what it already holds), and it is tried again after a
   backoff. A revision whose locks INSERT does not conflict with (0003's
   fillfactor takes SHARE UPDATE EXCLUSIVE) may declare a longer
   ``LOCK_TIMEOUT_MS`` in its module.
2. **Schema hooks** (the packs' tables), one transaction, same rules.
3. **Indexes** on big tables, concurrently and resumably (concurrent.py).

For revision authors: the lock a statement takes is held until the
revision's commit, so nothing whose time grows with a table (an UPDATE
backfill, a CREATE INDEX, a constraint validation) may follow a statement
that takes a lock INSERT conflicts with in the same revision: put a
backfill in a revision of its own (an UPDATE takes ROW EXCLUSIVE only) and
an index in ``indexes.py``.

Everything works through a transaction pooler: the advisory lock and the
``lock_timeout`` are transaction-scoped (``SET LOCAL``), and phase 3 uses a
lease row, not a session lock.
"""

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from alembic.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventproc.errors import StoreError, StoreUnavailable
from eventproc.store.errors import sqlstate_of
from eventproc.store.migrations import VERSION_TABLE, alembic_config, upgrade
from eventproc.store.migrations.concurrent import build_indexes
from eventproc.store.migrations.lease import create_lease_table
from eventproc.store.protocol import SchemaHook

logger = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATION_LOCK_KEY = 0x6576656E7470726F  # "eventpro": one migration step at a time
_LOCK_STATES = frozenset({"55P03", "40P01"})  # lock_timeout, deadlock: roll back and retry


@dataclass(frozen=True)
class LockPolicy:
    """How long a migration statement may wait for a lock, and how it retries.

    ``lock_timeout_ms`` bounds what a publisher can wait behind a queued DDL
    lock request (plus the few milliseconds the DDL then holds it).
    """

    lock_timeout_ms: int = 50
    first_backoff: float = 0.05
    max_backoff: float = 2.0
    give_up_after: float = 300.0


DEFAULT_POLICY = LockPolicy()


async def upgrade_online(
    engine: AsyncEngine,
    hooks: Sequence[SchemaHook],
    *,
    holder: str,
    policy: LockPolicy = DEFAULT_POLICY,
) -> None:
    """Upgrade to head, run ``hooks``, build the declared indexes concurrently."""
    started = time.monotonic()
    revisions: list[str] = []
    while True:
        step_started = time.monotonic()
        revision = await in_retried_transaction(
            engine, lambda conn: _next_revision_step(conn, policy), policy, "revision"
        )
        if revision is None:
            break
        logger.debug("Applied migration %s in %.3f s", revision, time.monotonic() - step_started)
        revisions.append(revision)
    if hooks:
        await in_retried_transaction(
            engine, lambda conn: _hooks_step(conn, hooks, policy), policy, "schema hooks"
        )
    async with engine.connect() as conn:
        applied = await conn.run_sync(_applied_revisions)
    built = await build_indexes(engine, holder, applied)
    if revisions or built:
        logger.info(
            "Schema migrated in %.1f s: revisions %s; indexes built concurrently: %s",
            time.monotonic() - started,
            ", ".join(revisions) or "none",
            ", ".join(built) or "none",
        )


async def in_retried_transaction(
    engine: AsyncEngine,
    work: Callable[[AsyncConnection], Awaitable[T]],
    policy: LockPolicy,
    what: str,
) -> T:
    """Run ``work`` in a transaction; on a lock timeout or deadlock, roll back and retry."""
    deadline = time.monotonic() + policy.give_up_after
    delay = policy.first_backoff
    attempt = 0
    while True:
        attempt += 1
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except sa_exc.DBAPIError as exc:
            if sqlstate_of(exc) not in _LOCK_STATES:
                raise
            pause = delay * random.uniform(0.5, 1.0)
            if time.monotonic() + pause > deadline:
                raise StoreUnavailable(
                    f"migration ({what}) could not take its locks in {attempt} attempts over "
                    f"{policy.give_up_after:.0f} s; a long transaction holds them "
                    "(see pg_stat_activity)"
                ) from exc
            log = logger.info if attempt < 5 else logger.warning
            log(
                "Migration (%s) did not get its locks within lock_timeout (attempt %d); "
                "retrying in %.2f s",
                what,
                attempt,
                pause,
            )
            await asyncio.sleep(pause)
            delay = min(delay * 2, policy.max_backoff)


async def _take_lock(conn: AsyncConnection, lock_timeout_ms: int) -> None:
    """The migration lock first (waited for without limit), then the DDL's timeout."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    await conn.execute(text(f"SET LOCAL lock_timeout = '{int(lock_timeout_ms)}ms'"))


async def _next_revision_step(conn: AsyncConnection, policy: LockPolicy) -> str | None:
    """Apply the next revision in this transaction; None when already at head."""
    await _take_lock(conn, policy.lock_timeout_ms)
    await create_lease_table(conn)
    script = await conn.run_sync(_next_revision)
    if script is None:
        return None
    timeout = int(getattr(script.module, "LOCK_TIMEOUT_MS", policy.lock_timeout_ms))
    await conn.execute(text(f"SET LOCAL lock_timeout = '{timeout}ms'"))
    await conn.run_sync(upgrade, script.revision)
    return script.revision


async def _hooks_step(
    conn: AsyncConnection, hooks: Sequence[SchemaHook], policy: LockPolicy
) -> None:
    await _take_lock(conn, policy.lock_timeout_ms)
    for hook in hooks:
        await hook(conn)


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def _current(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _next_revision(connection: Connection) -> Script | None:
    """The revision after the database's current one (the history is linear)."""
    current = _current(connection)
    oldest_first = list(reversed(list(_scripts().walk_revisions())))
    if current is None:
        return oldest_first[0]
    ids = [script.revision for script in oldest_first]
    if current not in ids:
        raise StoreError(
            f"the database is at migration {current}, which this version of eventproc "
            "does not know (a newer version migrated it)"
        )
    position = ids.index(current)
    return oldest_first[position + 1] if position + 1 < len(ids) else None


def _applied_revisions(connection: Connection) -> set[str]:
    current = _current(connection)
    if current is None:
        return set()
    return {script.revision for script in _scripts().iterate_revisions(current, "base")}
