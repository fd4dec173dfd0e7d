"""Counts over the events table by who published them and how they ended.

Read-only and portable (SQLite and PostgreSQL), and safe on a database that
eventproc has not migrated yet: they read only seed columns where they can,
so a tool can look before it writes (``eventproc demo`` refuses a database
holding other publishers' events this way).
"""

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.store.errors import translated
from eventproc.store.rows import aware
from eventproc.store.schema import events
from eventproc.store.store import Store

PENDING = "pending"


@dataclass(frozen=True, slots=True)
class Publisher:
    """The events one ``created_by`` value has in the table."""

    created_by: str | None
    count: int
    first_created_at: datetime | None


@dataclass(frozen=True, slots=True)
class Outcomes:
    """How a set of events stands: per ``outcome`` (``pending`` while unprocessed)."""

    counts: Counter[str] = field(default_factory=Counter)
    retried: int = 0  # events that needed more than one attempt

    @property
    def total(self) -> int:
        return sum(self.counts.values())


async def _has_events_table(connection: AsyncConnection) -> bool:
    return await connection.run_sync(lambda sync: inspect(sync).has_table(events.name))


@translated
async def publishers(store: Store) -> list[Publisher]:
    """Every ``created_by`` in ``events`` with its count; empty when there is no table yet."""
    statement = select(events.c.created_by, func.count(), func.min(events.c.created_at)).group_by(
        events.c.created_by
    )
    async with store.reader.connect() as connection:
        if not await _has_events_table(connection):
            return []
        rows = (await connection.execute(statement)).all()
    return [
        Publisher(created_by, count, aware(first) if first is not None else None)
        for created_by, count, first in sorted(rows, key=lambda row: -row[1])
    ]


@translated
async def outcomes(
    store: Store, *, created_by: str | None = None, since: datetime | None = None
) -> Outcomes:
    """Outcome counts of the events ``created_by`` published at or after ``since``."""
    statement = select(
        events.c.processed,
        events.c.outcome,
        func.count(),
        func.count().filter(events.c.attempts > 1),
    ).group_by(events.c.processed, events.c.outcome)
    if created_by is not None:
        statement = statement.where(events.c.created_by == created_by)
    if since is not None:
        statement = statement.where(events.c.created_at >= since)
    counts: Counter[str] = Counter()
    retried = 0
    async with store.reader.connect() as connection:
        for processed, outcome, count, more_than_once in await connection.execute(statement):
            counts[(outcome or "processed") if processed else PENDING] += count
            retried += more_than_once
    return Outcomes(counts, retried)
