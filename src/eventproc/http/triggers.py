"""POST /process-event and POST /process-batch: the seed's manual triggers."""

import json
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from eventproc.errors import Conflict, NotFound, StoreUnavailable
from eventproc.http.deps import get_runtime, require_token

router = APIRouter(tags=["triggers"], dependencies=[Depends(require_token)])

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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@router.post(
    "/process-event",
    status_code=202,
    openapi_extra=_PROCESS_EVENT_BODY,
    responses={
        400: {"description": "no event_id, bad JSON, or already processed"},
        404: {"description": "no such event"},
        409: {"description": "leased by a worker, or waiting behind its aggregate"},
        422: {"description": "event_id is not a UUID"},
        503: {"description": "database unreachable"},
    },
)
async def process_event(request: Request) -> JSONResponse:
    """Claim one event now and handle it in the background."""
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, UnicodeDecodeError):
        return _error(400, "Malformed JSON body")
    raw = body.get("event_id") if isinstance(body, dict) else None
    if raw is None or raw == "":
        return _error(400, "event_id is required")
    try:
        event_id = uuid.UUID(str(raw)) if isinstance(raw, str) else None
    except ValueError:
        event_id = None
    if event_id is None:
        return _error(422, "event_id must be a UUID")
    runtime = get_runtime(request)
    try:
        await runtime.processor.process_event(event_id)
    except NotFound:
        return _error(404, "Event not found")
    except Conflict as exc:
        status = 400 if str(exc) == "Event already processed" else 409
        return _error(status, str(exc))
    except StoreUnavailable as exc:
        return _error(503, f"Database unavailable: {exc}")
    return JSONResponse(
        {"success": True, "message": "Event processing started", "event_id": str(event_id)},
        status_code=202,
    )


@router.post("/process-batch", status_code=202)
async def process_batch(request: Request) -> JSONResponse:
    """Claim one batch (up to BATCH_SIZE due events) now."""
    runtime = get_runtime(request)
    try:
        claimed = await runtime.processor.process_batch()
    except StoreUnavailable as exc:
        return _error(503, f"Database unavailable: {exc}")
    return JSONResponse(
        {"success": True, "message": "Batch processing started", "claimed": claimed},
        status_code=202,
    )
