"""The admin API's dead-letter reads: a filtered list, one with its traceback, and groups.

Groups are what an operator reads first on a bad day (10,000 dead letters of
one outage are one line), so they cost the same whatever the outage: the
groups are found by a loose index scan of event_dead_letters_group_idx (one
probe per handler and per fingerprint, never a read of every open letter)
and each is counted up to GROUP_COUNT_CAP index entries.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    Select,
    func,
    literal,
    null,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement

from eventproc.event import DeadLetter
from eventproc.store.driver import Driver
from eventproc.store.errors import idempotent
from eventproc.store.rows import aware, row_to_dead_letter, uuid_of
from eventproc.store.schema import dead_letters

GROUP_COUNT_CAP = 10_000  # most dead letters one group's count reads (then count_capped)
GROUP_SCAN = 1_000  # most handlers, and most fingerprints of one handler, a groups read walks

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


@dataclass(frozen=True, slots=True)
class GroupQuery:
    handler: str | None = None
    event_type: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50


@dataclass(frozen=True, slots=True)
class GroupSample:
    dead_letter_id: uuid.UUID
    event_id: uuid.UUID
    error_message: str


@dataclass(frozen=True, slots=True)
class DeadLetterGroup:
    handler: str | None
    error_fingerprint: str | None
    count: int
    count_capped: bool  # GROUP_COUNT_CAP reached: there may be more
    first_seen: datetime
    last_seen: datetime
    sample: GroupSample  # the newest dead letter of the group


@dataclass(frozen=True, slots=True)
class GroupPage:
    groups: list[DeadLetterGroup]  # biggest first, at most the query's limit
    capped: bool  # the scan stopped at GROUP_SCAN handlers or fingerprints: there may be more


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
        found = group_statement(query)
        async with self.driver.reader.connect() as conn:
            rows = (await conn.execute(found)).all()
            counted = sorted(
                (row for row in rows if row.n > 0),
                key=lambda row: (-row.n, _desc_time(row.last_seen)),
            )[: query.limit]
            samples = await _samples(conn, [uuid_of(row.sample_id) for row in counted])
        return GroupPage(
            groups=[_group(row, samples[uuid_of(row.sample_id)]) for row in counted],
            capped=any(_stopped_at_bound(row) for row in rows),
        )


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


# -- groups ------------------------------------------------------------------------------
#
# A loose index scan in two levels, portable to SQLite: the handlers, each
# the first one past the one before (a probe of the group index), then each
# handler's fingerprints the same way. Each chain ends on a NULL row, which
# stands for the group whose fingerprint (or handler) is NULL (dead letters
# written before eventproc had them): kept when such letters exist. The
# NULL handler's fingerprints are a chain of their own, so that every probe
# is an equality or IS NULL on the index's leading column.


def group_statement(query: GroupQuery) -> Select[Any]:
    """Every group the scan finds, with its count (capped), first/last seen, newest letter."""
    handlers = _handler_chain(query.handler)
    named = _fingerprint_chain(
        "named_groups",
        select(handlers.c.handler, literal(1).label("depth")).where(
            handlers.c.handler.is_not(None)
        ),
        lambda chain: _d.handler == chain.c.handler,
    )
    parts = [*_figures(query, named, _d.handler == named.c.handler), _stopped(handlers)]
    if query.handler is None:
        unnamed = _fingerprint_chain(
            "unnamed_groups",
            select(null().label("handler"), literal(1).label("depth")),
            lambda chain: _d.handler.is_(None),
        )
        parts += _figures(query, unnamed, _d.handler.is_(None))
    return select(union_all(*parts).subquery("found"))


def _handler_chain(only: str | None) -> CTE:
    """Each handler with open dead letters (``only``, if given), then a NULL row."""

    def after(previous: Any) -> Any:
        probe = select(_d.handler).where(_OPEN).order_by(_d.handler).limit(1)
        probe = probe.where(_d.handler.is_not(None) if previous is None else _d.handler > previous)
        if only is not None:
            probe = probe.where(_d.handler == only)
        return probe.scalar_subquery()

    chain = select(after(None).label("handler"), literal(1).label("depth")).cte(
        "handlers", recursive=True
    )
    step = select(after(chain.c.handler), chain.c.depth + 1).where(
        chain.c.handler.is_not(None), chain.c.depth < GROUP_SCAN
    )
    return chain.union_all(step)


def _fingerprint_chain(name: str, starts: Select[Any, Any], same_handler: Any) -> CTE:
    """(handler, fingerprint) of each handler ``starts`` yields, each chain ending on NULL."""
    seeds = starts.subquery(f"{name}_seeds")

    def after(chain: Any, previous: Any) -> Any:
        probe = (
            select(_d.error_fingerprint)
            .where(_OPEN, same_handler(chain))
            .order_by(_d.error_fingerprint)
            .limit(1)
        )
        fingerprint = _d.error_fingerprint
        return probe.where(
            fingerprint.is_not(None) if previous is None else fingerprint > previous
        ).scalar_subquery()

    anchor = select(seeds.c.handler, after(seeds, None).label("fingerprint"), seeds.c.depth)
    chain = anchor.cte(name, recursive=True)
    step = select(chain.c.handler, after(chain, chain.c.fingerprint), chain.c.depth + 1).where(
        chain.c.fingerprint.is_not(None), chain.c.depth < GROUP_SCAN
    )
    return chain.union_all(step)


def _figures(query: GroupQuery, chain: CTE, same_handler: Any) -> list[Select[Any]]:
    """The groups of ``chain``: one per fingerprint, and its closing row's group of NULLs."""
    fingerprint = chain.c.fingerprint
    shared = [_OPEN, same_handler, *_group_filters(query)]
    return [
        _figures_of(chain, [*shared, _d.error_fingerprint == fingerprint]).where(
            fingerprint.is_not(None)
        ),
        _figures_of(chain, [*shared, _d.error_fingerprint.is_(None)]).where(fingerprint.is_(None)),
    ]


def _group_filters(query: GroupQuery) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if query.event_type is not None:
        clauses.append(_d.event_type == query.event_type)
    if query.since is not None:
        clauses.append(_d.created_at >= query.since)
    if query.until is not None:
        clauses.append(_d.created_at < query.until)
    return clauses


def _figures_of(chain: CTE, group: list[ColumnElement[bool]]) -> Select[Any]:
    """Count (reading at most GROUP_COUNT_CAP entries), first and last seen, the newest one.

    Each an index probe or range of event_dead_letters_group_idx, in its order.
    """
    capped = select(literal(1)).where(*group).correlate(chain).limit(GROUP_COUNT_CAP).subquery()

    def first(column: Any, *order: Any) -> Any:
        return select(column).where(*group).order_by(*order).limit(1).scalar_subquery()

    return select(
        chain.c.handler.label("handler"),
        chain.c.fingerprint.label("fingerprint"),
        select(func.count()).select_from(capped).scalar_subquery().label("n"),
        first(_d.created_at, _d.created_at).label("first_seen"),
        first(_d.created_at, _d.created_at.desc()).label("last_seen"),
        # The list's first item (ties on created_at broken as a page breaks them).
        first(_d.id, _d.created_at.desc(), _d.id.desc()).label("sample_id"),
        chain.c.depth.label("depth"),
    )


def _stopped(handlers: CTE) -> Select[Any]:
    """A row (n = -1) when the handler chain stopped at GROUP_SCAN with handlers left."""
    return select(
        handlers.c.handler,
        null().label("fingerprint"),
        literal(-1).label("n"),
        null().label("first_seen"),
        null().label("last_seen"),
        null().label("sample_id"),
        handlers.c.depth,
    ).where(handlers.c.handler.is_not(None), handlers.c.depth >= GROUP_SCAN)


async def _samples(conn: Any, ids: list[uuid.UUID]) -> dict[uuid.UUID, GroupSample]:
    if not ids:
        return {}
    rows = await conn.execute(select(_d.id, _d.event_id, _d.error_message).where(_d.id.in_(ids)))
    return {
        uuid_of(row.id): GroupSample(uuid_of(row.id), uuid_of(row.event_id), row.error_message)
        for row in rows
    }


def _group(row: Any, sample: GroupSample) -> DeadLetterGroup:
    return DeadLetterGroup(
        handler=row.handler,
        error_fingerprint=row.fingerprint,
        count=min(row.n, GROUP_COUNT_CAP),
        count_capped=row.n >= GROUP_COUNT_CAP,
        first_seen=aware(row.first_seen),
        last_seen=aware(row.last_seen),
        sample=sample,
    )


def _stopped_at_bound(row: Any) -> bool:
    """A chain cut at GROUP_SCAN (its last row names a handler or fingerprint still)."""
    return bool(row.n < 0 or (row.depth >= GROUP_SCAN and row.fingerprint is not None))


def _desc_time(value: Any) -> float:
    return -aware(value).timestamp()
