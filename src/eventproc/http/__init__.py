"""The HTTP surface: health, manual triggers, metrics, docs. Built per runtime.

Shared pieces for new routers (the admin API among them): the error model,
``error_responses`` and ``ERROR_STATUSES`` (eventproc errors answered by
type, so a route lets them through) in :mod:`eventproc.http.errors`, the
bearer-token dependency (:mod:`eventproc.http.auth`), JSON bodies read
within limits (:mod:`eventproc.http.bodies`). Every answer that is not a success is JSON
``{"error": ...}``; request bodies are capped at ``MAX_BODY_BYTES``.
"""

import copy
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from eventproc import __version__
from eventproc.http import admin, docs, health, metrics_route, triggers
from eventproc.http.auth import without_auth
from eventproc.http.errors import COMMON_RESPONSES, install_error_handlers
from eventproc.http.middleware import BodyLimit, CatchAll, JsonNesting
from eventproc.http.routes import add_routes

if TYPE_CHECKING:
    from eventproc.runtime import Runtime


class EventprocAPI(FastAPI):
    """FastAPI whose OpenAPI document follows the runtime's API_TOKEN (see eventproc.http.auth)."""

    _tokenless_openapi: dict[str, Any] | None = None

    def openapi(self) -> dict[str, Any]:
        document = super().openapi()
        if self.state.runtime.tokens.configured:
            return document
        if self._tokenless_openapi is None:
            self._tokenless_openapi = without_auth(copy.deepcopy(document))
        return self._tokenless_openapi


def create_app(runtime: "Runtime") -> FastAPI:
    app = EventprocAPI(
        title="eventproc",
        version=__version__,
        description=(
            "Event processor: health, manual triggers, metrics and the admin API (/admin/v1)."
        ),
        docs_url=None,
        redoc_url=None,
        responses=COMMON_RESPONSES,
    )
    app.state.runtime = runtime
    for router in (health.router, triggers.router, metrics_route.router):
        add_routes(app, router)  # not included: see eventproc.http.routes
    admin.include(app)
    docs.install_docs(app)
    install_error_handlers(app)
    # Added last = outermost: CatchAll also covers BodyLimit, BodyLimit JsonNesting.
    app.add_middleware(JsonNesting)
    app.add_middleware(BodyLimit, max_bytes=runtime.settings.max_body_bytes)
    app.add_middleware(CatchAll)
    return app
