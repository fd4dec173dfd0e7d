"""/admin/v1/workers: the worker processes seen recently, from their heartbeats."""

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from eventproc.admin.heartbeat import ALIVE_HEARTBEATS, HEARTBEAT_SECONDS
from eventproc.admin.roles import Principal
from eventproc.http.admin import paging
from eventproc.http.admin.common import READ_RESPONSES, serialized, viewer
from eventproc.http.deps import get_runtime
from eventproc.http.schemas import OpenModel
from eventproc.store.admin.handlers import WorkerRow

router = APIRouter(prefix="/workers", tags=["admin: workers"])

SEEN_SECONDS = 600.0  # listed: seen in the last 10 minutes
ALIVE_SECONDS = ALIVE_HEARTBEATS * HEARTBEAT_SECONDS


class WorkerItem(OpenModel):
    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    last_seen_at: datetime = Field(description="Its last heartbeat (every 10 s)")
    last_claim_at: datetime | None = Field(description="When a claim last brought it work")
    alive: bool = Field(description=f"Seen within {ALIVE_HEARTBEATS} heartbeats")


class WorkerPage(paging.Page):
    items: list[WorkerItem]


@router.get(
    "",
    response_model=WorkerPage,
    responses=READ_RESPONSES,
)
@serialized
async def list_workers(
    request: Request,
    who: Annotated[Principal, Depends(viewer("limit", "cursor"))],
    limit: Annotated[int, paging.Limit] = paging.DEFAULT_LIMIT,
    cursor: Annotated[str | None, paging.Cursor] = None,
) -> WorkerPage:
    """Workers seen in the last 10 minutes, by id."""
    after = paging.decode(cursor, _worker_id)
    reads = get_runtime(request).store.admin.handlers
    now, rows = await reads.workers(SEEN_SECONDS, after=after[0] if after else None, limit=limit)
    alive_since = now - timedelta(seconds=ALIVE_SECONDS)
    return WorkerPage(
        items=[_item(row, alive_since) for row in rows],
        next_cursor=paging.next_cursor(rows, limit, lambda row: (row.id,)),
    )


def _worker_id(value: object) -> str:
    """A cursor's worker id: text the database can compare (no NUL)."""
    if not isinstance(value, str) or "\x00" in value or len(value) > 500:
        raise ValueError("not a worker id")
    return value


def _item(row: WorkerRow, alive_since: datetime) -> WorkerItem:
    seen = row.last_seen_at or row.started_at  # always read with its last_seen_at
    return WorkerItem(
        id=row.id,
        host=row.host,
        pid=row.pid,
        version=row.version,
        started_at=row.started_at,
        last_seen_at=seen,
        last_claim_at=row.last_claim_at,
        alive=seen >= alive_since,
    )
