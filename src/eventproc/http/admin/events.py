"""/admin/v1/events: find events, see one with its deliveries and attempts, replay it."""

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import Field

from eventproc.admin.roles import Principal, Role
from eventproc.http.admin import paging
from eventproc.http.admin.common import (
    READ_RESPONSES,
    WRITE_RESPONSES,
    ActionBody,
    audit_of,
    serialized,
    utc_now,
    viewer,
)
from eventproc.http.admin.shapes import (
    Attempt,
    DeadLetterItem,
    EventItem,
    attempt,
    dead_letter_item,
    event_item,
    shown,
)
from eventproc.http.auth import require
from eventproc.http.deps import get_runtime
from eventproc.http.errors import ApiError, error_responses
from eventproc.http.schemas import OpenModel
from eventproc.store.admin import BadFilter, EventQuery

router = APIRouter(prefix="/events", tags=["admin: events"])

_LIST_PARAMS = (
    "type", "handler", "state", "outcome", "aggregate_id", "created_by", "since", "until",
    "path", "value", "error", "limit", "cursor",
)  # fmt: skip


class EventPage(paging.Page):
    items: list[EventItem]


class EventDetailBody(EventItem):
    payload: object
    metadata: dict[str, object]
    version: int
    attempt_log: list[Attempt]
    dead_letters: list[DeadLetterItem]


class ReplayBody(ActionBody):
    handler: str | None = Field(
        None, min_length=1, max_length=200, description="Replay only this subscription's delivery"
    )


class Replayed(OpenModel):
    event_id: uuid.UUID
    handler: str | None
    replayed: bool


@router.get(
    "",
    response_model=EventPage,
    responses=READ_RESPONSES,
)
@serialized
async def list_events(
    request: Request,
    who: Annotated[Principal, Depends(viewer(*_LIST_PARAMS))],
    type: Annotated[
        str | None, Query(min_length=1, max_length=100, description="Exact, or with *")
    ] = None,
    handler: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    state: Literal["pending", "done"] | None = None,
    outcome: Literal["succeeded", "skipped", "dead_lettered", "partial", "discarded"] | None = None,
    aggregate_id: uuid.UUID | None = None,
    created_by: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    since: Annotated[str | None, paging.Time] = None,  # created_at at or after
    until: Annotated[str | None, paging.Time] = None,  # created_at before
    path: Annotated[
        str | None,
        Query(
            max_length=300,
            pattern=r"^(payload|metadata)(\.[A-Za-z0-9_-]{1,64}){1,16}$",
            description="payload.a.b or metadata.a.b; with value",
        ),
    ] = None,
    value: Annotated[str | None, Query(max_length=1000)] = None,
    error: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Text in the last error")
    ] = None,
    limit: Annotated[int, paging.Limit] = paging.DEFAULT_LIMIT,
    cursor: Annotated[str | None, paging.Cursor] = None,
) -> EventPage:
    """Newest first, keyset-paged; every filter optional."""
    after = paging.decode(cursor, paging.time_of, paging.uuid_of)
    if (path is None) != (value is None):
        raise ApiError(422, "path and value go together")
    query = EventQuery(
        event_type=type,
        handler=handler,
        state=state,
        outcome=outcome,
        aggregate_id=aggregate_id,
        created_by=created_by,
        since=paging.moment(since, "since"),
        until=paging.moment(until, "until"),
        path=tuple(path.split(".")) if path is not None else None,
        value=value,
        error=error,
        after=(after[0], after[1]) if after else None,
        limit=limit,
    )
    try:
        rows = await get_runtime(request).store.admin.events_page(query)
    except BadFilter as exc:
        raise ApiError(422, str(exc)) from None
    now = utc_now()
    return EventPage(
        items=[event_item(row, now) for row in rows],
        next_cursor=paging.next_cursor(
            rows, limit, lambda row: (row.event.created_at, row.event.id)
        ),
    )


@router.get(
    "/{event_id}",
    response_model=EventDetailBody,
    responses={**READ_RESPONSES, **error_responses({404: "No such event"})},
)
async def show_event(
    request: Request,
    event_id: uuid.UUID,
    who: Annotated[Principal, Depends(require(Role.VIEWER))],
) -> EventDetailBody:
    """The event, its payload and metadata, every delivery, attempt and dead letter."""
    runtime = get_runtime(request)
    found = await runtime.store.admin.event_detail(event_id)
    if found is None:
        raise ApiError(404, "Event not found")
    event = found.row.event
    item = event_item(found.row, utc_now())
    return EventDetailBody(
        **item.model_dump(),
        payload=shown("payload", event.payload, who, runtime.redaction),
        metadata=shown("metadata", event.metadata, who, runtime.redaction),
        version=event.version,
        attempt_log=[attempt(a) for a in found.attempts],
        dead_letters=[dead_letter_item(d) for d in found.dead_letters],
    )


@router.post(
    "/{event_id}/replay",
    response_model=Replayed,
    responses={
        **WRITE_RESPONSES,
        **error_responses(
            {
                404: "No such event",
                409: "Nothing to replay: still pending, or that delivery is",
                422: "No such subscription, or a bad body",
            }
        ),
    },
)
async def replay_event(
    request: Request,
    body: ReplayBody,
    event_id: uuid.UUID,
    who: Annotated[Principal, Depends(require(Role.OPERATOR))],
) -> Replayed:
    """Every delivery again with a fresh budget, or only ``handler``'s."""
    runtime = get_runtime(request)
    admin = runtime.store.admin
    audit = audit_of(who, body.reason)
    if body.handler is not None and runtime.registry.subscription(body.handler) is None:
        raise ApiError(422, f"No subscription named {body.handler!r} is registered")
    if body.handler is None:
        done = bool(await admin.replay_events([event_id], audit))
    else:
        done = await admin.replay_delivery(event_id, body.handler, audit)
    if not done:
        if await admin.event_detail(event_id) is None:
            raise ApiError(404, "Event not found")
        raise ApiError(409, "Nothing to replay: the event (or that delivery) is not finished")
    return Replayed(event_id=event_id, handler=body.handler, replayed=True)
