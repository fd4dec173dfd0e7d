"""SqlStore: every store operation both backends share, over an AsyncEngine.

Subclasses override only what the dialects disagree on: the clock, the JSON
merge, the lease fence, conflict-ignoring inserts, schema creation and
wake-ups. Nothing above ``eventproc.store`` sees a SQLAlchemy exception.
"""

import contextlib
import functools
import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import (
    ColumnElement,
    Insert,
    Select,
    and_,
    delete,
    exists,
    func,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventproc.errors import (
    AlreadyProcessed,
    Conflict,
    LeaseLost,
    NotFound,
    StoreConflict,
    StoreError,
    StoreUnavailable,
)
from eventproc.event import DeadLetter, Event, NewEvent, Outcome
from eventproc.store.protocol import (
    BlockedAggregate,
    BlockedSummary,
    ClaimPolicy,
    EventFilter,
    Kind,
    Lease,
    SchemaHook,
    StoreStats,
    WriteBack,
)
from eventproc.store.queries import Backend
from eventproc.store.schema import dead_letters, events

P = ParamSpec("P")
T = TypeVar("T")

ERROR_CHARS = 2000  # of an error message kept in metadata.last_error
CHUNK = 500  # rows per fenced statement: well under every bind-parameter limit
CLAIM_WINDOW = 100  # available events an ordered claim looks at (see event_claim_many)
BLOCKED_SCAN = 1000  # most blocked aggregates one summary reads (the count is capped there)

_UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, OSError, TimeoutError)


def translated(
    func_: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Map driver errors to eventproc.errors once, at the store boundary."""

    @functools.wraps(func_)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func_(*args, **kwargs)
        except StoreError:
            raise
        except (sa_exc.SQLAlchemyError, *_UNAVAILABLE) as exc:
            raise translate_error(exc) from exc

    return wrapper


def idempotent(
    func_: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    """Retry once when the connection turned out dead (e.g. after a database restart).

    Only for operations that are safe to repeat: reads, and inserts that
    ignore ids already present. The pool drops its stale connections on the
    first failure, so the second try gets a fresh one.
    """
    translated_func = translated(func_)

    @functools.wraps(func_)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await translated_func(*args, **kwargs)
        except StoreUnavailable:
            return await translated_func(*args, **kwargs)

    return wrapper


# SQLSTATEs after which the same statement can simply be tried again:
# connection exceptions (class 08), the server starting, stopping or in
# recovery (57P01-57P03), too many connections, deadlock, serialization.
_RETRYABLE_STATES = ("08", "57P01", "57P02", "57P03", "53300", "40001", "40P01")
_CONFLICT_STATES = ("40001", "40P01")  # of those, the ones that say nothing about the server


def translate_error(exc: BaseException) -> StoreError:
    if isinstance(exc, _UNAVAILABLE):
        return StoreUnavailable(f"database unavailable: {_first_line(exc)}")
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return StoreUnavailable(f"database connection lost: {_first_line(exc)}")
    state = _sqlstate(exc)
    if state in _CONFLICT_STATES:
        return StoreConflict(f"database conflict ({state}), try again: {_first_line(exc)}")
    if state and state.startswith(_RETRYABLE_STATES):
        return StoreUnavailable(f"database busy or restarting ({state}): {_first_line(exc)}")
    return StoreError(f"database error: {_first_line(exc)}")


def _sqlstate(exc: BaseException) -> str | None:
    for candidate in (getattr(exc, "orig", None), exc.__cause__, exc):
        state = getattr(candidate, "sqlstate", None) or getattr(candidate, "pgcode", None)
        if isinstance(state, str):
            return state
    return None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc) or type(exc).__name__
    return text.strip().splitlines()[0][:500]


def _chunks(items: Sequence[T], size: int = CHUNK) -> list[Sequence[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def row_to_event(row: Row[Any]) -> Event:
    values = row._mapping
    return Event(
        id=values["id"],
        event_type=values["event_type"],
        payload=values["payload"],
        aggregate_id=values["aggregate_id"],
        aggregate_type=values["aggregate_type"],
        metadata=values["metadata"] or {},
        processed=bool(values["processed"]),
        version=values["version"] if values["version"] is not None else 1,
        created_at=values["created_at"],
        created_by=values["created_by"],
        priority=values["priority"],
        attempts=values["attempts"],
        next_attempt_at=values["next_attempt_at"],
        locked_by=values["locked_by"],
        locked_until=values["locked_until"],
        processed_at=values["processed_at"],
        outcome=values["outcome"],
    )


def claim_window(limit: int) -> int:
    """Available events an ordered claim of ``limit`` tests against the aggregate gate."""
    return max(CLAIM_WINDOW, limit * 5)


def _as_is(value: Any) -> Any:
    return value


def event_from_returned(
    row: Sequence[Any],
    *,
    as_uuid: Callable[[Any], Any] = _as_is,
    as_time: Callable[[Any], Any] = _as_is,
) -> Event:
    """An Event from a fast path's RETURNING row (columns as in ``EVENT_COLUMNS``).

    payload and metadata arrive as JSON text; a driver that does not return
    uuids and aware datetimes itself passes converters (each gets None too).
    """
    return Event(
        id=as_uuid(row[0]),
        event_type=row[1],
        aggregate_id=as_uuid(row[2]),
        aggregate_type=row[3],
        payload=json.loads(row[4]),
        metadata=(json.loads(row[5]) if row[5] is not None else None) or {},
        processed=bool(row[6]),
        version=row[7] if row[7] is not None else 1,
        created_at=as_time(row[8]),
        created_by=row[9],
        priority=row[10],
        attempts=row[11],
        next_attempt_at=as_time(row[12]),
        locked_by=row[13],
        locked_until=as_time(row[14]),
        processed_at=as_time(row[15]),
        outcome=row[16],
    )


def by_outcome(completions: Sequence[WriteBack]) -> dict[Outcome, list[Lease]]:
    """One completion statement per outcome: the outcome is a parameter of it."""
    grouped: dict[Outcome, list[Lease]] = {}
    for completion in completions:
        assert completion.closing is not None
        grouped.setdefault(completion.closing, []).append(completion.lease)
    return grouped


def sorted_for_handling(claimed: list[Event]) -> list[Event]:
    """Claim order: priority first, then oldest (runs are grouped later)."""
    return sorted(claimed, key=lambda e: (-e.priority, e.created_at or datetime.min, e.id))


def blocked_summary_of(rows: Sequence[Row[Any]], scanned: int, now: datetime) -> BlockedSummary:
    items = [
        BlockedAggregate(
            aggregate_id=row.aggregate_id,
            aggregate_type=row.aggregate_type,
            event_id=row.id,
            event_type=row.event_type,
            reason="retrying" if not row.processed else "dead_lettered",
            waiting=row.waiting,
            retry_at=row.next_attempt_at if not row.processed else None,
            waiting_since=_aware(row.waiting_since),
            waiting_due=row.waiting_due,
        )
        for row in rows
    ]
    return BlockedSummary(
        items=tuple(items),
        capped=scanned >= BLOCKED_SCAN,
        database_now=now,
    )


def row_to_dead_letter(row: Row[Any]) -> DeadLetter:
    return DeadLetter(**dict(row._mapping))


class SqlStore(ABC):
    """The portable half of every backend; each backend supplies the abstract rest."""

    backend: Backend
    url_for_display: str

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        worker_name: str = "eventproc",
        reader: AsyncEngine | None = None,
    ) -> None:
        self.engine = engine
        self.reader = reader or engine
        self.worker_name = worker_name
        self._wakers: list[Callable[[], None]] = []

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction (committed on exit, rolled back on error)."""
        return self.engine.begin()

    # -- dialect hooks ---------------------------------------------------

    @abstractmethod
    def now(self) -> ColumnElement[datetime]:
        """The clock every scheduling decision uses."""

    @abstractmethod
    def later(self, seconds: float) -> ColumnElement[datetime]:
        """The database's clock ``seconds`` from now."""

    @abstractmethod
    def merged_metadata(self, patch: dict[str, Any]) -> ColumnElement[Any]:
        """``metadata`` with ``patch`` merged in; other keys are kept."""

    def fenced(self, leases: Sequence[Lease]) -> ColumnElement[bool]:
        """Rows whose current claim is exactly one of ``leases``."""
        return tuple_(events.c.id, events.c.locked_by).in_(
            [(lease.event_id, lease.token) for lease in leases]
        )

    @abstractmethod
    def insert_ignoring_conflicts(self, table: Any) -> Insert:
        """An INSERT into ``table`` that skips ids already present."""

    def lock_skipping_locked(self, statement: Select[Any]) -> Select[Any]:
        """Let concurrent claimers pass each other (a no-op where writes serialize)."""
        return statement

    @abstractmethod
    async def migrate(self, hooks: Sequence[SchemaHook] = ()) -> None:
        """Create or upgrade eventproc's schema, then run the packs' hooks."""

    @abstractmethod
    async def listen(self, on_wake: Callable[[], None]) -> None:
        """Call ``on_wake`` whenever another process publishes; runs until cancelled."""

    # -- lifecycle ---------------------------------------------------------

    async def open(self) -> None:
        await self.ping()

    async def close(self) -> None:
        await self.engine.dispose()
        if self.reader is not self.engine:
            await self.reader.dispose()

    @idempotent
    async def ping(self) -> datetime:
        async with self.reader.connect() as conn:
            value = (await conn.execute(select(self.now()))).scalar_one()
        return _aware(value)

    def add_local_waker(self, waker: Callable[[], None]) -> None:
        """Called after this process commits new or replayed events."""
        self._wakers.append(waker)

    def _wake_local(self) -> None:
        for waker in self._wakers:
            waker()

    # -- publishing and reading --------------------------------------------

    async def event_insert_many(
        self, new_events: Sequence[NewEvent], connection: AsyncConnection | None = None
    ) -> int:
        """Insert events, ignoring ids that already exist; returns how many were new.

        With ``connection`` the rows join that open transaction (a
        transactional handler's follow-ups); otherwise they commit at once and
        this process's processor is woken.
        """
        if not new_events:
            return 0
        if connection is not None:
            return await self._insert_in(connection, new_events)
        inserted = await self._insert_committed(new_events)
        self._wake_local()
        return inserted

    @translated
    async def _insert_in(self, connection: AsyncConnection, new_events: Sequence[NewEvent]) -> int:
        return await self.insert_rows(connection, new_events)

    @idempotent
    async def _insert_committed(self, new_events: Sequence[NewEvent]) -> int:
        async with self.begin() as conn:
            return await self.insert_rows(conn, new_events)

    async def insert_rows(self, connection: AsyncConnection, new_events: Sequence[NewEvent]) -> int:
        rows = [
            {
                "id": item.id,
                "event_type": item.event_type,
                "aggregate_id": item.aggregate_id,
                "aggregate_type": item.aggregate_type,
                "payload": item.payload,
                "metadata": item.metadata,
                "version": item.version,
                "created_by": item.created_by,
                "priority": item.priority,
            }
            for item in new_events
        ]
        result = await connection.execute(self.insert_ignoring_conflicts(events), rows)
        return max(result.rowcount, 0)

    @idempotent
    async def event_get(self, event_id: uuid.UUID) -> Event | None:
        async with self.reader.connect() as conn:
            row = (await conn.execute(select(events).where(events.c.id == event_id))).first()
        return row_to_event(row) if row else None

    @idempotent
    async def event_list(self, query: EventFilter) -> list[Event]:
        statement: Select[Any] = select(events)
        if query.event_type is not None:
            statement = statement.where(events.c.event_type == query.event_type)
        if query.processed is not None:
            statement = statement.where(events.c.processed == query.processed)
        if query.outcome is not None:
            statement = statement.where(events.c.outcome == query.outcome)
        if query.aggregate_id is not None:
            statement = statement.where(events.c.aggregate_id == query.aggregate_id)
        if query.ids is not None:
            statement = statement.where(events.c.id.in_(list(query.ids)))
        if query.before is not None:
            statement = statement.where(events.c.created_at < query.before)
        statement = statement.order_by(events.c.created_at.desc(), events.c.id.desc()).limit(
            query.limit
        )
        async with self.reader.connect() as conn:
            rows = (await conn.execute(statement)).all()
        return [row_to_event(row) for row in rows]

    # -- claiming ------------------------------------------------------------

    def claimable(self, ordered: bool, block_on_dead_letters: bool = True) -> ColumnElement[bool]:
        """Pending, due, not leased, and (when ordered) first of its aggregate."""
        if not ordered:
            return self.available()
        return and_(self.available(), self.aggregate_gate(block_on_dead_letters))

    def available(self) -> ColumnElement[bool]:
        """Pending, due and not leased (aggregates aside)."""
        now = self.now()
        return and_(
            events.c.processed == False,  # noqa: E712 - SQL, not Python truthiness
            or_(events.c.next_attempt_at.is_(None), events.c.next_attempt_at <= now),
            or_(events.c.locked_until.is_(None), events.c.locked_until < now),
        )

    def aggregate_gate(self, block_on_dead_letters: bool) -> ColumnElement[bool]:
        """No earlier event of the same aggregate is still pending (or dead-lettered).

        An earlier pending event (leased, waiting for a retry, or simply older)
        holds this one back: never two at a time, never out of created_at order.
        """
        earlier = events.alias("earlier")
        before_this = tuple_(earlier.c.created_at, earlier.c.id) < tuple_(
            events.c.created_at, events.c.id
        )
        gate = ~exists().where(
            earlier.c.aggregate_id == events.c.aggregate_id,
            earlier.c.processed == False,  # noqa: E712
            before_this,
        )
        if block_on_dead_letters:
            gate = and_(
                gate,
                ~exists().where(
                    earlier.c.aggregate_id == events.c.aggregate_id,
                    earlier.c.outcome == Outcome.DEAD_LETTERED.value,
                    before_this,
                ),
            )
        return or_(events.c.aggregate_id.is_(None), gate)

    def claim_order(self) -> tuple[Any, ...]:
        return (events.c.priority.desc(), events.c.created_at, events.c.id)

    @abstractmethod
    async def event_claim_many(
        self, token: str, policy: ClaimPolicy, *, completing: Sequence[WriteBack] = ()
    ) -> list[Event]:
        """Claim up to ``policy.limit`` events, ordered for handling.

        Each backend runs this on its own fast path (postgres.py,
        sqlite_hot.py): one fixed statement that picks (in a CTE, so it is
        evaluated once) and leases the events and counts the attempt, so an
        event whose workers keep dying still spends its budget. Ordered
        claims test only the first CLAIM_WINDOW available events against the
        aggregate gate: a burst of thousands on one aggregate costs a bounded
        scan per claim instead of a probe per pending row, and events further
        back wait for the window to move. Then :meth:`finish_claim`.

        With ``policy.follow`` (ordered mode), the batch's spare room is filled
        with the events that come right after each claimed aggregate head, so
        a burst on one aggregate drains a run per round trip instead of one
        event. Callers must handle a run in order and give back its tail when
        an event of it does not succeed.

        ``completing``: successes to write back first, atomically with the
        claim (as :meth:`event_complete_many` would, in order when
        ``policy.ordered``), so that a busy worker spends one statement and
        one commit per batch instead of two. An event they complete is not
        claimed again; an event they unblock may be. If the call raises,
        neither happened.
        """

    async def finish_claim(
        self, claimed: list[Event], token: str, policy: ClaimPolicy
    ) -> list[Event]:
        """After a backend's claim statement committed: revoke stale runs, add followers, sort.

        Only when a head was taken over or the batch has room (ordered mode),
        through SQLAlchemy in a transaction of its own; safe after the claim
        committed, because the heads we hold gate every later event of their
        aggregates. If that transaction fails, the claim is given back (its
        attempts too) rather than left leased, unhandled, until it expires.
        """
        heads = self.heads_to_extend(claimed, policy)
        if heads:
            try:
                async with self.begin() as tx:
                    await self.extend_runs(tx, claimed, heads, token, policy)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.event_release_many([Lease.of(event) for event in claimed])
                raise
        return sorted_for_handling(claimed)

    def heads_to_extend(self, claimed: Sequence[Event], policy: ClaimPolicy) -> list[Event]:
        """The claimed aggregate heads whose runs need work after the claim.

        Only in ordered mode, and only when a head was taken over (its stalled
        run is revoked) or the batch has room for followers.
        """
        if not policy.ordered:
            return []
        heads = [event for event in claimed if event.aggregate_id is not None]
        follow = policy.follow and len(claimed) < policy.limit
        if heads and (follow or any(head.attempts > 1 for head in heads)):
            return heads
        return []

    async def extend_runs(
        self,
        conn: AsyncConnection,
        claimed: list[Event],
        heads: Sequence[Event],
        token: str,
        policy: ClaimPolicy,
    ) -> None:
        """Revoke stalled runs behind ``heads``, then add followers to ``claimed``."""
        await self._revoke_stale_runs(conn, heads, token)
        spare = policy.limit - len(claimed)
        if policy.follow and spare > 0:
            claimed.extend(await self._claim_followers(conn, heads, token, policy, spare))

    async def _revoke_stale_runs(
        self, conn: AsyncConnection, heads: Sequence[Event], token: str
    ) -> None:
        """Take back the rest of a run whose head we just took over.

        A head claimed again (attempts > 1) may have been part of a run whose
        worker stalled past its lease; that worker's later events of the
        aggregate (leased with the same, expired, lease) must not run ahead of
        the head, so their lease is cleared: the stalled worker finds it lost
        before it handles them.
        """
        taken_over = [head.aggregate_id for head in heads if head.attempts > 1]
        if not taken_over:
            return
        await conn.execute(
            update(events)
            .where(
                events.c.id.in_(
                    # Rows locked right now belong to a transaction still in
                    # progress (perhaps of a paused worker): never wait for it.
                    self.lock_skipping_locked(
                        select(events.c.id).where(
                            events.c.aggregate_id.in_(taken_over),
                            events.c.processed == False,  # noqa: E712
                            events.c.locked_by.is_not(None),
                            events.c.locked_by != token,
                        )
                    ).scalar_subquery()
                )
            )
            .values(locked_by=None, locked_until=None)
        )

    async def _claim_followers(
        self,
        conn: AsyncConnection,
        heads: Sequence[Event],
        token: str,
        policy: ClaimPolicy,
        spare: int,
    ) -> list[Event]:
        """Lease the due events that directly follow each head, in order.

        Nobody else can claim them: the head we hold (pending) gates them.
        A run stops at the first event that is not due, is leased, or (in
        block mode) is a dead-lettered one.
        """
        per_head = max(spare // len(heads), 1)
        runs = [
            await self._run_behind(conn, head, per_head, policy.block_on_dead_letters)
            for head in heads
        ]
        contiguous = await self._lockable_prefixes(conn, [run for run in runs if run])
        if not contiguous:
            return []
        result = await conn.execute(
            update(events)
            .where(events.c.id.in_(contiguous), self.available())
            .values(
                locked_by=token,
                locked_until=self.later(policy.lease_seconds),
                attempts=events.c.attempts + 1,
            )
            .returning(*events.c)
        )
        return [row_to_event(row) for row in result.all()]

    async def _run_behind(
        self, conn: AsyncConnection, head: Event, most: int, block_on_dead_letters: bool
    ) -> list[uuid.UUID]:
        """The due events right behind ``head`` in its aggregate (up to ``most``).

        An index seek per aggregate (events_aggregate_pending_idx), however
        many events wait behind the head. The head itself must come first: a
        run is only the events directly behind it.
        """
        considered = events.c.processed == False  # noqa: E712
        if block_on_dead_letters:
            considered = or_(considered, events.c.outcome == Outcome.DEAD_LETTERED.value)
        now = self.now()
        ready = and_(
            or_(events.c.next_attempt_at.is_(None), events.c.next_attempt_at <= now),
            or_(events.c.locked_until.is_(None), events.c.locked_until < now),
        ).label("ready")
        rows = (
            await conn.execute(
                select(events.c.id, events.c.processed, ready)
                .where(events.c.aggregate_id == head.aggregate_id, considered)
                .order_by(events.c.created_at, events.c.id)
                .limit(most + 1)
            )
        ).all()
        if not rows or rows[0].id != head.id:
            return []
        run: list[uuid.UUID] = []
        for row in rows[1:]:
            if row.processed or not row.ready:
                break
            run.append(row.id)
        return run

    async def _lockable_prefixes(
        self, conn: AsyncConnection, runs: Sequence[list[uuid.UUID]]
    ) -> list[uuid.UUID]:
        """Lock the runs' events without waiting; each run is cut at its first locked one.

        A run must stay contiguous, so what follows a row locked elsewhere is dropped.
        """
        chosen = [event_id for run in runs for event_id in run]
        if not chosen:
            return []
        lockable = set(
            (
                await conn.execute(
                    self.lock_skipping_locked(
                        select(events.c.id).where(events.c.id.in_(chosen), self.available())
                    )
                )
            ).scalars()
        )
        contiguous: list[uuid.UUID] = []
        for run in runs:
            for event_id in run:
                if event_id not in lockable:
                    break
                contiguous.append(event_id)
        return contiguous

    @translated
    async def event_claim_one(self, event_id: uuid.UUID, token: str, policy: ClaimPolicy) -> Event:
        """Claim this event now (a manual trigger), even if its retry is not due yet.

        What cannot be bypassed: a lease another worker holds, and (ordered)
        an earlier event of its aggregate that is still pending. The Conflict
        raised says which, naming the event in the way.
        """
        now = self.now()
        claimable = and_(
            events.c.processed == False,  # noqa: E712
            or_(events.c.locked_until.is_(None), events.c.locked_until < now),
        )
        if policy.ordered:
            claimable = and_(claimable, self.aggregate_gate(policy.block_on_dead_letters))
        statement = (
            update(events)
            .where(events.c.id == event_id, claimable)
            .values(
                locked_by=token,
                locked_until=self.later(policy.lease_seconds),
                attempts=events.c.attempts + 1,
                next_attempt_at=None,
            )
            .returning(*events.c)
        )
        async with self.begin() as conn:
            row = (await conn.execute(statement)).first()
            if row is not None:
                return row_to_event(row)
            raise await self._why_not_claimed(conn, event_id, policy)

    async def _why_not_claimed(
        self, conn: AsyncConnection, event_id: uuid.UUID, policy: ClaimPolicy
    ) -> StoreError:
        current = (await conn.execute(select(events).where(events.c.id == event_id))).first()
        if current is None:
            return NotFound("Event not found")
        event = row_to_event(current)
        now = _aware((await conn.execute(select(self.now()))).scalar_one())
        if event.processed:
            return AlreadyProcessed("Event already processed")
        if event.locked_until is not None and event.locked_until >= now:
            return Conflict(f"Event is being processed by {event.locked_by}")
        if event.aggregate_id is None:
            return Conflict("Event could not be claimed just now; try again")
        earlier = events.alias("earlier")
        holding = earlier.c.processed == False  # noqa: E712
        if policy.block_on_dead_letters:
            holding = or_(holding, earlier.c.outcome == Outcome.DEAD_LETTERED.value)
        found = (
            await conn.execute(
                select(earlier)
                .where(
                    earlier.c.aggregate_id == event.aggregate_id,
                    holding,
                    tuple_(earlier.c.created_at, earlier.c.id) < (event.created_at, event.id),
                )
                .order_by(earlier.c.created_at, earlier.c.id)
                .limit(1)
            )
        ).first()
        if found is None:
            return Conflict("Event could not be claimed just now; try again")
        return Conflict(
            f"Event is waiting behind an earlier event of its aggregate {event.aggregate_id}: "
            f"{found.id} ({found.event_type}) is {_state_of(row_to_event(found), now)}"
        )

    # -- write-backs (all fenced on the claim's token) --------------------------

    def _completion_values(self, outcome: Outcome) -> dict[str, Any]:
        return {
            "processed": True,
            "outcome": outcome.value,
            "processed_at": self.now(),
            "locked_by": None,
            "locked_until": None,
            "next_attempt_at": None,
            "metadata": self.merged_metadata(
                {"processed_at": self.now(), "processed_by": self.worker_name}
            ),
        }

    async def event_write_back(self, batch: Sequence[WriteBack], *, in_order: bool = False) -> int:
        """Write a batch of results back, fenced on each claim's token."""
        done = await self.event_complete_many(
            [item for item in batch if item.closing is not None], in_order=in_order
        )
        done += await self.event_retry_many([item for item in batch if item.rescheduling])
        return done + await self.event_dead_letter_many(
            [item for item in batch if item.kind is Kind.DEAD_LETTERED]
        )

    @abstractmethod
    async def event_complete_many(
        self, completions: Sequence[WriteBack], *, in_order: bool = False
    ) -> int:
        """Write successes back (fenced on each claim's token): each backend's fast path.

        ``in_order`` (ORDERING=aggregate): an event is not completed while an
        earlier event of its aggregate is pending and not completed by this
        same call. A run whose head lease expired and was taken over while
        its results waited (a database outage) would otherwise see its later
        events marked done before the head ran again; they run again after it.
        """

    @asynccontextmanager
    async def event_transaction(self, lease: Lease) -> AsyncIterator[AsyncConnection]:
        """A transaction that holds the event's row and completes it on exit.

        The fence is taken first, so another worker cannot claim the event
        while the handler runs; if the lease was already lost, LeaseLost is
        raised before the handler starts. Leaving the block by an exception
        rolls back everything the handler wrote. Only database errors are
        translated (into StoreError): anything else the handler raises, an
        OSError of its own included, reaches the caller as raised.
        """
        raised: BaseException | None = None
        try:
            async with _translated_cm(), self.begin() as conn:
                held = await conn.execute(
                    update(events)
                    .where(self.fenced([lease]))
                    .values(locked_until=events.c.locked_until)
                )
                if held.rowcount != 1:
                    raise LeaseLost(f"lease on {lease.event_id} was lost")
                try:
                    yield conn
                except (sa_exc.SQLAlchemyError, StoreError, GeneratorExit):
                    raise
                except BaseException as exc:
                    raised = exc
                    raise _HandlerRaised from exc
                await conn.execute(
                    update(events)
                    .where(self.fenced([lease]))
                    .values(**self._completion_values(Outcome.SUCCEEDED))
                )
        except _HandlerRaised:
            assert raised is not None
            raise raised from None

    @abstractmethod
    async def event_retry_many(self, failures: Sequence[WriteBack]) -> int:
        """Reschedule failed events (fenced): one named query for the batch."""

    @abstractmethod
    async def event_dead_letter_many(self, burials: Sequence[WriteBack]) -> int:
        """Close events as dead-lettered and insert their dead letters, atomically."""

    @translated
    async def event_release_many(self, leases: Sequence[Lease]) -> int:
        """Give claims back unfinished (shutdown): the attempt is not spent."""
        done = 0
        async with self.begin() as conn:
            for chunk in _chunks(leases):
                result = await conn.execute(
                    update(events)
                    .where(self.fenced(chunk))
                    .values(
                        locked_by=None,
                        locked_until=None,
                        attempts=events.c.attempts - 1,
                    )
                )
                done += result.rowcount
        if done:
            self._wake_local()
        return done

    @translated
    async def event_renew_leases(
        self, leases: Sequence[Lease], lease_seconds: float
    ) -> set[uuid.UUID]:
        renewed: set[uuid.UUID] = set()
        async with self.begin() as conn:
            for chunk in _chunks(leases):
                result = await conn.execute(
                    update(events)
                    .where(self.fenced(chunk))
                    .values(locked_until=self.later(lease_seconds))
                    .returning(events.c.id)
                )
                renewed.update(result.scalars().all())
        return renewed

    @translated
    async def event_replay(self, event_ids: Sequence[uuid.UUID]) -> int:
        """Make processed events pending again, with a fresh retry budget.

        The database's replay trigger does the rest, for this call and for
        the seed's raw ``UPDATE events SET processed = false`` alike: it
        resets the budget, closes the event's open dead letters and moves the
        last failure into ``metadata.previous_failures``.
        """
        done = 0
        async with self.begin() as conn:
            for chunk in _chunks(list(event_ids)):
                result = await conn.execute(
                    update(events)
                    .where(events.c.id.in_(chunk), events.c.processed == True)  # noqa: E712
                    .values(
                        processed=False,
                        metadata=self.merged_metadata(
                            {"replayed": True, "replayed_at": self.now()}
                        ),
                    )
                )
                done += result.rowcount
        if done:
            self._wake_local()
        return done

    # -- dead letters and stats ------------------------------------------------

    @idempotent
    async def dead_letter_list(self, limit: int = 100) -> list[DeadLetter]:
        async with self.reader.connect() as conn:
            rows = (
                await conn.execute(
                    select(dead_letters).order_by(dead_letters.c.created_at.desc()).limit(limit)
                )
            ).all()
        return [row_to_dead_letter(row) for row in rows]

    @translated
    async def dead_letter_delete(self, ids: Sequence[uuid.UUID]) -> int:
        """Discard dead letters; their events are marked ``discarded``.

        A discarded event no longer holds back its aggregate
        (AGGREGATE_FAILURE=block) and stays in the table, replayable.
        """
        async with self.begin() as conn:
            removed = await conn.execute(
                delete(dead_letters)
                .where(dead_letters.c.id.in_(list(ids)))
                .returning(dead_letters.c.event_id)
            )
            event_ids = list(removed.scalars().all())
            if event_ids:
                await conn.execute(
                    update(events)
                    .where(
                        events.c.id.in_(event_ids),
                        events.c.outcome == Outcome.DEAD_LETTERED.value,
                    )
                    .values(outcome=Outcome.DISCARDED.value)
                )
        return len(event_ids)

    @idempotent
    async def aggregates_blocked(
        self, limit: int = 20, *, include_dead_letters: bool = True
    ) -> list[BlockedAggregate]:
        """Aggregates whose later events wait behind a retrying (or dead-lettered) one."""
        summary = await self.blocked_summary(include_dead_letters=include_dead_letters)
        return list(summary.items[:limit])

    @idempotent
    async def blocked_summary(self, *, include_dead_letters: bool = True) -> BlockedSummary:
        """Every blocked aggregate (up to BLOCKED_SCAN), oldest block first, with totals.

        The head of a block is the earliest retrying (or, with
        ``include_dead_letters``, dead-lettered) event of an aggregate that
        has later pending events; those wait behind it.
        """
        now = self.now()
        retrying = and_(events.c.processed == False, events.c.next_attempt_at > now)  # noqa: E712
        blocking = (
            or_(retrying, events.c.outcome == Outcome.DEAD_LETTERED.value)
            if include_dead_letters
            else retrying
        )
        ranked = (
            select(
                *events.c,
                func.row_number()
                .over(partition_by=events.c.aggregate_id, order_by=self.creation_order(events))
                .label("rank"),
            )
            .where(events.c.aggregate_id.is_not(None), blocking)
            .subquery("heads")
        )
        waiting, *counts = self._waiting_behind(ranked)
        statement = (
            select(ranked, *counts)
            # A head with nothing behind it blocks nothing (a dead letter of
            # long ago): left out here, so that old ones never crowd out the
            # blocked aggregates from the bounded scan.
            .where(ranked.c.rank == 1, exists().where(waiting))
            .order_by(*self.creation_order(ranked))
            .limit(BLOCKED_SCAN)
        )
        async with self.reader.connect() as conn:
            rows = (await conn.execute(statement)).all()
            db_now = _aware((await conn.execute(select(now))).scalar_one())
        return blocked_summary_of(rows, len(rows), db_now)

    @staticmethod
    def creation_order(table: Any) -> tuple[Any, Any]:
        return (table.c.created_at, table.c.id)

    def _waiting_behind(self, head: Any) -> list[Any]:
        """The condition "pending after ``head`` in its aggregate", then scalar
        subqueries over those events (how many, how many due, since when)."""
        later = events.alias("later")
        now = self.now()
        after = and_(
            later.c.aggregate_id == head.c.aggregate_id,
            later.c.processed == False,  # noqa: E712
            tuple_(later.c.created_at, later.c.id) > tuple_(head.c.created_at, head.c.id),
        )
        due = and_(
            after,
            or_(later.c.next_attempt_at.is_(None), later.c.next_attempt_at <= now),
            or_(later.c.locked_until.is_(None), later.c.locked_until < now),
        )
        return [
            after,
            select(func.count()).where(after).scalar_subquery().label("waiting"),
            select(func.count()).where(due).scalar_subquery().label("waiting_due"),
            select(func.min(later.c.created_at))
            .where(after)
            .scalar_subquery()
            .label("waiting_since"),
        ]

    @idempotent
    async def stats_snapshot(self) -> StoreStats:
        now = self.now()
        pending = events.c.processed == False  # noqa: E712
        statement = select(
            func.count().filter(pending),
            func.count().filter(
                pending,
                or_(events.c.next_attempt_at.is_(None), events.c.next_attempt_at <= now),
                or_(events.c.locked_until.is_(None), events.c.locked_until < now),
            ),
            func.count().filter(pending, events.c.locked_until >= now),
            func.min(events.c.created_at).filter(pending),
        ).where(pending)
        async with self.reader.connect() as conn:
            backlog, due, in_flight, oldest = (await conn.execute(statement)).one()
            dead = (
                await conn.execute(
                    select(func.count())
                    .select_from(dead_letters)
                    .where(dead_letters.c.replayed_at.is_(None))
                )
            ).scalar_one()
            db_now = (await conn.execute(select(now))).scalar_one()
        return StoreStats(
            backlog=backlog,
            due=due,
            in_flight=in_flight,
            oldest_pending_at=_aware(oldest) if oldest is not None else None,
            dead_letters=dead,
            database_now=_aware(db_now),
        )


def _state_of(event: Event, now: datetime) -> str:
    """What an event holding back its aggregate is doing, in words."""
    if event.processed:
        return "dead-lettered (replay it or discard its dead letter)"
    if event.locked_until is not None and event.locked_until >= now:
        return f"running on {event.locked_by}"
    if event.next_attempt_at is not None and event.next_attempt_at > now:
        return f"waiting for a retry at {_iso(event.next_attempt_at)}"
    return "pending (it runs first)"


def _aware(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class _HandlerRaised(Exception):
    """Carries a handler's own exception past the translation of database errors."""


@asynccontextmanager
async def _translated_cm() -> AsyncIterator[None]:
    try:
        yield
    except StoreError:
        raise
    except (sa_exc.SQLAlchemyError, *_UNAVAILABLE) as exc:
        raise translate_error(exc) from exc
