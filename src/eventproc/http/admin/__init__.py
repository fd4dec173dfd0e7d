"""/admin/v1: the versioned admin API, one router module per resource.

The CLI and the dashboard use this API and nothing else of the service's.
Reads need a viewer token, changes an operator's (or an admin's), whenever
tokens are configured (eventproc.http.auth).
"""

from fastapi import FastAPI

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

PREFIX = "/admin/v1"
MODULES = (
    events,
    dead_letters,
    handlers,
    workers,
    aggregates,
    route,
    operations,
    audit,
    tables,
)


def include(app: FastAPI) -> None:
    """Each resource's router straight onto the app, under PREFIX.

    One level of nesting fewer than an /admin/v1 router holding them: FastAPI
    matches a request against the nested routers' routes in turn, and that
    was a quarter of a trivial admin request's CPU (py-spy).
    """
    for module in MODULES:
        app.include_router(module.router, prefix=PREFIX)
