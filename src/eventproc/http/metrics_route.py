"""GET /metrics: Prometheus text format."""

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from eventproc.http.deps import get_runtime

router = APIRouter(tags=["metrics"])

_TEXT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
}


@router.get("/metrics", response_class=Response, responses=_TEXT)
async def metrics(request: Request) -> Response:
    runtime = get_runtime(request)
    await runtime.store_stats()  # refreshes the backlog gauges
    if runtime.prepared:
        await runtime.tables.read()  # and the table-health ones (eventproc.metrics_tables)
    return Response(generate_latest(runtime.metrics.registry), media_type=CONTENT_TYPE_LATEST)
