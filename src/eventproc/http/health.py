"""GET /health (the seed's JSON plus extras) and GET /health/ready."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from eventproc.http.deps import get_runtime
from eventproc.runtime import health_payload

router = APIRouter(tags=["health"])


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Always 200 while the process serves; ``status`` says whether the database answers."""
    runtime = get_runtime(request)
    stats = await runtime.store_stats()
    blocked = await runtime.blocked_aggregates() if stats is not None else []
    return health_payload(runtime, stats, blocked)


@router.get("/health/ready", responses={503: {"description": "database unreachable"}})
async def ready(request: Request) -> JSONResponse:
    """503 when the database cannot be reached, for load balancers and Kubernetes."""
    runtime = get_runtime(request)
    stats = await runtime.store_stats()
    if stats is None:
        return JSONResponse(
            {"ready": False, "error": runtime.processor.last_error or "database unreachable"},
            status_code=503,
        )
    return JSONResponse({"ready": True, "backlog": stats.backlog})
