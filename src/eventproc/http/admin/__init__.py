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
from eventproc.http.routes import add_routes

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
    """Each resource's routes straight onto the app, under PREFIX (see eventproc.http.routes).

    No router in between: FastAPI matches a request against an included
    router's routes in turn, and that was a quarter of a trivial admin
    request's CPU (py-spy), then a fifth of its Python calls.
    """
    for module in MODULES:
        add_routes(app, module.router, PREFIX)
