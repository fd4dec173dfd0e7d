"""One error shape for every answer that is not a success, and the handlers that enforce it.

Routers raise :class:`ApiError` (or return :func:`error_response`) and list
their error statuses with :func:`error_responses`, so the OpenAPI document
names the same model for every error. An :class:`~eventproc.errors.EventprocError`
a route lets through is answered from :data:`ERROR_STATUSES`, by its type
(never by its text); an unmapped one is an unexpected error (500, logged).
"""

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from eventproc.errors import (
    AlreadyProcessed,
    Conflict,
    EventprocError,
    NotFound,
    QueryTooBroad,
    StoreUnavailable,
)
from eventproc.http.schemas import ErrorBody

logger = logging.getLogger("eventproc.http")

# Documented on every operation: an unexpected error is still JSON.
SERVER_ERROR = 500


class ApiError(StarletteHTTPException):
    """An error answer with a message of the route's choosing: ``{"error": message, **extra}``."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(status_code=status_code, detail=message, headers=dict(headers or {}))
        self.message = message
        self.extra = extra


def error_response(
    status_code: int,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status_code, headers=headers)


def error_responses(descriptions: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries, all with the error model, for a route or a router."""
    return {
        status: {"model": ErrorBody, "description": text} for status, text in descriptions.items()
    }


COMMON_RESPONSES = error_responses({SERVER_ERROR: "Unexpected server error"})


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    """How an eventproc error is answered: its status, and words put before its message."""

    status: int
    prefix: str = ""


# The one mapping from error types to HTTP statuses, for every router (the
# admin API's too). Looked up along the error's MRO, so a subclass takes its
# own entry before its parent's (AlreadyProcessed before Conflict).
ERROR_STATUSES: Mapping[type[EventprocError], ErrorStatus] = {
    AlreadyProcessed: ErrorStatus(400),  # the seed answered 400 for a processed event
    NotFound: ErrorStatus(404),
    QueryTooBroad: ErrorStatus(422),
    Conflict: ErrorStatus(409),
    StoreUnavailable: ErrorStatus(503, "Database unavailable: "),
}


def status_for(exc: BaseException) -> ErrorStatus | None:
    """The entry of the most specific mapped type ``exc`` is an instance of, if any."""
    for cls in type(exc).__mro__:
        found = ERROR_STATUSES.get(cls)
        if found is not None:
            return found
    return None


def install_error_handlers(app: FastAPI) -> None:
    """HTTP errors, validation errors and anything unexpected all answer JSON."""
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(EventprocError, _eventproc_error)  # type: ignore[arg-type]
    # Last resort only: CatchAll (eventproc.http.middleware) answers unexpected errors first.
    app.add_exception_handler(Exception, _unexpected)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    headers = dict(exc.headers or {})
    if isinstance(exc, ApiError):
        return error_response(exc.status_code, exc.message, headers=headers, **exc.extra)
    if exc.status_code == 404:
        return error_response(404, "Not found", headers=headers, path=request.url.path)
    if exc.status_code == 405:
        # Nothing but a mount took the path: the static files, which take GET and HEAD.
        headers["Allow"] = allowed_methods(request) or headers.get("Allow", "GET, HEAD")
        return error_response(405, "Method not allowed", headers=headers)
    return error_response(exc.status_code, str(exc.detail), headers=headers)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    # Only where, what and why: echoing the input could be large or not JSON at all.
    detail = [
        {"loc": list(error.get("loc", ())), "msg": str(error.get("msg")), "type": error.get("type")}
        for error in exc.errors()
    ]
    return error_response(422, "Invalid request", detail=detail)


async def _eventproc_error(request: Request, exc: EventprocError) -> JSONResponse:
    answer = status_for(exc)
    if answer is None:
        raise exc  # unexpected: CatchAll logs it and answers 500
    return error_response(answer.status, f"{answer.prefix}{exc}")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return error_response(SERVER_ERROR, "Internal server error")


def allowed_methods(request: Request) -> str:
    """Every method some route accepts on this path (Starlette names only the first route's).

    Asks each route whether it would take the request with another method, so
    it holds for included routers too. Mounts are left out: they take every method.
    """
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    allowed = [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]
    return ", ".join(allowed)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
