"""/admin/v1/audit: every mutation, who made it, why, and what it changed."""

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from eventproc.admin.roles import Principal
from eventproc.http.admin import paging
from eventproc.http.admin.common import READ_RESPONSES, serialized, viewer
from eventproc.http.deps import get_runtime
from eventproc.http.schemas import OpenModel

router = APIRouter(prefix="/audit", tags=["admin: audit"])


class AuditItem(OpenModel):
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


class AuditPage(paging.Page):
    items: list[AuditItem]


@router.get(
    "",
    response_model=AuditPage,
    responses=READ_RESPONSES,
)
@serialized
async def list_audit(
    request: Request,
    who: Annotated[Principal, Depends(viewer("action", "actor", "limit", "cursor"))],
    action: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    actor: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    limit: Annotated[int, paging.Limit] = paging.DEFAULT_LIMIT,
    cursor: Annotated[str | None, paging.Cursor] = None,
) -> AuditPage:
    """Newest first."""
    after = paging.decode(cursor, paging.time_of, paging.int_of)
    entries = await get_runtime(request).store.admin.audit_page(
        limit=limit, after=(after[0], after[1]) if after else None, action=action, actor=actor
    )
    return AuditPage(
        items=[AuditItem.model_validate(entry, from_attributes=True) for entry in entries],
        next_cursor=paging.next_cursor(entries, limit, lambda entry: (entry.at, entry.id)),
    )
