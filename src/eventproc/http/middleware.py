"""Pure ASGI guards around the whole app: a body size cap and a JSON 500 for anything unexpected.

Pure ASGI (not ``BaseHTTPMiddleware``) so that the cap applies while the
body streams in: a client announcing or sending more than ``max_bytes`` gets
413 after at most ``max_bytes`` have been read, with or without
Content-Length.
"""

import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventproc.http.bodies import MAX_JSON_DEPTH, nesting_exceeds
from eventproc.http.errors import ApiError, error_response

logger = logging.getLogger("eventproc.http")


class BodyTooLarge(ApiError):
    """Raised from ``receive`` once the body passes the cap; the error handlers answer 413."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            413,
            f"Request body larger than {max_bytes} bytes",
            headers={"Connection": "close"},  # the rest of the body is not read
            maxBytes=max_bytes,
        )


class BodyLimit:
    """Refuse request bodies over ``max_bytes``: at once if announced, else as they arrive."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            too_large = BodyTooLarge(self.max_bytes)
            response = error_response(
                413, too_large.message, headers=too_large.headers, **too_large.extra
            )
            await response(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        return counted


class JsonNesting:
    """Refuse (400) a JSON body nested deeper than MAX_JSON_DEPTH before any route parses it.

    Routes that declare a body model let FastAPI parse it, and ``json.loads``
    recurses: a 64 KB body of brackets would be a RecursionError (a 500).
    The body is already capped by BodyLimit, so it is read whole here and
    handed on unchanged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if nesting_exceeds(body):
            message_text = f"Malformed JSON body: nested deeper than {MAX_JSON_DEPTH} levels"
            await error_response(400, message_text)(scope, receive, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class CatchAll:
    """Any exception that escapes the app: logged once, answered ``500 {"error": ...}``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except BodyTooLarge as exc:
            if started:
                raise
            await error_response(413, exc.message, headers=exc.headers, **exc.extra)(
                scope, receive, send
            )
        except Exception as exc:
            if started:  # too late for another status: let the server cut the connection
                raise
            _log_unexpected(scope, exc)
            await error_response(500, "Internal server error")(scope, receive, send)


def _log_unexpected(scope: Scope, exc: BaseException) -> None:
    logger.error(
        "Unhandled error answering %s %s: %s: %s",
        scope.get("method"),
        scope.get("path"),
        type(exc).__name__,
        exc,
        exc_info=not isinstance(exc, RecursionError),  # its traceback is a thousand lines
        extra={"action": "http_error"},
    )


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers", ())
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
