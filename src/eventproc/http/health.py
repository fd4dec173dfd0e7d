"""GET /health (the seed's JSON plus extras), GET /health/ready, and HEAD for both.

The response models document the keys; they are open, so a key added to
:func:`health_payload` is served at once, and documenting it is one field
line in :class:`Health`.
"""

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import Field

from eventproc import __version__
from eventproc.http.admin.tables import summary as tables_summary
from eventproc.http.deps import get_runtime
from eventproc.http.schemas import ErrorBody, OpenModel
from eventproc.store import BlockedSummary, StoreStats
from eventproc.store.protocol import WakeUps

if TYPE_CHECKING:
    from eventproc.registry import Registry
    from eventproc.runtime import Runtime

router = APIRouter(tags=["health"])


class SeedStats(OpenModel):
    totalProcessed: int
    successCount: int
    errorCount: int
    deadLetterCount: int
    lastProcessedAt: str | None


class SeedConfig(OpenModel):
    pollIntervalMs: int
    batchSize: int
    maxRetries: int
    pollingEnabled: bool


class SubscriptionInfo(OpenModel):
    """One subscription: its name (its deliveries' and dead letters' ``handler``) and routing."""

    name: str
    types: list[str]
    filter: dict[str, Any] | None
    transactional: bool
    timeoutSeconds: float | None
    description: str


class RegistryInfo(OpenModel):
    """``totalHandlers`` counts subscriptions; ``eventTypes`` holds each type pattern once."""

    totalHandlers: int
    eventTypes: list[str]
    subscriptions: list[SubscriptionInfo]


class DatabaseInfo(OpenModel):
    reachable: bool
    backend: str
    error: str | None


class BlockedAggregate(OpenModel):
    aggregateId: str
    aggregateType: str | None
    blockedBy: str
    eventType: str
    reason: str
    waiting: int
    retryAt: str | None
    # The subscription held back; null when an event on its own row holds
    # back every subscription of the aggregate.
    handler: str | None


class WakeUpsInfo(OpenModel):
    """How this process learns of new events: ``listen`` only once a self-NOTIFY arrived."""

    mode: Literal["listen", "polling", "data_version", "off"]
    reason: str | None
    since: str
    verifiedAt: str | None


class TablesSummary(OpenModel):
    figuresAt: str
    rows: dict[str, int | None]
    deadTuples: int | None
    oldestXactAgeSeconds: float | None
    claimSeconds: float
    pruning: bool
    pruneLagSeconds: float | None


class Health(OpenModel):
    """The seed's keys first (``status`` to ``registry``), then eventproc's."""

    status: Literal["healthy", "degraded"]
    service: str
    timestamp: str
    uptime: int
    stats: SeedStats
    config: SeedConfig
    registry: RegistryInfo
    database: DatabaseInfo
    backlog: int | None
    due: int | None
    oldestPendingAgeSeconds: float | None
    statsAgeSeconds: float | None = Field(
        None,
        description="How old backlog, due, oldestPendingAgeSeconds and deadLetters are: one "
        "shared reading, at least STATS_MAX_AGE_SECONDS and 100 times its own duration",
    )
    deadLetters: int | None
    inFlight: int
    wakeUps: WakeUpsInfo
    blockedAggregates: list[BlockedAggregate]
    skippedCount: int
    workerId: str
    version: str
    processorRunning: bool
    tables: TablesSummary | None = Field(
        None, description="Table health in brief (GET /admin/v1/tables has it all)"
    )


class Ready(OpenModel):
    ready: Literal[True]
    backlog: int


class NotReady(ErrorBody):
    """An error body (``error`` says why) that also says ``ready: false``."""

    ready: Literal[False]


@router.get("/health", response_model=Health)
async def health(request: Request) -> dict[str, Any]:
    """Always 200 while the process serves; ``status`` says whether the database answers."""
    runtime = get_runtime(request)
    stats = await runtime.store_stats()
    blocked = blocked_json(runtime.blocked) if stats is not None else []
    payload = health_payload(runtime, stats, blocked)
    # Table health (issue 16), from the shared reading: null while the database is away.
    reading = await runtime.tables.read() if stats is not None else None
    payload["tables"] = None if reading is None else tables_summary(runtime, reading)
    return payload


BLOCKED_SHOWN = 10  # aggregates listed in /health (blockedAggregateCount counts them all)


def blocked_json(blocked: BlockedSummary | None) -> list[dict[str, object]]:
    """The aggregates held back at the last store_stats(), oldest block first."""
    if blocked is None:
        return []
    return [
        {
            "aggregateId": str(item.aggregate_id),
            "aggregateType": item.aggregate_type,
            "blockedBy": str(item.event_id),
            "eventType": item.event_type,
            "reason": item.reason,
            "waiting": item.waiting,
            "retryAt": item.retry_at.isoformat() if item.retry_at else None,
            "waitingSince": item.waiting_since.isoformat() if item.waiting_since else None,
            "handler": item.handler,
        }
        for item in blocked.items[:BLOCKED_SHOWN]
    ]


def wake_ups_json(wake_ups: WakeUps) -> dict[str, object]:
    return {
        "mode": wake_ups.mode,
        "reason": wake_ups.reason,
        "since": _iso(wake_ups.since),
        "verifiedAt": _iso(wake_ups.verified_at) if wake_ups.verified_at else None,
    }


def registry_json(registry: "Registry") -> dict[str, object]:
    """The seed's two keys, then every subscription with its types and filter."""
    return {
        "totalHandlers": len(registry),
        "eventTypes": registry.event_types,
        "subscriptions": [
            {
                "name": entry.name,
                "types": list(entry.types),
                "filter": None if entry.filter is None else dict(entry.filter),
                "transactional": entry.transactional,
                "timeoutSeconds": entry.timeout_seconds,
                "description": entry.description,
            }
            for entry in registry
        ],
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@router.head("/health", response_class=Response, responses={200: {"description": "Serving"}})
async def health_head() -> Response:
    """For uptime checkers: 200 with no body while the process serves (no database query)."""
    return Response(status_code=200)


@router.get(
    "/health/ready",
    response_model=Ready,
    responses={503: {"model": NotReady, "description": "Database unreachable"}},
)
async def ready(request: Request) -> Any:
    """503 when the database cannot be reached, for load balancers and Kubernetes."""
    runtime = get_runtime(request)
    stats = await runtime.store_stats()
    if stats is None:
        return JSONResponse(
            {"ready": False, "error": runtime.processor.last_error or "database unreachable"},
            status_code=503,
        )
    return {"ready": True, "backlog": stats.backlog}


@router.head(
    "/health/ready",
    response_class=Response,
    responses={
        200: {"description": "Ready"},
        503: {"description": "Database unreachable"},
    },
)
async def ready_head(request: Request) -> Response:
    """GET /health/ready's status with no body."""
    stats = await get_runtime(request).store_stats()
    return Response(status_code=200 if stats is not None else 503)


def health_payload(
    runtime: "Runtime", stats: StoreStats | None, blocked: list[dict[str, object]] | None = None
) -> dict[str, Any]:
    """The seed's /health JSON exactly, plus eventproc's extra keys."""
    settings = runtime.settings
    processor = runtime.processor
    now = datetime.now(UTC)
    reachable = stats is not None
    status, reasons = runtime.health_status(stats)
    oldest_age = None
    if stats is not None and stats.oldest_pending_at is not None:
        oldest_age = round(
            max((stats.database_now - stats.oldest_pending_at).total_seconds(), 0), 3
        )
    return {
        "status": status,
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
        "registry": registry_json(runtime.registry),
        "database": {
            "reachable": reachable,
            "backend": runtime.backend,
            "error": None if reachable else processor.last_error,
        },
        "backlog": stats.backlog if stats else None,
        "due": stats.due if stats else None,
        "oldestPendingAgeSeconds": oldest_age,
        "statsAgeSeconds": round(runtime.stats_age_seconds(), 3) if stats else None,
        "deadLetters": stats.dead_letters if stats else None,
        "inFlight": processor.in_flight,
        "wakeUps": wake_ups_json(runtime.store.wake_ups),
        "blockedAggregates": blocked or [],
        "blockedAggregateCount": runtime.blocked.count if runtime.blocked else 0,
        "statusReasons": reasons,
        "skippedCount": runtime.stats.skipped_count,
        "workerId": runtime.worker_id,
        "version": __version__,
        "processorRunning": processor.running,
    }
