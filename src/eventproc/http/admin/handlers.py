"""/admin/v1/handlers: each subscription's backlog, rates, durations and pause; pause and resume.

A subscription's figures are bounded reads (store/admin/handlers.py): its
backlog is counted up to 10,000 (then ``capped``), its rates and durations
come from the handler_stats every worker's heartbeat writes (so they lag
its flushes by up to 10 s). Pausing stops every worker from starting its
work within a few seconds (this process at once); nothing is lost: its
deliveries wait, pending, and run when it is resumed.
"""

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import AwareDatetime, Field

from eventproc.admin.heartbeat import quantile_ms
from eventproc.admin.roles import Principal, Role
from eventproc.http.admin import paging
from eventproc.http.admin.common import (
    READ_RESPONSES,
    WRITE_RESPONSES,
    ActionBody,
    audit_of,
    learn_pauses,
    serialized,
    viewer,
)
from eventproc.http.auth import require
from eventproc.http.deps import get_runtime
from eventproc.http.errors import ApiError, error_responses
from eventproc.http.schemas import OpenModel
from eventproc.registry import Handler
from eventproc.store.admin.handlers import BACKLOG_CAP, HandlerFigures, Window

if TYPE_CHECKING:
    from eventproc.runtime import Runtime

router = APIRouter(prefix="/handlers", tags=["admin: handlers"])

Name = Annotated[str, Path(min_length=1, max_length=200, description="The subscription's name")]
_UNKNOWN = {404: "No subscription of that name is registered"}


class PausedBody(OpenModel):
    at: datetime
    actor: str
    reason: str | None


class Backlog(OpenModel):
    count: int = Field(
        description=(
            "Pending work: the subscription's pending deliveries, plus the events still on "
            "their own rows (not routed yet) whose type it subscribes to, counted by type "
            f"(its filter aside). At most {BACKLOG_CAP:,} of each are counted."
        )
    )
    capped: bool = Field(description=f"The count stopped at {BACKLOG_CAP:,}: there are more")


class Rates(OpenModel):
    succeeded: int
    failed: int = Field(description="Failed handler calls (retried or dead-lettered)")
    per_second: float = Field(description="Calls per second over the window")
    failure_rate: float | None = Field(description="failed / calls; null without calls")


class Durations(OpenModel):
    p50: float | None = Field(description="Median handler duration, ms (null without calls)")
    p95: float | None


class HandlerItem(OpenModel):
    name: str
    event_types: list[str]
    filter: dict[str, Any] | None
    transactional: bool
    paused: PausedBody | None
    backlog: Backlog
    due: int = Field(description="Of the backlog counted: claimable now (no lease, no retry wait)")
    in_flight: int = Field(description="Of the backlog counted: leased by a worker now")
    oldest_pending_age_seconds: float | None
    figures_at: AwareDatetime = Field(
        description="When the backlog and rates were read (the database's clock): a reading "
        "is shared by every caller for up to HANDLER_FIGURES_MAX_AGE_SECONDS"
    )
    last_minute: Rates = Field(description="The previous whole minute and the current one")
    last_hour: Rates = Field(description="The previous 60 whole minutes and the current one")
    duration_ms: Durations = Field(description="Over the last hour, from a histogram")


class HandlerPage(paging.Page):
    items: list[HandlerItem]


class Paused(OpenModel):
    handler: str
    paused: bool
    changed: bool = Field(description="False: it already was (paused, or not paused)")


@router.get(
    "",
    response_model=HandlerPage,
    responses=READ_RESPONSES,
)
@serialized
async def list_handlers(
    request: Request,
    who: Annotated[Principal, Depends(viewer("limit", "cursor"))],
    limit: Annotated[int, paging.Limit] = paging.DEFAULT_LIMIT,
    cursor: Annotated[str | None, paging.Cursor] = None,
) -> HandlerPage:
    """Every registered subscription, by name, with its figures."""
    after = paging.decode(cursor, str)
    runtime = get_runtime(request)
    entries = sorted(runtime.registry, key=lambda entry: entry.name)
    if after is not None:
        entries = [entry for entry in entries if entry.name > after[0]]
    page = entries[:limit]
    items = await _items(runtime, page)
    return HandlerPage(
        items=items, next_cursor=paging.next_cursor(page, limit, lambda entry: (entry.name,))
    )


@router.get(
    "/{name}",
    response_model=HandlerItem,
    responses={**READ_RESPONSES, **error_responses(_UNKNOWN)},
)
async def show_handler(
    request: Request, name: Name, who: Annotated[Principal, Depends(require(Role.VIEWER))]
) -> HandlerItem:
    """One subscription with its figures."""
    runtime = get_runtime(request)
    [item] = await _items(runtime, [_known(runtime, name)])
    return item


@router.post(
    "/{name}/pause",
    response_model=Paused,
    responses={**WRITE_RESPONSES, **error_responses(_UNKNOWN)},
)
async def pause_handler(
    request: Request,
    body: ActionBody,
    name: Name,
    who: Annotated[Principal, Depends(require(Role.OPERATOR))],
) -> Paused:
    """Stop starting this subscription's work in every worker; what runs now finishes."""
    runtime = get_runtime(request)
    _known(runtime, name)
    changed = await runtime.store.admin.pause(name, audit_of(who, body.reason))
    await learn_pauses(runtime)
    return Paused(handler=name, paused=True, changed=changed)


@router.post(
    "/{name}/resume",
    response_model=Paused,
    responses={**WRITE_RESPONSES, **error_responses(_UNKNOWN)},
)
async def resume_handler(
    request: Request,
    body: ActionBody,
    name: Name,
    who: Annotated[Principal, Depends(require(Role.OPERATOR))],
) -> Paused:
    """Start its waiting work again: claimable at once (other workers: within 2 s)."""
    runtime = get_runtime(request)
    _known(runtime, name)
    changed = await runtime.store.admin.resume(name, audit_of(who, body.reason))
    await learn_pauses(runtime)
    return Paused(handler=name, paused=False, changed=changed)


def _known(runtime: "Runtime", name: str) -> Handler:
    entry = runtime.registry.subscription(name)
    if entry is None:
        raise ApiError(404, f"No subscription named {name!r} is registered")
    return entry


async def _items(runtime: "Runtime", entries: list[Handler]) -> list[HandlerItem]:
    admin = runtime.store.admin
    paused = await admin.paused()
    subscriptions = [(entry.name, entry.types) for entry in entries]
    now, figures = await runtime.handler_figures.get(
        tuple(name for name, _ in subscriptions), lambda: admin.handlers.figures(subscriptions)
    )
    return [
        _item(entry, found, paused.get(entry.name), now)
        for entry, found in zip(entries, figures, strict=True)
    ]


def _item(
    entry: Handler, found: HandlerFigures, paused: tuple[Any, str, str | None] | None, now: Any
) -> HandlerItem:
    backlog = found.backlog
    oldest = backlog.oldest_pending_at
    return HandlerItem(
        name=entry.name,
        event_types=list(entry.types),
        filter=dict(entry.filter) if entry.filter is not None else None,
        transactional=entry.transactional,
        paused=PausedBody(at=paused[0], actor=paused[1], reason=paused[2]) if paused else None,
        backlog=Backlog(count=backlog.count, capped=backlog.capped),
        due=backlog.due,
        in_flight=backlog.in_flight,
        oldest_pending_age_seconds=(
            max((now - oldest).total_seconds(), 0.0) if oldest is not None else None
        ),
        figures_at=now,
        last_minute=_rates(found.last_minute),
        last_hour=_rates(found.last_hour),
        duration_ms=Durations(
            p50=_rounded(quantile_ms(found.last_hour.buckets, 0.5)),
            p95=_rounded(quantile_ms(found.last_hour.buckets, 0.95)),
        ),
    )


def _rates(window: Window) -> Rates:
    calls = window.succeeded + window.failed
    return Rates(
        succeeded=window.succeeded,
        failed=window.failed,
        per_second=round(calls / window.seconds, 3) if window.seconds > 0 else 0.0,
        failure_rate=round(window.failed / calls, 4) if calls else None,
    )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
