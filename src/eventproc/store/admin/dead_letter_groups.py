"""The groups of open dead letters by (handler, error fingerprint): one statement, bounded.

Groups are what an operator reads first on a bad day (10,000 dead letters of
one outage are one line), so they cost the same whatever the outage: the
groups are found by a loose index scan of event_dead_letters_group_idx (one
probe per handler and per fingerprint, never a read of every open letter)
and each is counted up to GROUP_COUNT_CAP index entries.
"""

import functools
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    CTE,
    Integer,
    Select,
    Text,
    bindparam,
    cast,
    func,
    literal,
    null,
    select,
    text,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement

from eventproc.store.driver import Driver
from eventproc.store.rows import aware, uuid_of
from eventproc.store.schema import dead_letters

GROUP_COUNT_CAP = 10_000  # most dead letters one group's count reads (then count_capped)
GROUP_SCAN = 1_000  # most handlers, and most fingerprints of one handler, a groups read walks

_d = dead_letters.c
_OPEN = _d.replayed_at.is_(None)


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


async def read(driver: Driver, query: GroupQuery) -> GroupPage:
    """Open dead letters by (handler, error_fingerprint), biggest group first."""
    async with driver.read_transaction.connect() as conn:
        if driver.backend == "postgresql":
            # The recursive scan's row estimates are guesses (x10 per level):
            # its cost passes jit_above_cost, and compiling took 0.4-6 s for
            # a statement that runs in milliseconds.
            await conn.execute(text("SET LOCAL jit = off"))
        rows = (await conn.execute(group_statement(query), group_params(query))).all()
        found = [row for row in rows if row.n > 0]
        samples = await _samples(conn, [uuid_of(row.sample_id) for row in found])
    groups = sorted(
        (
            _group(row, samples[uuid_of(row.sample_id)])
            for row in found
            if uuid_of(row.sample_id) in samples  # not discarded meanwhile
        ),
        key=lambda group: (-group.count, -group.last_seen.timestamp()),
    )
    return GroupPage(
        groups=groups[: query.limit], capped=any(_stopped_at_bound(row) for row in rows)
    )


# A loose index scan in two levels, portable to SQLite: the handlers, each
# the first one past the one before (a probe of the group index), then each
# handler's fingerprints the same way. Each chain ends on a NULL row, which
# stands for the group whose fingerprint (or handler) is NULL (dead letters
# written before eventproc had them): kept when such letters exist. The
# NULL handler's fingerprints are a chain of their own, so that every probe
# is an equality or IS NULL on the index's leading column.


class _Shape(NamedTuple):
    """What a groups statement depends on (its values are bound parameters)."""

    handler: bool
    event_type: bool
    since: bool
    until: bool
    scan: int  # GROUP_SCAN
    cap: int  # GROUP_COUNT_CAP


def group_statement(query: GroupQuery) -> Select[Any]:
    """The statement for ``query``'s filters, built once per shape (it takes ~10 ms)."""
    return _statement(
        _Shape(
            query.handler is not None,
            query.event_type is not None,
            query.since is not None,
            query.until is not None,
            GROUP_SCAN,
            GROUP_COUNT_CAP,
        )
    )


def group_params(query: GroupQuery) -> dict[str, Any]:
    given = {
        "handler": query.handler,
        "event_type": query.event_type,
        "since": query.since,
        "until": query.until,
    }
    return {name: value for name, value in given.items() if value is not None}


@functools.lru_cache(maxsize=64)
def _statement(query: _Shape) -> Select[Any]:
    """Every group the scan finds, with its count (capped), first/last seen, newest letter."""
    handlers = _handler_chain(query.handler)
    named = _fingerprint_chain(
        "named_groups",
        select(handlers.c.handler, literal(1).label("depth")).where(
            handlers.c.handler.is_not(None)
        ),
        lambda chain: _d.handler == chain.c.handler,
    )
    parts = _figures(query, named, _d.handler == named.c.handler)
    if not query.handler:
        unnamed = _fingerprint_chain(
            "unnamed_groups",
            select(null().label("handler"), literal(1).label("depth")),
            lambda chain: _d.handler.is_(None),
        )
        parts += [*_figures(query, unnamed, _d.handler.is_(None)), _stopped(handlers)]
    return select(union_all(*parts).subquery("found"))


def _handler_chain(only: bool) -> CTE:
    """Each handler with open dead letters, then a NULL row; or just the one asked for."""
    if only:
        asked = bindparam("handler", type_=Text())
        return select(asked.label("handler"), literal(1).label("depth")).cte("handlers")

    def after(previous: Any) -> Any:
        probe = select(_d.handler).where(_OPEN).order_by(_d.handler).limit(1)
        probe = probe.where(_d.handler.is_not(None) if previous is None else _d.handler > previous)
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


def _figures(query: _Shape, chain: CTE, same_handler: Any) -> list[Select[Any]]:
    """The groups of ``chain``: one per fingerprint, and its closing row's group of NULLs."""
    fingerprint = chain.c.fingerprint
    shared = [_OPEN, same_handler, *_time_range(query)]
    return [
        _figures_of(chain, [*shared, _d.error_fingerprint == fingerprint], query.event_type).where(
            fingerprint.is_not(None)
        ),
        _figures_of(chain, [*shared, _d.error_fingerprint.is_(None)], query.event_type).where(
            fingerprint.is_(None)
        ),
    ]


def _time_range(query: _Shape) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if query.since:
        clauses.append(_d.created_at >= bindparam("since"))
    if query.until:
        clauses.append(_d.created_at < bindparam("until"))
    return clauses


# The group index's order, spelled out in full: with a predicate "IS NULL"
# (no equality to PostgreSQL's planner) ORDER BY created_at alone is not
# seen to follow the index, and it walks event_dead_letters_created_at_idx.
_OLDEST = (_d.handler, _d.error_fingerprint, _d.created_at)
_NEWEST = (_d.handler.desc(), _d.error_fingerprint.desc(), _d.created_at.desc())


def _figures_of(chain: CTE, group: list[ColumnElement[bool]], event_type: bool) -> Any:
    """Count, first and last seen, the newest letter: each read from the group index.

    The count reads at most GROUP_COUNT_CAP entries, the newest; with an
    event type (not in the index) every figure comes from those entries.
    Last seen is the sample's time (read with it).
    """
    newest = (
        select(_d.id, _d.created_at, _d.event_type)
        .where(*group)
        .correlate(chain)
        .order_by(*_NEWEST)
        .limit(GROUP_COUNT_CAP)
        .subquery()
    )
    scanned = select(func.count()).select_from(newest).scalar_subquery()
    if not event_type:
        n: Any = scanned
        first = _probe(group, _d.created_at, _OLDEST)
        last = _probe(group, _d.created_at, _NEWEST)
        # The newest letter, ties broken as a page breaks them (by id): an
        # equality on every column of the index, then the few ties sorted.
        sample = _probe([*group, _d.created_at == last], _d.id, (_d.id.desc(),))
    else:
        of_type = newest.c.event_type == bindparam("event_type")
        n = select(func.count()).where(of_type).scalar_subquery()
        first = select(func.min(newest.c.created_at)).where(of_type).scalar_subquery()
        sample = (
            select(newest.c.id)
            .where(of_type)
            .order_by(newest.c.created_at.desc(), newest.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
    return select(
        chain.c.handler.label("handler"),
        chain.c.fingerprint.label("fingerprint"),
        n.label("n"),
        # Without an event type the count is what was read (not read twice).
        (scanned if event_type else cast(null(), Integer)).label("scanned"),
        first.label("first_seen"),
        sample.label("sample_id"),  # last seen: the sample's created_at
        chain.c.depth.label("depth"),
    )


def _probe(group: list[ColumnElement[bool]], column: Any, order: tuple[Any, ...]) -> Any:
    """One row's ``column``: its own read of the table, however deep it is nested."""
    probe = select(column).where(*group).correlate_except(dead_letters)
    return probe.order_by(*order).limit(1).scalar_subquery()


def _stopped(handlers: CTE) -> Select[Any]:
    """A row (n = -1) when the handler chain stopped at GROUP_SCAN with handlers left."""
    return select(
        handlers.c.handler,
        null().label("fingerprint"),
        literal(-1).label("n"),
        literal(0).label("scanned"),
        null().label("first_seen"),
        null().label("sample_id"),
        handlers.c.depth,
    ).where(handlers.c.handler.is_not(None), handlers.c.depth >= GROUP_SCAN)


async def _samples(conn: Any, ids: list[uuid.UUID]) -> dict[uuid.UUID, tuple[GroupSample, Any]]:
    """Each group's newest letter, and its time (the group's last seen), by primary key."""
    if not ids:
        return {}
    rows = await conn.execute(
        select(_d.id, _d.event_id, _d.error_message, _d.created_at).where(_d.id.in_(ids))
    )
    return {
        uuid_of(row.id): (
            GroupSample(uuid_of(row.id), uuid_of(row.event_id), row.error_message),
            row.created_at,
        )
        for row in rows
    }


def _group(row: Any, sample: tuple[GroupSample, Any]) -> DeadLetterGroup:
    return DeadLetterGroup(
        handler=row.handler,
        error_fingerprint=row.fingerprint,
        count=row.n,
        count_capped=(row.n if row.scanned is None else row.scanned) >= GROUP_COUNT_CAP,
        first_seen=aware(row.first_seen),
        last_seen=aware(sample[1]),
        sample=sample[0],
    )


def _stopped_at_bound(row: Any) -> bool:
    """A chain cut at GROUP_SCAN (its last row names a handler or fingerprint still)."""
    return bool(row.n < 0 or (row.depth >= GROUP_SCAN and row.fingerprint is not None))
