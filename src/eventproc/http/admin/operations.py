"""/admin/v1/operations: bulk replay, discard, pause/resume and backfill, planned then executed.

``POST /operations`` is a dry run: the count (capped at max_items), a sample
and a plan token. ``POST /operations/{id}/execute`` with that token and a
reason starts it; workers then carry it in batches at its rate. Replays,
discards, pauses and resumes need an operator, a backfill (new work for
past events) an admin.
"""

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import AfterValidator, AwareDatetime, BeforeValidator, Field

from eventproc.admin import operations as carrier
from eventproc.admin.roles import Principal, Role
from eventproc.http.admin import paging
from eventproc.http.admin.common import (
    READ_RESPONSES,
    WRITE_RESPONSES,
    Body,
    audit_of,
    learn_pauses,
    serialized,
    viewer,
)
from eventproc.http.auth import require
from eventproc.http.deps import get_runtime
from eventproc.http.errors import ApiError, error_responses
from eventproc.http.schemas import OpenModel
from eventproc.store.admin import BadFilter
from eventproc.store.admin.operations import Operation, OperationRefused

if TYPE_CHECKING:
    from eventproc.runtime import Runtime

router = APIRouter(prefix="/operations", tags=["admin: operations"])

Action = Literal["replay", "discard", "pause", "resume", "backfill"]
Status = Literal["planned", "running", "done", "cancelled", "failed"]
_KINDS = ("event_ids", "dead_letter_ids", "events", "dead_letters")
_REFUSED = {"unknown": 404, "token": 403, "expired": 410, "finished": 409}
_NO_NUL = r"^[^\x00]*$"  # PostgreSQL text and jsonb hold no NUL


def _utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once in UTC") from None


def _iso_text(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("a time is an ISO 8601 string with a timezone")
    return value


Moment = Annotated[
    AwareDatetime,
    Field(description="ISO 8601 with a timezone"),
    BeforeValidator(_iso_text),
    AfterValidator(_utc),
]
Name = Annotated[str, Field(min_length=1, max_length=200, pattern=_NO_NUL)]


def _text(most: int) -> Any:
    return Field(None, min_length=1, max_length=most, pattern=_NO_NUL)


class EventFilter(Body):
    """The event list's filters (GET /admin/v1/events), every one optional."""

    type: str | None = _text(100)
    handler: Name | None = None
    state: Literal["pending", "done"] | None = None
    outcome: Literal["succeeded", "skipped", "dead_lettered", "partial", "discarded"] | None = None
    aggregate_id: uuid.UUID | None = None
    created_by: str | None = _text(100)
    since: Moment | None = None
    until: Moment | None = None
    path: str | None = Field(
        None, max_length=300, pattern=r"^(payload|metadata)(\.[A-Za-z0-9_-]{1,64}){1,16}$"
    )
    value: str | None = Field(None, max_length=1000, pattern=_NO_NUL)
    error: str | None = _text(200)


class DeadLetterFilter(Body):
    """Open dead letters by handler, type, error fingerprint and time."""

    handler: Name | None = None
    event_type: str | None = _text(100)
    fingerprint: str | None = _text(1000)
    since: Moment | None = None
    until: Moment | None = None


class Selector(Body):
    """One of event_ids, dead_letter_ids, events, dead_letters; or handler (+ since, until)."""

    event_ids: list[uuid.UUID] | None = Field(None, min_length=1, max_length=1000)
    dead_letter_ids: list[uuid.UUID] | None = Field(None, min_length=1, max_length=1000)
    events: EventFilter | None = None
    dead_letters: DeadLetterFilter | None = None
    handler: Name | None = None
    since: Moment | None = None
    until: Moment | None = None


class PlanBody(Body):
    action: Action
    selector: Selector
    max_items: int = Field(1000, ge=1, le=100_000, description="At most this many items")
    rate_per_second: float = Field(
        10.0, ge=0.1, le=1000, allow_inf_nan=False, description="Items per second"
    )
    reason: str | None = Field(None, min_length=1, max_length=1000, pattern=_NO_NUL)


class ExecuteBody(Body):
    plan_token: str = Field(min_length=1, max_length=200, description="From the dry run")
    reason: str = Field(
        min_length=1, max_length=1000, pattern=_NO_NUL, description="Why: kept in the audit trail"
    )


class CancelBody(Body):
    reason: str | None = Field(None, min_length=1, max_length=1000, pattern=_NO_NUL)


class OperationItem(OpenModel):
    id: uuid.UUID
    action: str
    selector: dict[str, Any]
    max_items: int
    rate_per_second: float
    status: str  # planned | running | done | cancelled | failed
    count: int  # matched at plan time, at most max_items
    capped: bool  # more matched than max_items
    total: int | None  # items frozen when it was executed
    done_count: int
    changed_count: int
    actor: str
    role: str
    reason: str | None
    created_at: datetime
    plan_expires_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None
    locked_by: str | None  # the worker carrying it
    locked_until: datetime | None
    error: str | None


class SampleItem(OpenModel):
    event_id: uuid.UUID | None = None
    event_type: str | None = None
    handler: str | None = None
    dead_letter_id: uuid.UUID | None = None


class PlanAnswer(OperationItem):
    sample: list[SampleItem]
    plan_token: str  # shown once: execute needs it


class OperationPage(paging.Page):
    items: list[OperationItem]


def _item(operation: Operation) -> OperationItem:
    return OperationItem(
        **{
            name: getattr(operation, name)
            for name in OperationItem.model_fields
            if name not in ("count", "capped")
        },
        count=min(operation.planned_count, operation.max_items),
        capped=operation.planned_count > operation.max_items,
    )


def _fit(body: PlanBody, runtime: "Runtime") -> None:
    """A selector the action takes, naming subscriptions the registry has; 422 otherwise."""
    selector = body.selector
    given = {name for name in Selector.model_fields if getattr(selector, name) is not None}
    kinds = given & set(_KINDS)
    if body.action in ("pause", "resume"):
        allowed, needed = {"handler"}, {"handler"}
    elif body.action == "backfill":
        allowed, needed = {"handler", "since", "until"}, {"handler", "since"}
    elif len(kinds) != 1:
        raise ApiError(422, f"A {body.action} selector takes one of: {', '.join(_KINDS)}")
    else:
        allowed = needed = set(kinds)
        if body.action == "discard" and not kinds & {"dead_letter_ids", "dead_letters"}:
            raise ApiError(422, "discard takes dead_letter_ids or dead_letters")
        if body.action == "replay" and kinds & {"event_ids", "events"}:
            allowed = allowed | {"handler"}  # only that subscription's deliveries
    if given - allowed or needed - given:
        wrong = sorted(given - allowed) or sorted(needed - given)
        verb = "does not take" if given - allowed else "needs"
        raise ApiError(422, f"A {body.action} selector {verb}: {', '.join(wrong)}")
    _check_names(selector, runtime)


def _check_names(selector: Selector, runtime: "Runtime") -> None:
    if selector.handler is not None and runtime.registry.subscription(selector.handler) is None:
        raise ApiError(422, f"No subscription named {selector.handler!r} is registered")
    events = selector.events
    if events is not None:
        if (events.path is None) != (events.value is None):
            raise ApiError(422, "events.path and events.value go together")
        if selector.handler and events.handler and events.handler != selector.handler:
            raise ApiError(422, "selector.handler and events.handler differ")
    if selector.since and selector.until and selector.until <= selector.since:
        raise ApiError(422, "until must be after since")


def _refused(exc: OperationRefused) -> ApiError:
    return ApiError(_REFUSED[exc.kind], str(exc))


def _may(who: Principal, action: str) -> None:
    if action == "backfill" and not who.role.allows(Role.ADMIN):
        raise ApiError(403, f"A backfill needs the admin role; the token given is {who.role}")


_ID_RESPONSES = error_responses({404: "No such operation"})


@router.post(
    "",
    status_code=201,
    response_model=PlanAnswer,
    responses={
        **WRITE_RESPONSES,
        **error_responses({422: "Unknown action or selector key, or a selector that misfits"}),
    },
)
async def plan_operation(
    request: Request,
    body: PlanBody,
    who: Annotated[Principal, Depends(require(Role.OPERATOR))],
) -> PlanAnswer:
    """A dry run: what the operation would take (count, sample) and its plan token (15 min)."""
    runtime = get_runtime(request)
    _may(who, body.action)
    _fit(body, runtime)
    selector = body.selector.model_dump(mode="json", exclude_none=True)
    try:
        planned = await carrier.plan(
            runtime,
            body.action,
            selector,
            max_items=body.max_items,
            rate_per_second=body.rate_per_second,
            who=audit_of(who, body.reason),
        )
    except BadFilter as exc:
        raise ApiError(422, str(exc)) from None
    sample = [SampleItem.model_validate(item) for item in planned.sample]
    item = _item(planned.operation)
    return PlanAnswer(**item.model_dump(), sample=sample, plan_token=planned.token)


@router.post(
    "/{operation_id}/execute",
    response_model=OperationItem,
    responses={
        **WRITE_RESPONSES,
        **_ID_RESPONSES,
        **error_responses(
            {
                403: "A wrong plan token, a role too low, or a cross-site browser request",
                409: "Cancelled, done or failed: plan a new one",
                410: "The plan token expired: plan again",
            }
        ),
    },
)
async def execute_operation(
    request: Request,
    operation_id: uuid.UUID,
    body: ExecuteBody,
    who: Annotated[Principal, Depends(require(Role.OPERATOR))],
) -> OperationItem:
    """Start it: its items are frozen now, workers apply them at its rate. Idempotent."""
    runtime = get_runtime(request)
    found = await runtime.store.admin.operations.get(operation_id)
    if found is None:
        raise ApiError(404, "Operation not found")
    _may(who, found.action)
    try:
        started = await carrier.execute(
            runtime, operation_id, body.plan_token, audit_of(who, body.reason)
        )
    except OperationRefused as exc:
        raise _refused(exc) from None
    if started.action in ("pause", "resume"):  # done at execute: hold or free work here now
        await learn_pauses(runtime)
    return _item(started)


@router.post(
    "/{operation_id}/cancel",
    response_model=OperationItem,
    responses={
        **WRITE_RESPONSES,
        **_ID_RESPONSES,
        **error_responses({409: "Done, cancelled or failed already"}),
    },
)
async def cancel_operation(
    request: Request,
    operation_id: uuid.UUID,
    body: CancelBody,
    who: Annotated[Principal, Depends(require(Role.OPERATOR))],
) -> OperationItem:
    """Stop it: no batch starts after this answer; what was applied stays."""
    try:
        cancelled = await get_runtime(request).store.admin.operations.cancel(
            operation_id, audit_of(who, body.reason)
        )
    except OperationRefused as exc:
        raise _refused(exc) from None
    return _item(cancelled)


@router.get(
    "",
    response_model=OperationPage,
    responses=READ_RESPONSES,
)
@serialized
async def list_operations(
    request: Request,
    who: Annotated[Principal, Depends(viewer("status", "action", "limit", "cursor"))],
    status: Status | None = None,
    action: Action | None = None,
    limit: Annotated[int, paging.Limit] = paging.DEFAULT_LIMIT,
    cursor: Annotated[str | None, paging.Cursor] = None,
) -> OperationPage:
    """Newest first, keyset-paged."""
    after = paging.decode(cursor, paging.time_of, paging.uuid_of)
    found = await get_runtime(request).store.admin.operations.page(
        limit=limit, after=(after[0], after[1]) if after else None, status=status, action=action
    )
    return OperationPage(
        items=[_item(operation) for operation in found],
        next_cursor=paging.next_cursor(found, limit, lambda op: (op.created_at, op.id)),
    )


@router.get(
    "/{operation_id}",
    response_model=OperationItem,
    responses={**READ_RESPONSES, **_ID_RESPONSES},
)
async def show_operation(
    request: Request,
    operation_id: uuid.UUID,
    who: Annotated[Principal, Depends(require(Role.VIEWER))],
) -> OperationItem:
    """Its progress: total, done_count, changed_count, status, error."""
    found = await get_runtime(request).store.admin.operations.get(operation_id)
    if found is None:
        raise ApiError(404, "Operation not found")
    return _item(found)
