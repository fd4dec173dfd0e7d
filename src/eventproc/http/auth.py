"""Bearer tokens with roles: one dependency, ``require(role)``, for every router.

With tokens configured (API_TOKEN, API_TOKENS, API_TOKENS_FILE), a route
that depends on ``require(role)`` needs ``Authorization: Bearer <token>`` of
that role or a higher one (401 without a known token, 403 below the role);
the OpenAPI document declares the ``bearerAuth`` scheme and those answers.
Without any token the service is open as before (every caller an admin,
named by ``X-Eventproc-Actor`` or ``anonymous``) and the document drops the
requirement and the 401.

A browser can be made to send a request to a loopback server from any page
it visits: a mutation (any method but GET, HEAD, OPTIONS) is refused with
403 unless it is same-origin by ``Sec-Fetch-Site`` or ``Origin``. Clients
that are not browsers send neither header and are not affected.
"""

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from eventproc.admin.roles import ANONYMOUS, Principal, Role
from eventproc.http.deps import get_runtime
from eventproc.http.errors import ApiError, error_responses

SCHEME = "bearerAuth"
ACTOR_HEADER = "x-eventproc-actor"  # the caller's name when no token is configured
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SAME_ORIGIN_FETCH = frozenset({"same-origin", "none"})

bearer = HTTPBearer(
    auto_error=False,
    scheme_name=SCHEME,
    description=(
        "A token from API_TOKEN (admin) or API_TOKENS / API_TOKENS_FILE (viewer, operator "
        "or admin); needed only when the server sets any."
    ),
)

AUTH_RESPONSES: dict[int | str, dict[str, Any]] = error_responses(
    {
        401: "Missing or unknown bearer token",
        403: "The token's role may not do this, or a cross-site browser request",
    }
)
AUTH_RESPONSES[401]["headers"] = {
    "WWW-Authenticate": {"description": "Always `Bearer`", "schema": {"type": "string"}}
}

Guard = Callable[..., Awaitable[Principal]]
Check = Callable[[Request], None]


def require(role: Role, *, first: Check | None = None) -> Guard:
    """A dependency that answers who is calling, refusing anyone below ``role``.

    ``first``: a check of the request that runs before the token's (the
    admin lists' refusal of unknown query parameters). One dependency
    instead of two: FastAPI's solving of a dependency costs more of the
    worker's CPU than either check.
    """

    async def guard(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Security(bearer),  # noqa: B008
    ) -> Principal:
        if first is not None:
            first(request)
        principal = _principal(request, credentials)
        if not principal.role.allows(role):
            raise ApiError(
                403,
                f"This needs the {role} role; the token given is {principal.role}",
                needed=str(role),
            )
        if request.method not in _SAFE_METHODS:
            refuse_cross_site(request)
        request.state.principal = principal
        return principal

    guard.__name__ = f"require_{role}"
    return guard


def _principal(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    tokens = get_runtime(request).tokens
    if not tokens.configured:
        return _open_caller(request)
    given = credentials.credentials.strip() if credentials is not None else ""
    found = tokens.find(given) if given else None
    if found is None:
        raise ApiError(
            401, "Missing or unknown bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return found


def _open_caller(request: Request) -> Principal:
    """With no token configured: an admin, named by ``X-Eventproc-Actor`` if the caller says.

    The CLI sends its user and host, so that the audit trail of an open
    (loopback, token-less) service still says who did what. It is a name,
    not a credential: with tokens configured the token's name is used instead.
    """
    given = request.headers.get(ACTOR_HEADER, "").strip()
    if not given:
        return ANONYMOUS
    name = "".join(c for c in given if c.isprintable())[:100]
    return Principal(name or ANONYMOUS.actor, Role.ADMIN)


def refuse_cross_site(request: Request) -> None:
    """403 for a browser's request from another site (CSRF); other clients pass."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site.lower() not in _SAME_ORIGIN_FETCH:
        raise ApiError(403, f"Cross-site request refused (Sec-Fetch-Site: {fetch_site})")
    origin = request.headers.get("origin")
    if origin is None or fetch_site is not None:
        return
    host = request.headers.get("host", "")
    if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
        raise ApiError(403, f"Cross-origin request refused (Origin: {origin})")


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
