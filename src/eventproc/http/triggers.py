"""POST /process-event and POST /process-batch: the seed's manual triggers."""

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request

from eventproc.admin.roles import Role
from eventproc.errors import NotFound
from eventproc.http.auth import AUTH_RESPONSES, require
from eventproc.http.bodies import read_json
from eventproc.http.deps import get_runtime
from eventproc.http.errors import ApiError, error_responses
from eventproc.http.schemas import OpenModel

router = APIRouter(
    tags=["triggers"],
    dependencies=[Depends(require(Role.OPERATOR))],
    responses={
        **AUTH_RESPONSES,
        **error_responses(
            {
                413: "Body larger than MAX_BODY_BYTES",
                503: "Database unreachable",
            }
        ),
    },
)

# The body is read by hand (not a pydantic parameter) to keep the seed's answers:
# 400 when event_id is missing or empty, 422 when it is there but not a UUID.
_PROCESS_EVENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"event_id": {"type": "string", "format": "uuid"}},
                    "required": ["event_id"],
                }
            }
        },
    }
}


class EventAccepted(OpenModel):
    success: Literal[True]
    message: str
    event_id: uuid.UUID


class BatchAccepted(OpenModel):
    success: Literal[True]
    message: str
    claimed: int


@router.post(
    "/process-event",
    status_code=202,
    response_model=EventAccepted,
    openapi_extra=_PROCESS_EVENT_BODY,
    responses=error_responses(
        {
            400: "No event_id, malformed JSON, or the event is already processed",
            404: "No such event",
            409: "Leased by a worker, or waiting behind an earlier event of its aggregate",
            422: "event_id is not a UUID",
        }
    ),
)
async def process_event(request: Request) -> EventAccepted:
    """Claim one event now and handle it in the background."""
    event_id = _event_id(await read_json(request, empty={}))
    runtime = get_runtime(request)
    try:
        await runtime.processor.process_event(event_id)
    except NotFound:
        raise ApiError(404, "Event not found") from None
    # AlreadyProcessed (400), Conflict (409), StoreUnavailable (503): answered by type
    # in eventproc.http.errors.
    return EventAccepted(success=True, message="Event processing started", event_id=event_id)


def _event_id(body: Any) -> uuid.UUID:
    raw = body.get("event_id") if isinstance(body, dict) else None
    if raw is None or raw == "":
        raise ApiError(400, "event_id is required")
    try:
        return uuid.UUID(raw) if isinstance(raw, str) else _not_a_uuid()
    except ValueError:
        return _not_a_uuid()


def _not_a_uuid() -> uuid.UUID:
    raise ApiError(422, "event_id must be a UUID")


@router.post("/process-batch", status_code=202, response_model=BatchAccepted)
async def process_batch(request: Request) -> BatchAccepted:
    """Claim one batch (up to BATCH_SIZE due events) now."""
    claimed = await get_runtime(request).processor.process_batch()  # StoreUnavailable: 503
    return BatchAccepted(success=True, message="Batch processing started", claimed=claimed)
