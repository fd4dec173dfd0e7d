"""The audit trail: one ``admin_actions`` row per mutation, in the transaction of its effect.

A mutation that changed nothing is still recorded (``result`` says so): an
operator's attempt is part of the story of a bad day.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.store.driver import Driver
from eventproc.store.rows import as_uuid, aware
from eventproc.store.schema import admin_actions


@dataclass(frozen=True, slots=True)
class Audit:
    """Who asks for a mutation, and why: what every admin store method records."""

    actor: str
    role: str
    reason: str | None = None
    operation_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    role: str
    action: str
    target: Any
    reason: str | None
    counts: dict[str, int]
    result: str
    operation_id: uuid.UUID | None


async def record(
    conn: AsyncConnection,
    audit: Audit,
    action: str,
    target: Any,
    counts: dict[str, int],
    result: str = "ok",
) -> None:
    await conn.execute(
        insert(admin_actions).values(
            actor=audit.actor,
            role=audit.role,
            action=action,
            target=target,
            reason=audit.reason,
            counts=counts,
            result=result,
            operation_id=audit.operation_id,
        )
    )


async def page(
    driver: Driver,
    *,
    limit: int,
    after: tuple[datetime, int] | None = None,
    action: str | None = None,
    actor: str | None = None,
) -> list[AuditEntry]:
    """Newest first, by keyset on (at, id): admin_actions_at_idx serves every page."""
    statement = select(admin_actions)
    if action is not None:
        statement = statement.where(admin_actions.c.action == action)
    if actor is not None:
        statement = statement.where(admin_actions.c.actor == actor)
    if after is not None:
        statement = statement.where(tuple_(admin_actions.c.at, admin_actions.c.id) < after)
    statement = statement.order_by(admin_actions.c.at.desc(), admin_actions.c.id.desc())
    async with driver.reader.connect() as conn:
        rows = (await conn.execute(statement.limit(limit))).all()
    return [
        AuditEntry(
            id=row.id,
            at=aware(row.at),
            actor=row.actor,
            role=row.role,
            action=row.action,
            target=row.target,
            reason=row.reason,
            counts=row.counts or {},
            result=row.result,
            operation_id=as_uuid(row.operation_id),
        )
        for row in rows
    ]
