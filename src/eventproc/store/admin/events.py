"""The admin API's event reads: a filtered, keyset-paged list, and one event with its history.

Every list walks an index in its order (events' created_at, or the type's
events_type_created_idx) and stops at ``limit``; filters that match few
rows make it read further, which the caller bounds (``time bounds``), and
a page is stopped after LIST_SECONDS (on PostgreSQL the server stops it too).
"""

import asyncio
import re
import typing
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Select, String, cast, exists, func, or_, select, true, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from eventproc.errors import QueryTooBroad
from eventproc.event import DeadLetter, Event
from eventproc.store.driver import Driver
from eventproc.store.postgres.driver import PostgresDriver
from eventproc.store.reads import types_present
from eventproc.store.rows import aware, listed_event, row_to_dead_letter, row_to_event
from eventproc.store.schema import attempts, dead_letters, deliveries, events

K = TypeVar("K")
V = TypeVar("V")

_PATH_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")


class BadFilter(ValueError):
    """A filter the store cannot run as given (an HTTP 422 or a CLI error line)."""


@dataclass(frozen=True, slots=True)
class EventQuery:
    event_type: str | None = None  # exact, or a pattern with * (user.*, *.created)
    handler: str | None = None  # has a delivery of it, or was handled by it on its row
    state: str | None = None  # pending (not processed) | done (processed)
    outcome: str | None = None
    aggregate_id: uuid.UUID | None = None
    created_by: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    path: tuple[str, ...] | None = None  # ("payload", "user", "id") or ("metadata", ...)
    value: str | None = None
    error: str | None = None  # free text in the last error
    ids: tuple[uuid.UUID, ...] | None = None
    after: tuple[datetime, uuid.UUID] | None = None  # keyset: newest first
    limit: int = 50


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    handler: str
    status: str
    outcome: str | None
    attempts: int
    next_attempt_at: datetime | None
    locked_by: str | None
    locked_until: datetime | None
    last_error: str | None
    created_at: datetime | None
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class AttemptRow:
    handler: str | None
    attempt: int
    worker: str | None
    finished_at: datetime
    duration_ms: float | None
    outcome: str
    error: str | None
    detail: str | None


@dataclass(slots=True)
class EventRow:
    """An event as the admin API lists it: the row, its routing, and its deliveries.

    A listed event's payload is left out (``{}``): only the detail shows it.
    """

    event: Event
    routed_at: datetime | None
    deliveries_open: int | None
    deliveries: list[DeliveryRow] = field(default_factory=list)


@dataclass(slots=True)
class EventDetail:
    row: EventRow
    attempts: list[AttemptRow]
    dead_letters: list[DeadLetter]


def where_of(driver: Driver, query: EventQuery) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a query (shared with bulk operations' frozen selectors)."""
    clauses: list[ColumnElement[bool]] = []
    if query.event_type is not None:
        clauses.append(_type_clause(query.event_type))
    if query.handler is not None:
        clauses.append(_handler_clause(driver, query.handler))
    if query.state is not None:
        clauses.append(events.c.processed == (query.state == "done"))
    if query.outcome is not None:
        clauses.append(events.c.outcome == query.outcome)
    if query.aggregate_id is not None:
        clauses.append(events.c.aggregate_id == query.aggregate_id)
    if query.created_by is not None:
        clauses.append(events.c.created_by == query.created_by)
    if query.since is not None:
        clauses.append(events.c.created_at >= query.since)
    if query.until is not None:
        clauses.append(events.c.created_at < query.until)
    if query.path is not None:
        clauses.append(_path_text(driver, query.path) == (query.value or ""))
    if query.error is not None:
        clauses.append(_error_clause(driver, query.error))
    if query.ids is not None:
        clauses.append(events.c.id.in_(query.ids))
    return clauses


def _type_clause(pattern: str, column: Any = None) -> ColumnElement[bool]:
    column = events.c.event_type if column is None else column
    if "*" not in pattern:
        return column == pattern  # type: ignore[no-any-return]
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(escaped.replace("*", "%"), escape="\\")  # type: ignore[no-any-return]


def _handler_clause(driver: Driver, handler: str) -> ColumnElement[bool]:
    delivered = exists().where(
        deliveries.c.event_id == events.c.id, deliveries.c.handler == handler
    )
    on_row = _path_text(driver, ("metadata", "handled_by")) == handler
    return or_(delivered, on_row)


def _path_text(driver: Driver, path: tuple[str, ...]) -> ColumnElement[Any]:
    root, keys = path[0], path[1:]
    if root not in ("payload", "metadata") or not keys:
        raise BadFilter("a path starts with payload. or metadata. and names a key")
    if not all(_PATH_KEY.match(key) for key in keys):
        raise BadFilter("path keys are letters, digits, _ and - (up to 64 each)")
    column = events.c[root]
    if driver.backend == "postgresql":
        return func.jsonb_extract_path_text(column, *keys)
    return cast(func.json_extract(column, "$." + ".".join(keys)), String)


def _error_clause(driver: Driver, text: str) -> ColumnElement[bool]:
    last_error = _path_text(driver, ("metadata", "last_error"))
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    pattern = f"%{escaped}%"
    in_deliveries = exists().where(
        deliveries.c.event_id == events.c.id, deliveries.c.last_error.ilike(pattern, escape="\\")
    )
    return or_(last_error.ilike(pattern, escape="\\"), in_deliveries)


# The statements of the latest queries asked: a dashboard asks the same page
# again and again, and building the statement (a LATERAL subquery proxying
# every column) cost more of the worker's CPU than the database's answer.
_PAGES: OrderedDict[tuple[str, EventQuery], Select[Any]] = OrderedDict()
PAGES_KEPT = 128
# A list leaves out the payload (an item does not show it; the detail reads it).
_LISTED = [column for column in events.c if column.name != "payload"]


def _page_statement(driver: Driver, query: EventQuery) -> Select[Any]:
    return _kept(_PAGES, (driver.backend, query), lambda: _build_page_statement(driver, query))


def _kept(cache: OrderedDict[K, V], key: K, build: Callable[[], V]) -> V:
    """``cache[key]``, built on a miss; the PAGES_KEPT latest asked are kept."""
    found = cache.get(key)
    if found is None:
        found = cache[key] = build()
        if len(cache) > PAGES_KEPT:
            cache.popitem(last=False)
    else:
        cache.move_to_end(key)
    return found


def _build_page_statement(driver: Driver, query: EventQuery) -> Select[Any]:
    """Newest first. On PostgreSQL, unless the type is exact, one index walk per event type.

    ``events`` has no index on created_at alone (every publisher's INSERT
    would pay for it), so "the newest events" would be a sequential scan
    and a sort. Instead the types present are found by a loose scan of
    events_type_created_idx, each type's newest rows read from that index
    (a LATERAL join), and the few candidates merged: about 1 ms on 200,000
    events against 160-940 ms (bench/admin_explain.py).
    """
    clauses = where_of(driver, replace(query, event_type=None))
    if query.after is not None:
        clauses.append(tuple_(events.c.created_at, events.c.id) < query.after)
    newest = (events.c.created_at.desc(), events.c.id.desc())
    exact = query.event_type is not None and "*" not in query.event_type
    if driver.backend != "postgresql" or exact:
        if query.event_type is not None:
            clauses.append(_type_clause(query.event_type))
        return select(*_LISTED).where(*clauses).order_by(*newest).limit(query.limit)
    present = types_present()
    per_type = (
        select(*_LISTED)
        .where(events.c.event_type == present.c.event_type, *clauses)
        .order_by(*newest)
        .limit(query.limit)
        .lateral("per_type")
    )
    outer: list[ColumnElement[bool]] = [present.c.event_type.is_not(None)]
    if query.event_type is not None:
        outer.append(_type_clause(query.event_type, present.c.event_type))
    return (
        select(per_type)
        .select_from(present.join(per_type, true()))
        .where(*outer)
        .order_by(per_type.c.created_at.desc(), per_type.c.id.desc())
        .limit(query.limit)
    )


# The longest one page of the events list may take. A filter no index serves
# (a payload path, error text, outcome, handler or aggregate over all of
# history) walks the table; bounded, it answers QueryTooBroad (HTTP 422)
# instead of holding a connection and a core for minutes.
LIST_SECONDS = 5.0
_TOO_BROAD = (
    "this listing ran longer than {:g} s and was stopped: its filters walk more events than "
    "an index serves; bound it with since/until (or an exact type)"
)


async def page(driver: Driver, query: EventQuery) -> list[EventRow]:
    try:
        # Cancelled, asyncpg asks PostgreSQL to stop the statement (a CancelRequest).
        async with asyncio.timeout(LIST_SECONDS):
            return await _page(driver, query)
    except TimeoutError:
        raise QueryTooBroad(_TOO_BROAD.format(LIST_SECONDS)) from None


async def _page(driver: Driver, query: EventQuery) -> list[EventRow]:
    if isinstance(driver, PostgresDriver):
        sql, args = _compiled(driver, query)
        # asyncpg records: by position and by name
        records = typing.cast(list[Mapping[str, Any]], await driver.read_sql(sql, args))
        found = [EventRow(listed_event(r), r["routed_at"], r["deliveries_open"]) for r in records]
        if routed := _routed(found):  # no connection to check out for a page without any
            async with driver.reader.connect() as conn:
                await _add_deliveries(conn, found, routed)
        return found
    async with driver.read_transaction.connect() as conn:
        rows = (await conn.execute(_page_statement(driver, query))).all()
        found = [
            EventRow(row_to_event(row), _time(row.routed_at), row.deliveries_open) for row in rows
        ]
        await _add_deliveries(conn, found, _routed(found))
    return found


def _routed(found: list[EventRow]) -> list[uuid.UUID]:
    return [item.event.id for item in found if item.routed_at is not None or item.deliveries_open]


async def _add_deliveries(
    conn: AsyncConnection, found: list[EventRow], routed: list[uuid.UUID]
) -> None:
    """Each routed event's deliveries (``routed``: their ids, as :func:`_routed` gives)."""
    if not routed:
        return
    by_event: dict[uuid.UUID, list[DeliveryRow]] = {}
    held = await conn.execute(
        select(deliveries)
        .where(deliveries.c.event_id.in_(routed))
        .order_by(deliveries.c.event_id, deliveries.c.handler)
    )
    for row in held:
        by_event.setdefault(row.event_id, []).append(_delivery(row))
    for item in found:
        item.deliveries = by_event.get(item.event.id, [])


# PostgreSQL: each page statement compiled once to its SQL and arguments,
# run on the pooled asyncpg connection as the named admin reads are; page()'s
# timeout, which asyncpg forwards to the server, replaces a statement_timeout
# transaction. Through SQLAlchemy one page of 50 cost 2.0 ms of the worker's
# CPU, its transaction 0.4 ms more; on the driver 0.9 ms.
_COMPILED: OrderedDict[EventQuery, tuple[str, list[Any]]] = OrderedDict()


def _compiled(driver: PostgresDriver, query: EventQuery) -> tuple[str, list[Any]]:
    return _kept(_COMPILED, query, lambda: _compile(driver, _build_page_statement(driver, query)))


def _compile(driver: PostgresDriver, statement: Select[Any]) -> tuple[str, list[Any]]:
    """The statement's SQL and its arguments in order, each through its type's bind
    processing, as SQLAlchemy would have sent them."""
    dialect = driver.engine.dialect
    compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
    args = []
    for name in compiled.positiontup or ():
        value = compiled.params[name]
        # An expanded IN's values (name_1, name_2, ...) take the type of their list.
        bind = compiled.binds.get(name)
        if bind is None:
            bind = compiled.binds.get(name.rpartition("_")[0])
        process = bind.type.bind_processor(dialect) if bind is not None else None
        args.append(process(value) if process is not None and value is not None else value)
    return compiled.string, args


async def detail(driver: Driver, event_id: uuid.UUID) -> EventDetail | None:
    """One event, every delivery, every logged attempt, every dead letter (open or replayed)."""
    async with driver.reader.connect() as conn:
        row = (await conn.execute(select(events).where(events.c.id == event_id))).first()
        if row is None:
            return None
        item = EventRow(row_to_event(row), _time(row.routed_at), row.deliveries_open)
        item.deliveries = [
            _delivery(d)
            for d in await conn.execute(
                select(deliveries)
                .where(deliveries.c.event_id == event_id)
                .order_by(deliveries.c.handler)
            )
        ]
        tried = await conn.execute(
            select(attempts)
            .where(attempts.c.event_id == event_id)
            .order_by(attempts.c.id)
            .limit(500)
        )
        letters = await conn.execute(
            select(dead_letters)
            .where(dead_letters.c.event_id == event_id)
            .order_by(dead_letters.c.created_at)
        )
        return EventDetail(
            item, [_attempt(a) for a in tried], [row_to_dead_letter(d) for d in letters]
        )


def _delivery(row: Any) -> DeliveryRow:
    return DeliveryRow(
        handler=row.handler,
        status=row.status,
        outcome=row.outcome,
        attempts=row.attempts,
        next_attempt_at=_time(row.next_attempt_at),
        locked_by=row.locked_by,
        locked_until=_time(row.locked_until),
        last_error=row.last_error,
        created_at=_time(row.created_at),
        finished_at=_time(row.finished_at),
    )


def _attempt(row: Any) -> AttemptRow:
    return AttemptRow(
        handler=row.handler,
        attempt=row.attempt,
        worker=row.worker,
        finished_at=aware(row.finished_at),
        duration_ms=row.duration_ms,
        outcome=row.outcome,
        error=row.error,
        detail=row.detail,
    )


def _time(value: Any) -> datetime | None:
    return None if value is None else aware(value)
