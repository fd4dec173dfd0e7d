"""The admin API's dead-letter reads: a filtered list, one with its traceback, and groups.

The groups' statement is in dead_letter_groups; the list walks
event_dead_letters_created_at_idx in its order and stops at ``limit``.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.sql.elements import ColumnElement

from eventproc.event import DeadLetter
from eventproc.store.admin import dead_letter_groups
from eventproc.store.admin.dead_letter_groups import (
    DeadLetterGroup,
    GroupPage,
    GroupQuery,
    GroupSample,
)
from eventproc.store.driver import Driver
from eventproc.store.errors import idempotent
from eventproc.store.rows import row_to_dead_letter
from eventproc.store.schema import dead_letters

__all__ = [
    "DeadLetterGroup",
    "DeadLetterQuery",
    "DeadLetterReads",
    "GroupPage",
    "GroupQuery",
    "GroupSample",
    "where_of",
]

_d = dead_letters.c
_OPEN = _d.replayed_at.is_(None)
# A list item leaves out the payload and the traceback (one dead letter has them).
_LISTED = [c for c in dead_letters.c if c.name not in ("payload", "error_detail")]


@dataclass(frozen=True, slots=True)
class DeadLetterQuery:
    handler: str | None = None
    event_type: str | None = None
    fingerprint: str | None = None
    state: str = "open"  # open (not replayed) | replayed | all
    since: datetime | None = None  # created_at at or after
    until: datetime | None = None  # created_at before
    after: tuple[datetime, uuid.UUID] | None = None  # keyset: newest first
    limit: int = 50


class DeadLetterReads:
    """``store.admin.dead_letters``: what the admin API and the CLI read of dead letters."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    @idempotent
    async def page(self, query: DeadLetterQuery) -> list[DeadLetter]:
        """Newest first, keyset on (created_at, id); items without payload and traceback."""
        statement = (
            select(*_LISTED)
            .where(*where_of(query))
            .order_by(_d.created_at.desc(), _d.id.desc())
            .limit(query.limit)
        )
        if query.after is not None:
            statement = statement.where(tuple_(_d.created_at, _d.id) < query.after)
        async with self.driver.reader.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [DeadLetter(**{**row._mapping, "payload": {}}) for row in rows]

    @idempotent
    async def get(self, dead_letter_id: uuid.UUID) -> DeadLetter | None:
        """One dead letter, open or replayed, with its payload and traceback."""
        async with self.driver.reader.connect() as conn:
            row = (await conn.execute(select(dead_letters).where(_d.id == dead_letter_id))).first()
        return None if row is None else row_to_dead_letter(row)

    @idempotent
    async def groups(self, query: GroupQuery) -> GroupPage:
        """Open dead letters by (handler, error_fingerprint), biggest group first."""
        return await dead_letter_groups.read(self.driver, query)


def where_of(query: DeadLetterQuery) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a list (shared with bulk operations' dead-letter selectors)."""
    clauses: list[ColumnElement[bool]] = []
    if query.state == "open":
        clauses.append(_OPEN)
    elif query.state == "replayed":
        clauses.append(_d.replayed_at.is_not(None))
    if query.handler is not None:
        clauses.append(_d.handler == query.handler)
    if query.fingerprint is not None:
        clauses.append(_d.error_fingerprint == query.fingerprint)
    if query.event_type is not None:
        clauses.append(_d.event_type == query.event_type)
    if query.since is not None:
        clauses.append(_d.created_at >= query.since)
    if query.until is not None:
        clauses.append(_d.created_at < query.until)
    return clauses
