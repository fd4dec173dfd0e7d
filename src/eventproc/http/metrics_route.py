"""GET /metrics: Prometheus text format."""

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventproc.http.deps import get_runtime

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    runtime = get_runtime(request)
    await runtime.store_stats()  # refreshes the backlog gauges
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
