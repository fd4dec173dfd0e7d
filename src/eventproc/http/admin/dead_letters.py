"""/admin/v1/dead-letters: find dead letters, see them grouped by cause, replay or discard one."""

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request

from eventproc.admin.roles import Principal, Role
from eventproc.event import DeadLetter
from eventproc.http.admin import paging
from eventproc.http.admin.common import (
    READ_RESPONSES,
    WRITE_RESPONSES,
    ActionBody,
    audit_of,
    serialized,
    viewer,
)
from eventproc.http.admin.shapes import DeadLetterItem, dead_letter_item, shown
from eventproc.http.auth import require
from eventproc.http.deps import get_runtime
from eventproc.http.errors import ApiError, error_responses
from eventproc.http.schemas import OpenModel
from eventproc.store.admin.dead_letters import DeadLetterGroup, DeadLetterQuery, GroupQuery

if TYPE_CHECKING:
    from eventproc.runtime import Runtime

router = APIRouter(prefix="/dead-letters", tags=["admin: dead letters"])

_LIST_PARAMS = (
    "handler", "event_type", "fingerprint", "state", "since", "until", "limit", "cursor",
)  # fmt: skip
_GROUP_PARAMS = ("handler", "event_type", "since", "until", "limit")

# No NUL character: PostgreSQL's text cannot hold one (its error would be a 500).
_TEXT = r"^[^\x00]+$"
Handler = Annotated[
    str | None, Query(min_length=1, max_length=200, pattern=_TEXT, description="Subscription")
]
EventType = Annotated[
    str | None, Query(min_length=1, max_length=100, pattern=_TEXT, description="Exact type")
]
Since = Annotated[str | None, paging.Time]  # created_at at or after
Until = Annotated[str | None, paging.Time]  # created_at before

_UNKNOWN = {404: "No such dead letter (or it was discarded)"}


class DeadLetterPage(paging.Page):
    items: list[DeadLetterItem]


class GroupSampleBody(OpenModel):
    dead_letter_id: uuid.UUID
    event_id: uuid.UUID
    error_message: str


class GroupItem(OpenModel):
    handler: str | None
    error_fingerprint: str | None
    count: int
    count_capped: bool
    first_seen: datetime
    last_seen: datetime
    sample: GroupSampleBody


class GroupPage(paging.Page):
    """Biggest group first; next_cursor is always null (the groups are one bounded read)."""

    items: list[GroupItem]
    capped: bool  # the scan stopped at its bound of handlers or fingerprints: there may be more


class DeadLetterDetail(DeadLetterItem):
    payload: object
    error_detail: str | None  # the traceback


class Replayed(OpenModel):
    dead_letter_id: uuid.UUID
    event_id: uuid.UUID
    handler: str | None
    replayed: bool


class Discarded(OpenModel):
    dead_letter_id: uuid.UUID
    event_id: uuid.UUID
    handler: str | None
    discarded: bool


@router.get(
    "",
    response_model=DeadLetterPage,
    responses=READ_RESPONSES,
)
@serialized
async def list_dead_letters(
    request: Request,
    who: Annotated[Principal, Depends(viewer(*_LIST_PARAMS))],
    handler: Handler = None,
    event_type: EventType = None,
    fingerprint: Annotated[
        str | None,
        Query(min_length=1, max_length=2000, pattern=_TEXT, description="error_fingerprint"),
    ] = None,
    state: Literal["open", "replayed", "all"] = "open",
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, paging.Limit] = paging.DEFAULT_LIMIT,
    cursor: Annotated[str | None, paging.Cursor] = None,
) -> DeadLetterPage:
    """Newest first, keyset-paged; open ones (not replayed) unless ``state`` says otherwise."""
    after = paging.decode(cursor, paging.time_of, paging.uuid_of)
    query = DeadLetterQuery(
        handler=handler,
        event_type=event_type,
        fingerprint=fingerprint,
        state=state,
        since=paging.moment(since, "since"),
        until=paging.moment(until, "until"),
        after=(after[0], after[1]) if after else None,
        limit=limit,
    )
    letters = await get_runtime(request).store.admin.dead_letters.page(query)
    return DeadLetterPage(
        items=[dead_letter_item(letter) for letter in letters],
        next_cursor=paging.next_cursor(letters, limit, lambda d: (d.created_at, d.id)),
    )


@router.get(
    "/groups",
    response_model=GroupPage,
    responses=READ_RESPONSES,
)
@serialized
async def list_groups(
    request: Request,
    who: Annotated[Principal, Depends(viewer(*_GROUP_PARAMS))],
    handler: Handler = None,
    event_type: EventType = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, paging.Limit] = paging.DEFAULT_LIMIT,
) -> GroupPage:
    """Open dead letters by (handler, error fingerprint): one outage is one line.

    Each count reads at most 10,000 letters (``count_capped`` then says "or more").
    """
    query = GroupQuery(
        handler=handler,
        event_type=event_type,
        since=paging.moment(since, "since"),
        until=paging.moment(until, "until"),
        limit=limit,
    )
    found = await get_runtime(request).store.admin.dead_letters.groups(query)
    return GroupPage(items=[_group(group) for group in found.groups], capped=found.capped)


def _group(group: DeadLetterGroup) -> GroupItem:
    sample = group.sample
    return GroupItem(
        handler=group.handler,
        error_fingerprint=group.error_fingerprint,
        count=group.count,
        count_capped=group.count_capped,
        first_seen=group.first_seen,
        last_seen=group.last_seen,
        sample=GroupSampleBody(
            dead_letter_id=sample.dead_letter_id,
            event_id=sample.event_id,
            error_message=sample.error_message,
        ),
    )


@router.get(
    "/{dead_letter_id}",
    response_model=DeadLetterDetail,
    responses={**READ_RESPONSES, **error_responses(_UNKNOWN)},
)
async def show_dead_letter(
    request: Request,
    dead_letter_id: uuid.UUID,
    who: Annotated[Principal, Depends(require(Role.VIEWER))],
) -> DeadLetterDetail:
    """One dead letter, open or replayed, with its traceback and the event's payload."""
    runtime = get_runtime(request)
    letter = await _found(runtime, dead_letter_id)
    return DeadLetterDetail(
        **dead_letter_item(letter).model_dump(),
        payload=shown("payload", letter.payload, who, runtime.redaction),
        error_detail=letter.error_detail,
    )


@router.post(
    "/{dead_letter_id}/replay",
    response_model=Replayed,
    responses={
        **WRITE_RESPONSES,
        **error_responses(
            {
                **_UNKNOWN,
                409: "Already replayed, its subscription is not registered, "
                "or its event is pending again",
            }
        ),
    },
)
async def replay_dead_letter(
    request: Request,
    body: ActionBody,
    dead_letter_id: uuid.UUID,
    who: Annotated[Principal, Depends(require(Role.OPERATOR))],
) -> Replayed:
    """Its delivery again with a fresh budget (its whole event, for one naming no handler)."""
    runtime = get_runtime(request)
    letter = await _open(runtime, dead_letter_id)
    if letter.handler is not None and runtime.registry.subscription(letter.handler) is None:
        raise ApiError(409, f"No subscription named {letter.handler!r} is registered")
    replayed = await runtime.store.admin.replay_dead_letters(
        [dead_letter_id], audit_of(who, body.reason)
    )
    if not replayed:
        raise ApiError(409, "Nothing to replay: the event is pending again")
    return Replayed(
        dead_letter_id=letter.id, event_id=letter.event_id, handler=letter.handler, replayed=True
    )


@router.post(
    "/{dead_letter_id}/discard",
    response_model=Discarded,
    responses={**WRITE_RESPONSES, **error_responses({**_UNKNOWN, 409: "Already replayed"})},
)
async def discard_dead_letter(
    request: Request,
    body: ActionBody,
    dead_letter_id: uuid.UUID,
    who: Annotated[Principal, Depends(require(Role.OPERATOR))],
) -> Discarded:
    """Delete it; its event (or delivery), if still dead-lettered, is marked discarded."""
    runtime = get_runtime(request)
    letter = await _open(runtime, dead_letter_id)
    discarded = await runtime.store.admin.discard_dead_letters(
        [dead_letter_id], audit_of(who, body.reason)
    )
    if not discarded:
        raise ApiError(404, "No such dead letter (discarded meanwhile)")
    return Discarded(
        dead_letter_id=letter.id, event_id=letter.event_id, handler=letter.handler, discarded=True
    )


async def _found(runtime: "Runtime", dead_letter_id: uuid.UUID) -> DeadLetter:
    letter = await runtime.store.admin.dead_letters.get(dead_letter_id)
    if letter is None:
        raise ApiError(404, "Dead letter not found")
    return letter


async def _open(runtime: "Runtime", dead_letter_id: uuid.UUID) -> DeadLetter:
    """The dead letter, refused (409) once replayed: its story is kept, not acted on twice."""
    letter = await _found(runtime, dead_letter_id)
    if letter.replayed_at is not None:
        raise ApiError(409, "Already replayed", replayed_at=letter.replayed_at.isoformat())
    return letter
