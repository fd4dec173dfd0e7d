"""/admin/v1/aggregates/blocked: the aggregates whose later events wait behind a failing one."""

import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request

from eventproc.admin.roles import Principal
from eventproc.config import AggregateFailure, Ordering
from eventproc.http.admin import paging
from eventproc.http.admin.common import READ_RESPONSES, serialized, viewer
from eventproc.http.deps import get_runtime
from eventproc.http.schemas import OpenModel
from eventproc.store import BlockedSummary

router = APIRouter(prefix="/aggregates", tags=["admin: aggregates"])


class BlockedItem(OpenModel):
    aggregate_id: uuid.UUID
    aggregate_type: str | None
    # The subscription held back; null when an event on its own row (a row
    # head) holds back every subscription of the aggregate.
    handler: str | None
    event_id: uuid.UUID  # the head: the failing event the others wait behind
    event_type: str
    state: Literal["retrying", "dead_lettered"]
    retry_at: datetime | None
    waiting: int  # pending events (or that handler's deliveries) behind the head
    waiting_due: int  # of those, the ones that would run now but for the head
    since: datetime | None  # created_at of the oldest one waiting


class BlockedPage(OpenModel):
    ordering: Literal["aggregate", "none"]
    count: int  # blocks found (up to the summary's bound; capped says so)
    capped: bool
    oldest_wait_seconds: float
    items: list[BlockedItem]  # oldest block first, at most ``limit``


@router.get(
    "/blocked",
    response_model=BlockedPage,
    responses=READ_RESPONSES,
)
@serialized
async def blocked_aggregates(
    request: Request,
    who: Annotated[Principal, Depends(viewer("limit"))],
    limit: Annotated[int, paging.Limit] = paging.DEFAULT_LIMIT,
) -> BlockedPage:
    """Read now, as /health's blockedAggregates are; with ORDERING=none nothing waits, so none.

    Dead-lettered heads count only with AGGREGATE_FAILURE=block (with park
    the others run on past them).
    """
    runtime = get_runtime(request)
    settings = runtime.settings
    if settings.ordering is not Ordering.AGGREGATE:
        return BlockedPage(
            ordering="none", count=0, capped=False, oldest_wait_seconds=0.0, items=[]
        )
    summary = await runtime.store.blocked_summary(
        include_dead_letters=settings.aggregate_failure is AggregateFailure.BLOCK
    )
    return _page(summary, limit)


def _page(summary: BlockedSummary, limit: int) -> BlockedPage:
    return BlockedPage(
        ordering="aggregate",
        count=summary.count,
        capped=summary.capped,
        oldest_wait_seconds=summary.oldest_wait_seconds(),
        items=[
            BlockedItem(
                aggregate_id=item.aggregate_id,
                aggregate_type=item.aggregate_type,
                handler=item.handler,
                event_id=item.event_id,
                event_type=item.event_type,
                state="retrying" if item.reason == "retrying" else "dead_lettered",
                retry_at=item.retry_at,
                waiting=item.waiting,
                waiting_due=item.waiting_due,
                since=item.waiting_since,
            )
            for item in summary.items[:limit]
        ],
    )
