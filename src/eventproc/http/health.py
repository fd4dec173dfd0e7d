"""GET /health (the seed's JSON plus extras) and GET /health/ready."""

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from eventproc import __version__
from eventproc.http.deps import get_runtime
from eventproc.store import StoreStats

if TYPE_CHECKING:
    from eventproc.runtime import Runtime

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


def health_payload(
    runtime: "Runtime", stats: StoreStats | None, blocked: list[dict[str, object]] | None = None
) -> dict[str, Any]:
    """The seed's /health JSON exactly, plus eventproc's extra keys."""
    settings = runtime.settings
    processor = runtime.processor
    now = datetime.now(UTC)
    reachable = stats is not None
    oldest_age = None
    if stats is not None and stats.oldest_pending_at is not None:
        oldest_age = round(
            max((stats.database_now - stats.oldest_pending_at).total_seconds(), 0), 3
        )
    return {
        "status": "healthy" if reachable else "degraded",
        "service": "event-processor",
        "timestamp": now.isoformat().replace("+00:00", "Z"),
        "uptime": int(runtime.uptime_seconds),
        "stats": runtime.stats.as_seed_json(),
        "config": {
            "pollIntervalMs": settings.poll_interval_ms,
            "batchSize": settings.batch_size,
            "maxRetries": settings.max_retries,
            "pollingEnabled": settings.enable_polling,
        },
        "registry": {
            "totalHandlers": len(runtime.registry),
            "eventTypes": runtime.registry.event_types,
        },
        "database": {
            "reachable": reachable,
            "backend": runtime.backend,
            "error": None if reachable else processor.last_error,
        },
        "backlog": stats.backlog if stats else None,
        "due": stats.due if stats else None,
        "oldestPendingAgeSeconds": oldest_age,
        "deadLetters": stats.dead_letters if stats else None,
        "inFlight": processor.in_flight,
        "blockedAggregates": blocked or [],
        "skippedCount": runtime.stats.skipped_count,
        "workerId": runtime.worker_id,
        "version": __version__,
        "processorRunning": processor.running,
    }
