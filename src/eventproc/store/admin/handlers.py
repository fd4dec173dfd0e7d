"""Per-subscription figures (backlog, due, in flight, rates, durations), workers, pauses.

Every count is bounded: a subscription's backlog is counted over at most
BACKLOG_CAP + 1 rows of each kind, read in claim order from the partial
pending indexes (event_deliveries_pending_idx, events_pending_idx), then
capped. All subscriptions are read in one statement per kind (a UNION ALL
of one bounded subquery each), so a page costs four statements whatever
its size. Rates and durations come from handler_stats, which each worker's
heartbeat fills (one row per handler, minute and worker); the reads sum
them over the fleet.
"""

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    and_,
    bindparam,
    case,
    delete,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.store.driver import Driver
from eventproc.store.errors import idempotent, translated
from eventproc.store.rows import as_time, aware
from eventproc.store.schema import deliveries, events, handler_pauses, handler_stats, workers
from eventproc.store.types import UTCDateTime

BACKLOG_CAP = 10_000  # most rows of each kind a backlog count reads (then capped)

_d, _e, _s, _w = deliveries.c, events.c, handler_stats.c, workers.c
# Literals, not parameters: a partial index's predicate must be provable
# from the query's own text (a generic plan, SQLite's planner).
_PENDING: ColumnElement[str] = literal_column("'pending'")


class StatsDelta(NamedTuple):
    """What one subscription's calls added since the last flush (one worker)."""

    succeeded: int
    failed: int
    duration_sum_ms: float
    buckets: Sequence[int]  # counts per duration bound, and one past the last


@dataclass(frozen=True, slots=True)
class WorkerRow:
    """A worker's heartbeat: who it is, when it last claimed work (and was last seen)."""

    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    last_claim_at: datetime | None
    last_seen_at: datetime | None = None  # the database's clock at its last heartbeat


@dataclass(frozen=True, slots=True)
class Backlog:
    """A subscription's pending work: its deliveries, and events on their rows of its types."""

    count: int
    capped: bool  # BACKLOG_CAP reached: there is at least that much
    due: int  # of those counted, claimable now (not leased, no retry waiting)
    in_flight: int  # of those counted, leased now
    oldest_pending_at: datetime | None  # the oldest of those counted


@dataclass(slots=True)
class Window:
    """handler_stats summed over workers for one time window."""

    seconds: float  # the time its rows cover (up to now)
    succeeded: int = 0
    failed: int = 0
    duration_sum_ms: float = 0.0
    buckets: list[int] = field(default_factory=list)

    def add(self, row: Any) -> None:
        self.succeeded += row.succeeded
        self.failed += row.failed
        self.duration_sum_ms += row.duration_sum_ms
        counts = list(row.duration_buckets or [])
        if not self.buckets:
            self.buckets = [0] * len(counts)
        if len(counts) == len(self.buckets):  # other bounds (another release): left out
            self.buckets = [a + b for a, b in zip(self.buckets, counts, strict=True)]


@dataclass(frozen=True, slots=True)
class HandlerFigures:
    name: str
    backlog: Backlog
    last_minute: Window
    last_hour: Window


class HandlerReads:
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    @idempotent
    async def paused_names(self) -> frozenset[str]:
        """The paused subscriptions' names: what every worker reads every few seconds."""
        async with self.driver.reader.connect() as conn:
            rows = await conn.execute(select(handler_pauses.c.handler))
            return frozenset(row.handler for row in rows)

    @idempotent
    async def now(self) -> datetime:
        async with self.driver.reader.connect() as conn:
            return await _now(self.driver, conn)

    # -- a worker's reports ------------------------------------------------------------

    @translated
    async def beat(self, beat: WorkerRow) -> None:
        """Upsert this worker's row; last_seen_at is the database's clock."""
        insert = _insert(self.driver)(workers).values(
            id=beat.id,
            host=beat.host,
            pid=beat.pid,
            version=beat.version,
            started_at=beat.started_at,
            last_seen_at=self.driver.now(),
            last_claim_at=beat.last_claim_at,
        )
        new = insert.excluded
        statement = insert.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "host": new.host,
                "pid": new.pid,
                "version": new.version,
                "started_at": new.started_at,
                "last_seen_at": new.last_seen_at,
                "last_claim_at": func.coalesce(new.last_claim_at, _w.last_claim_at),
            },
        )
        async with self.driver.begin() as conn:
            await conn.execute(statement)

    @translated
    async def add_stats(
        self, worker: str, minute: datetime, deltas: Mapping[str, StatsDelta]
    ) -> None:
        """Add each subscription's tallies to its (handler, minute, worker) row."""
        if not deltas:
            return
        async with self.driver.begin() as conn:
            found = await conn.execute(
                select(handler_stats)
                .where(_s.worker == worker, _s.minute == minute, _s.handler.in_(list(deltas)))
                .with_for_update()
            )
            rows = {row.handler: row for row in found}
            values = [
                _merged(name, worker, minute, d, rows.get(name)) for name, d in deltas.items()
            ]
            insert = _insert(self.driver)(handler_stats).values(values)
            new = insert.excluded
            await conn.execute(
                insert.on_conflict_do_update(
                    index_elements=["handler", "minute", "worker"],
                    set_={
                        "succeeded": new.succeeded,
                        "failed": new.failed,
                        "duration_sum_ms": new.duration_sum_ms,
                        "duration_buckets": new.duration_buckets,
                    },
                )
            )

    @translated
    async def prune(self, stats_before: datetime, workers_before: datetime) -> None:
        """Forget old minutes (handler_stats_minute_idx) and workers long gone."""
        async with self.driver.begin() as conn:
            await conn.execute(delete(handler_stats).where(_s.minute < stats_before))
            await conn.execute(delete(workers).where(_w.last_seen_at < workers_before))

    # -- the admin API's reads ---------------------------------------------------------

    @idempotent
    async def figures(
        self, subscriptions: Sequence[tuple[str, Sequence[str]]]
    ) -> tuple[datetime, list[HandlerFigures]]:
        """Backlog and last minute / last hour of each (name, type patterns), with the time."""
        names = [name for name, _ in subscriptions]
        async with self.driver.reader.connect() as conn:
            now = await _now(self.driver, conn)
            if not subscriptions:
                return now, []
            at_now, patterns = {"now": now}, tuple((n, tuple(t)) for n, t in subscriptions)
            delivered = (await conn.execute(_backlog_of_deliveries(tuple(names)), at_now)).all()
            found = await conn.execute(_backlog_on_rows(self.driver.backend, patterns), at_now)
            on_rows = found.all()
            minute = now.replace(second=0, microsecond=0)
            windows = {
                name: (Window(_covered(now, minute, 1)), Window(_covered(now, minute, 60)))
                for name in names
            }
            since_minute = minute - timedelta(minutes=1)
            rows = await conn.execute(
                _STATS, {"names": names, "since": minute - timedelta(minutes=60)}
            )
            for row in rows:
                last_minute, last_hour = windows[row.handler]
                last_hour.add(row)
                if aware(row.minute) >= since_minute:
                    last_minute.add(row)
        parts = _parts(delivered, on_rows, len(names))
        return now, [
            HandlerFigures(name, _backlog(parts[i]), *windows[name]) for i, name in enumerate(names)
        ]

    @idempotent
    async def workers(
        self, seen_seconds: float, *, after: str | None, limit: int
    ) -> tuple[datetime, list[WorkerRow]]:
        """Workers seen in the last ``seen_seconds``, by id (keyset after ``after``)."""
        rows = await self.driver.read("admin_workers", [seen_seconds, after, limit])
        return aware(rows[0][0]), [_worker(row) for row in rows if row[1] is not None]


def _worker(row: Sequence[Any]) -> WorkerRow:
    """A row of admin_workers: the clock, then WorkerRow's columns in order."""
    worker, host, pid, version, started, claimed, seen = row[1:]
    return WorkerRow(worker, host, pid, version, aware(started), as_time(claimed), aware(seen))


def _insert(driver: Driver) -> Any:
    return pg_insert if driver.backend == "postgresql" else sqlite_insert


async def _now(driver: Driver, conn: AsyncConnection) -> datetime:
    return aware((await conn.execute(select(driver.now()))).scalar_one())


def _merged(
    name: str, worker: str, minute: datetime, delta: StatsDelta, row: Any
) -> dict[str, Any]:
    """The row's new values: what it held (if anything) plus this flush's delta."""
    buckets = list(delta.buckets)
    old = list(row.duration_buckets or []) if row is not None else []
    if len(old) == len(buckets):
        buckets = [a + b for a, b in zip(old, buckets, strict=True)]
    return {
        "handler": name,
        "minute": minute,
        "worker": worker,
        "succeeded": delta.succeeded + (row.succeeded if row is not None else 0),
        "failed": delta.failed + (row.failed if row is not None else 0),
        "duration_sum_ms": delta.duration_sum_ms + (row.duration_sum_ms if row is not None else 0),
        "duration_buckets": buckets,
    }


def _covered(now: datetime, minute: datetime, minutes: int) -> float:
    """Seconds a window of ``minutes`` whole minutes plus the current one covers."""
    return (now - (minute - timedelta(minutes=minutes))).total_seconds()


# The figures' statements: built once per page of subscriptions, the time a
# parameter (building them cost more of a request's CPU than running them).
_NOW = bindparam("now", type_=UTCDateTime())
_STATS = select(handler_stats).where(
    _s.handler.in_(bindparam("names", expanding=True)), _s.minute >= bindparam("since")
)


def _counted(
    key: int, columns: Any, created: Any, next_attempt: Any, locked: Any, now: Any = _NOW
) -> Select[Any]:
    """One subscription's bounded count: how many, due, leased, oldest."""
    inner = columns.subquery()
    ready = and_(
        or_(inner.c[next_attempt].is_(None), inner.c[next_attempt] <= now),
        or_(inner.c[locked].is_(None), inner.c[locked] < now),
    )
    return select(
        literal(key).label("k"),
        func.count().label("n"),
        func.coalesce(func.sum(case((ready, 1), else_=0)), 0).label("due"),
        func.coalesce(func.sum(case((inner.c[locked] >= now, 1), else_=0)), 0).label("busy"),
        func.min(inner.c[created]).label("oldest"),
    ).select_from(inner)


@functools.lru_cache(maxsize=64)
def _backlog_of_deliveries(names: tuple[str, ...]) -> Any:
    parts = [
        _counted(
            k,
            select(_d.event_created_at, _d.next_attempt_at, _d.locked_until)
            .where(_d.status == _PENDING, _d.handler == name)
            .order_by(_d.priority.desc(), _d.event_created_at, _d.event_id)
            .limit(BACKLOG_CAP + 1),
            "event_created_at",
            "next_attempt_at",
            "locked_until",
        )
        for k, name in enumerate(names)
    ]
    return union_all(*parts) if len(parts) > 1 else parts[0]


@functools.lru_cache(maxsize=64)
def _backlog_on_rows(backend: str, subscriptions: tuple[tuple[str, tuple[str, ...]], ...]) -> Any:
    """Events still on their rows (not routed yet) whose type a subscription takes."""
    parts = [
        _counted(
            k,
            select(_e.created_at, _e.next_attempt_at, _e.locked_until)
            .where(_e.processed == false(), _e.routed_at.is_(None), _types(backend, types))
            .order_by(_e.priority.desc(), _e.created_at, _e.id)
            .limit(BACKLOG_CAP + 1),
            "created_at",
            "next_attempt_at",
            "locked_until",
        )
        for k, (_, types) in enumerate(subscriptions)
    ]
    return union_all(*parts) if len(parts) > 1 else parts[0]


def _types(backend: str, patterns: Sequence[str]) -> ColumnElement[bool]:
    """SQL for type patterns: exact names, ``user.*`` (``user.`` and more), ``*``."""
    if "*" in patterns:
        return true()
    clauses: list[ColumnElement[bool]] = []
    exact = [pattern for pattern in patterns if not pattern.endswith(".*")]
    if exact:
        clauses.append(_e.event_type.in_(exact))
    for pattern in patterns:
        if pattern.endswith(".*"):
            clauses.append(_prefix(backend, pattern[:-1]))
    return or_(*clauses)


def _prefix(backend: str, prefix: str) -> ColumnElement[bool]:
    """Types that start with ``prefix`` and go on, case-sensitive on both backends."""
    if backend == "postgresql":
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return _e.event_type.like(escaped + "_%", escape="\\")
    # SQLite's LIKE ignores case; GLOB does not ([x] quotes a special character).
    quoted = "".join(f"[{c}]" if c in "*?[" else c for c in prefix)
    return _e.event_type.bool_op("GLOB")(literal(quoted + "?*", String))


class _Part(NamedTuple):
    n: int
    due: int
    busy: int
    oldest: datetime | None


def _parts(delivered: Any, on_rows: Any, size: int) -> list[tuple[_Part, _Part]]:
    empty = _Part(0, 0, 0, None)
    found: list[list[_Part]] = [[empty, empty] for _ in range(size)]
    for side, rows in enumerate((delivered, on_rows)):
        for row in rows:
            found[row.k][side] = _Part(int(row.n), int(row.due), int(row.busy), as_time(row.oldest))
    return [(a, b) for a, b in found]


def _backlog(parts: tuple[_Part, _Part]) -> Backlog:
    delivered, on_rows = parts
    total = delivered.n + on_rows.n
    capped = delivered.n > BACKLOG_CAP or on_rows.n > BACKLOG_CAP or total > BACKLOG_CAP
    oldest = [t for t in (delivered.oldest, on_rows.oldest) if t is not None]
    return Backlog(
        count=min(total, BACKLOG_CAP),
        capped=capped,
        due=min(delivered.due + on_rows.due, BACKLOG_CAP),
        in_flight=min(delivered.busy + on_rows.busy, BACKLOG_CAP),
        oldest_pending_at=min(oldest) if oldest else None,
    )
