"""The audit trail: one ``admin_actions`` row per mutation, in the transaction of its effect.

A mutation that changed nothing is still recorded (``result`` says so): an
operator's attempt is part of the story of a bad day.
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.store.driver import Driver
from eventproc.store.rows import as_uuid, aware, json_of
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


# The keyset of the first page: past every entry (the statement always has one).
FIRST_PAGE = (datetime.max.replace(tzinfo=UTC), 2**63 - 1)


async def page(
    driver: Driver,
    *,
    limit: int,
    after: tuple[datetime, int] | None = None,
    action: str | None = None,
    actor: str | None = None,
) -> list[AuditEntry]:
    """Newest first, by keyset on (at, id): admin_actions_at_idx serves every page."""
    at, entry_id = after if after is not None else FIRST_PAGE
    rows = await driver.read("admin_audit_page", [action, actor, at, entry_id, limit])
    return [
        AuditEntry(
            id=row[0],
            at=aware(row[1]),
            actor=row[2],
            role=row[3],
            action=row[4],
            target=json_of(row[5]),
            reason=row[6],
            counts=json_of(row[7]) or {},
            result=row[8],
            operation_id=as_uuid(row[9]),
        )
        for row in rows
    ]
