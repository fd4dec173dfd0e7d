"""FastAPI dependencies: the runtime, and the bearer-token guard."""

import hmac
from typing import TYPE_CHECKING

from fastapi import HTTPException, Request

if TYPE_CHECKING:
    from eventproc.runtime import Runtime


def get_runtime(request: Request) -> "Runtime":
    runtime: Runtime = request.app.state.runtime
    return runtime


def require_token(request: Request) -> None:
    """Mutating endpoints need ``Authorization: Bearer $API_TOKEN`` when a token is set."""
    token = get_runtime(request).settings.api_token
    if not token:
        return
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
        raise HTTPException(
            status_code=401,
            detail="Missing or wrong bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
