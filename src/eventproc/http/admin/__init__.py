"""/admin/v1: the versioned admin API, one router module per resource.

The CLI and the dashboard use this API and nothing else of the service's.
Reads need a viewer token, changes an operator's (or an admin's), whenever
tokens are configured (eventproc.http.auth).
"""

from fastapi import APIRouter

from eventproc.http.admin import (
    aggregates,
    audit,
    dead_letters,
    events,
    handlers,
    operations,
    route,
    tables,
    workers,
)

router = APIRouter(prefix="/admin/v1")
for module in (
    events,
    dead_letters,
    handlers,
    workers,
    aggregates,
    route,
    operations,
    audit,
    tables,
):
    router.include_router(module.router)
