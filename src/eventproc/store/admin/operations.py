"""Bulk operations' rows: plan (a dry run), execute (freeze the items), carry on in batches, cancel.

A plan counts and samples what its selector matches and keeps only the
sha256 of its token. Executing freezes the items into admin_operation_items
(a filter bounded by the plan's time, so rows arriving later are not swept
in) and sets it running; any worker then leases it and applies the next
batch from ``cursor``: a batch's effect and the progress it makes commit
together, so a worker killed mid-operation leaves nothing applied twice.
"""

import dataclasses
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.store.admin import operation_work as work
from eventproc.store.admin.audit import Audit, record
from eventproc.store.driver import Driver
from eventproc.store.errors import idempotent, translated
from eventproc.store.rows import as_time, aware, json_of, uuid_of
from eventproc.store.schema import operations

PLAN_TTL = timedelta(minutes=15)
FINISHED = ("done", "cancelled", "failed")
SYSTEM = Audit(actor="system", role="system")  # who records an operation's end


class OperationRefused(Exception):
    """Refused by the operation's state or token; ``kind``: unknown, token, expired, finished."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Operation:
    id: uuid.UUID
    action: str
    selector: dict[str, Any]
    max_items: int
    rate_per_second: float
    status: str  # planned | running | done | cancelled | failed
    planned_count: int  # matches at plan time, up to max_items + 1 (more: capped)
    total: int | None  # items frozen at execute time
    done_count: int
    changed_count: int
    actor: str
    role: str
    reason: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None
    plan_expires_at: datetime
    locked_by: str | None
    locked_until: datetime | None
    cursor: int
    error: str | None


@dataclass(frozen=True, slots=True)
class Plan:
    operation: Operation
    token: str  # given once; only its hash is stored
    sample: list[dict[str, str]]


_FIELDS = tuple(field.name for field in dataclasses.fields(Operation))
_TIMES = (
    "created_at", "started_at", "finished_at", "updated_at", "plan_expires_at", "locked_until",
)  # fmt: skip
# The keyset of the first page: past every operation (the statement always has one).
FIRST_PAGE = (datetime.max.replace(tzinfo=UTC), uuid.UUID(int=2**128 - 1))


def _operation(row: Any) -> Operation:
    return Operation(**{name: getattr(row, name) for name in _FIELDS})


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class OperationRows:
    def __init__(self, driver: Driver, wake: Callable[[], None]) -> None:
        self.driver = driver
        self._wake = wake

    @translated
    async def plan(
        self,
        action: str,
        selector: dict[str, Any],
        *,
        max_items: int,
        rate_per_second: float,
        who: Audit,
        candidates: Sequence[tuple[uuid.UUID, str]] | None = None,
    ) -> Plan:
        """Count (up to max_items + 1) and sample the matches; store the plan, audited.

        ``candidates``: a backfill's matches, found by the caller (routing is
        not the store's); any other action's are read here.
        """
        async with self.driver.reader.connect() as conn:
            now = await _now(self.driver, conn)
            count, sample = await work.preview(
                self.driver, conn, action, selector, max_items, now, candidates
            )
        token, op_id = secrets.token_urlsafe(24), uuid.uuid4()
        async with self.driver.begin() as conn:
            await conn.execute(
                insert(operations).values(
                    id=op_id,
                    action=action,
                    selector=selector,
                    max_items=max_items,
                    rate_per_second=rate_per_second,
                    status="planned",
                    plan_token_hash=_hash(token),
                    plan_expires_at=now + PLAN_TTL,
                    planned_count=count,
                    actor=who.actor,
                    role=who.role,
                    reason=who.reason,
                    created_at=now,
                    updated_at=now,
                )
            )
            await record(
                conn,
                dataclasses.replace(who, operation_id=op_id),
                "operation.plan",
                {"operation_id": str(op_id), "action": action, "selector": selector},
                {"matched": min(count, max_items), "capped": int(count > max_items)},
            )
            found = await _get(conn, op_id)
        return Plan(found, token, sample)

    @translated
    async def execute(
        self,
        op_id: uuid.UUID,
        token: str,
        who: Audit,
        items: Sequence[uuid.UUID] | None = None,
    ) -> Operation:
        """Freeze the items and start it (a pause or resume is done at once), audited.

        The same token again returns the operation unchanged. ``items``: a
        backfill's event ids, found by the caller.
        """
        async with self.driver.begin() as conn:
            row = await _locked(conn, op_id)
            now = await _now(self.driver, conn)
            if _executed(row, token, now):
                return _operation(row)
            audit = dataclasses.replace(who, operation_id=op_id)
            changed = 0
            if row.action in work.INSTANT:
                total, changed = 1, await work.toggle(self.driver, conn, row, audit)
            else:
                total = await work.freeze(self.driver, conn, row, items)
            await conn.execute(
                update(operations)
                .where(operations.c.id == op_id)
                .values(
                    status="running",
                    total=total,
                    started_at=now,
                    updated_at=now,
                    actor=who.actor,
                    role=who.role,
                    reason=who.reason,
                )
            )
            await record(
                conn,
                audit,
                "operation.execute",
                {"operation_id": str(op_id), "action": row.action, "selector": row.selector},
                {"total": total},
            )
            if row.action in work.INSTANT or total == 0:
                await _finish(conn, op_id, now, done=total, changed=changed)
            found = await _get(conn, op_id)
        if changed:
            self._wake()
        return found

    @translated
    async def lease(self, worker: str, seconds: float) -> Operation | None:
        """A running operation nobody holds (a lease free or run out), now ``worker``'s."""
        async with self.driver.begin() as conn:
            now = await _now(self.driver, conn)
            running = operations.c.status == "running"
            free = or_(operations.c.locked_until.is_(None), operations.c.locked_until < now)
            candidate = await conn.scalar(
                select(operations.c.id)
                .where(running, free)
                .order_by(operations.c.created_at)
                .limit(1)
            )
            if candidate is None:
                return None
            taken = await conn.execute(
                update(operations)
                .where(operations.c.id == candidate, running, free)
                .values(locked_by=worker, locked_until=now + timedelta(seconds=seconds))
            )
            return await _get(conn, candidate) if taken.rowcount else None

    @translated
    async def step(
        self, op_id: uuid.UUID, worker: str, size: int, seconds: float
    ) -> Operation | None:
        """Apply the next ``size`` items and record the progress, in one transaction.

        Renews the lease; None once it is another worker's. A finished or
        cancelled operation comes back as it is (the caller stops).
        """
        async with self.driver.begin() as conn:
            row = await _locked(conn, op_id)
            if row.locked_by != worker:
                return None
            if row.status != "running":
                return _operation(row)
            now = await _now(self.driver, conn)
            batch = await work.batch(conn, op_id, row.cursor, size)
            audit = Audit(row.actor, row.role, row.reason, op_id)
            changed = await work.apply(self.driver, conn, row.action, batch, audit)
            await conn.execute(
                update(operations)
                .where(operations.c.id == op_id)
                .values(
                    cursor=row.cursor + len(batch),
                    done_count=row.done_count + len(batch),
                    changed_count=row.changed_count + changed,
                    updated_at=now,
                    locked_until=now + timedelta(seconds=seconds),
                )
            )
            if row.cursor + len(batch) >= (row.total or 0):
                await _finish(conn, op_id, now)
            found = await _get(conn, op_id)
        if changed:
            self._wake()
        return found

    @translated
    async def release(self, op_id: uuid.UUID, worker: str) -> None:
        """Give the lease back (a worker stopping): another worker takes it on at once."""
        async with self.driver.begin() as conn:
            await conn.execute(
                update(operations)
                .where(operations.c.id == op_id, operations.c.locked_by == worker)
                .values(locked_by=None, locked_until=None)
            )

    @translated
    async def fail(self, op_id: uuid.UUID, worker: str, error: str) -> bool:
        """Mark a running operation of ``worker``'s failed, with why (audited by "system")."""
        async with self.driver.begin() as conn:
            row = await _locked(conn, op_id)
            if row.status != "running" or row.locked_by != worker:
                return False
            await _finish(conn, op_id, await _now(self.driver, conn), "failed", error[:2000])
            return True

    @translated
    async def cancel(self, op_id: uuid.UUID, who: Audit) -> Operation:
        """Stop a planned or running operation: no batch starts after this commits."""
        async with self.driver.begin() as conn:
            row = await _locked(conn, op_id)
            if row.status in FINISHED:
                raise OperationRefused("finished", f"The operation is {row.status} already")
            now = await _now(self.driver, conn)
            await conn.execute(
                update(operations)
                .where(operations.c.id == op_id)
                .values(
                    status="cancelled",
                    finished_at=now,
                    updated_at=now,
                    locked_by=None,
                    locked_until=None,
                )
            )
            await record(
                conn,
                dataclasses.replace(who, operation_id=op_id),
                "operation.cancel",
                {"operation_id": str(op_id), "action": row.action},
                {"total": row.total or 0, "done": row.done_count, "changed": row.changed_count},
            )
            return await _get(conn, op_id)

    @idempotent
    async def get(self, op_id: uuid.UUID) -> Operation | None:
        async with self.driver.reader.connect() as conn:
            row = (await conn.execute(select(operations).where(operations.c.id == op_id))).first()
        return None if row is None else _operation(row)

    @idempotent
    async def page(
        self,
        *,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None = None,
        status: str | None = None,
        action: str | None = None,
    ) -> list[Operation]:
        """Newest first, by keyset on (created_at, id): admin_operations_created_idx."""
        created_at, op_id = after if after is not None else FIRST_PAGE
        rows = await self.driver.read(
            "admin_operations_page", [status, action, created_at, op_id, limit]
        )
        return [_listed(row) for row in rows]


def _listed(row: Sequence[Any]) -> Operation:
    """An Operation from admin_operations_page's row (its columns in _FIELDS order)."""
    values = dict(zip(_FIELDS, row, strict=True))
    for name in _TIMES:
        values[name] = as_time(values[name])
    values["id"] = uuid_of(values["id"])
    values["selector"] = json_of(values["selector"])
    return Operation(**values)


async def _now(driver: Driver, conn: AsyncConnection) -> datetime:
    return aware(await conn.scalar(select(driver.now())))


async def _get(conn: AsyncConnection, op_id: uuid.UUID) -> Operation:
    return _operation(
        (await conn.execute(select(operations).where(operations.c.id == op_id))).one()
    )


async def _locked(conn: AsyncConnection, op_id: uuid.UUID) -> Any:
    """The operation's row, locked until the transaction ends; refused if there is none."""
    statement = select(operations).where(operations.c.id == op_id).with_for_update()
    row = (await conn.execute(statement)).first()
    if row is None:
        raise OperationRefused("unknown", "Operation not found")
    return row


def _executed(row: Any, token: str, now: datetime) -> bool:
    """True if this token executed it already (answer it unchanged); refuses a bad call."""
    same = hmac.compare_digest(row.plan_token_hash, _hash(token))
    if same and row.started_at is not None:
        return True
    if row.status in FINISHED:
        raise OperationRefused("finished", f"The operation is {row.status}: plan a new one")
    if not same:
        raise OperationRefused("token", "Wrong plan token for this operation")
    if aware(row.plan_expires_at) <= now:
        raise OperationRefused("expired", "The plan token has expired: plan the operation again")
    return False


async def _finish(
    conn: AsyncConnection,
    op_id: uuid.UUID,
    now: datetime,
    status: str = "done",
    error: str | None = None,
    *,
    done: int | None = None,
    changed: int | None = None,
) -> None:
    """The end of an operation, and its audit row (actor "system": it ends in the background)."""
    values: dict[str, Any] = {"status": status, "finished_at": now, "updated_at": now}
    if done is not None:
        values.update(cursor=done, done_count=done, changed_count=changed or 0)
    values.update(locked_by=None, locked_until=None, error=error)
    await conn.execute(update(operations).where(operations.c.id == op_id).values(**values))
    op = await _get(conn, op_id)
    await record(
        conn,
        dataclasses.replace(SYSTEM, reason=error, operation_id=op_id),
        f"operation.{status}",
        {"operation_id": str(op_id), "action": op.action},
        {"total": op.total or 0, "done": op.done_count, "changed": op.changed_count},
        "ok" if status == "done" else status,
    )
