"""Bearer-token auth: one dependency for every router that changes something.

When ``API_TOKEN`` is set, routes that depend on :func:`require_token` need
``Authorization: Bearer <token>``; the OpenAPI document then declares the
``bearerAuth`` scheme on them and their 401. Without a token the document
keeps the scheme (so clients see how auth works) but drops the requirement
and the 401, because this server enforces neither.
"""

import hmac
from typing import Any

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from eventproc.http.deps import get_runtime
from eventproc.http.errors import ApiError, error_responses

SCHEME = "bearerAuth"

bearer = HTTPBearer(
    auto_error=False,
    scheme_name=SCHEME,
    description="The value of API_TOKEN (needed only when the server sets one).",
)

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = error_responses(
    {401: "Missing or wrong bearer token"}
)
AUTH_RESPONSES[401]["headers"] = {
    "WWW-Authenticate": {"description": "Always `Bearer`", "schema": {"type": "string"}}
}


async def require_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Security(bearer),  # noqa: B008
) -> None:
    """Refuse the request unless it carries the configured token (no token set: allow)."""
    token = get_runtime(request).settings.api_token
    if not token:
        return
    given = credentials.credentials.strip() if credentials is not None else ""
    if not given or not hmac.compare_digest(given.encode(), token.encode()):
        raise ApiError(401, "Missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})


def without_auth(document: dict[str, Any]) -> dict[str, Any]:
    """The document as served without a token: no operation needs ``bearerAuth`` or answers 401."""
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "security" not in operation:
                continue
            operation["security"] = [item for item in operation["security"] if SCHEME not in item]
            if not operation["security"]:
                del operation["security"]
            operation.get("responses", {}).pop("401", None)
    return document
