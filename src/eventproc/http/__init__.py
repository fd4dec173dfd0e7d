"""The HTTP surface: health, manual triggers, metrics. Built per runtime."""

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from eventproc import __version__
from eventproc.http import health, metrics_route, triggers

if TYPE_CHECKING:
    from eventproc.runtime import Runtime


def create_app(runtime: "Runtime") -> FastAPI:
    app = FastAPI(
        title="eventproc",
        version=__version__,
        description="Event processor: health, manual triggers and metrics.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.include_router(health.router)
    app.include_router(triggers.router)
    app.include_router(metrics_route.router)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "Not found" if exc.status_code == 404 else str(exc.detail)
        body = {"error": message}
        if exc.status_code == 404:
            body["path"] = request.url.path
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": "Invalid request", "detail": exc.errors()}, status_code=422)

    return app
