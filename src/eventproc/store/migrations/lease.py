"""A named lease in a small table: mutual exclusion across autocommit statements.

``CREATE INDEX CONCURRENTLY`` cannot run inside a transaction, so the
migration's transaction-level advisory lock cannot cover it, and a
session-level advisory lock does not survive a transaction pooler
(PgBouncer hands each transaction to any server connection). A lease row
does: every statement on it is a transaction of its own. The holder renews
it while it works; a holder that died leaves a lease that expires after
``ttl`` seconds, and the next starter takes over.

The table is the migration machinery's own, like Alembic's version table: it
is created by ``eventproc migrate`` and is not part of ``schema.py``.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

logger = logging.getLogger(__name__)

LEASE_TABLE_DDL = """
CREATE TABLE IF NOT EXISTS eventproc_migration_lease (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
)
"""

_ACQUIRE = text(
    """
    INSERT INTO eventproc_migration_lease AS l (name, holder, expires_at)
    VALUES (:name, :holder, now() + :ttl * interval '1 second')
    ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
    WHERE l.expires_at < now() OR l.holder = excluded.holder
    RETURNING l.holder
    """
)
_RENEW = text(
    """
    UPDATE eventproc_migration_lease SET expires_at = now() + :ttl * interval '1 second'
    WHERE name = :name AND holder = :holder
    RETURNING holder
    """
)
_RELEASE = text("DELETE FROM eventproc_migration_lease WHERE name = :name AND holder = :holder")
_HOLDER = text(
    "SELECT holder, expires_at - now() FROM eventproc_migration_lease WHERE name = :name"
)


async def create_lease_table(connection: AsyncConnection) -> None:
    await connection.execute(text(LEASE_TABLE_DDL))


class Lease:
    """The lease ``name`` for ``holder`` (a name unique to this attempt)."""

    def __init__(self, engine: AsyncEngine, name: str, holder: str, ttl: float = 15.0):
        self.engine = engine
        self.name = name
        self.holder = holder
        self.ttl = ttl

    def _params(self) -> dict[str, object]:
        return {"name": self.name, "holder": self.holder, "ttl": self.ttl}

    async def try_acquire(self) -> bool:
        async with self.engine.begin() as conn:
            return (await conn.execute(_ACQUIRE, self._params())).first() is not None

    async def current_holder(self) -> tuple[str, timedelta] | None:
        """Who holds it and for how much longer (None: nobody)."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(_HOLDER, {"name": self.name})).first()
        return None if row is None else (row[0], row[1])

    async def release(self) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(_RELEASE, self._params())

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                async with self.engine.begin() as conn:
                    kept = (await conn.execute(_RENEW, self._params())).first() is not None
            except Exception as exc:  # a missed renewal is retried; the ttl allows two
                logger.warning("Could not renew the migration lease %s: %s", self.name, exc)
                continue
            if not kept:
                # Another starter took it over (we were silent for a whole ttl):
                # it may rebuild what we are building; the end state is the same.
                logger.warning("Migration lease %s was taken over by another starter", self.name)
                return

    @contextlib.asynccontextmanager
    async def renewed(self) -> AsyncIterator[None]:
        """Keep the (acquired) lease alive while the block runs; release it after."""
        renewer = asyncio.create_task(self._renew_forever())
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            with contextlib.suppress(Exception):  # an expired lease frees itself
                await asyncio.shield(self.release())
