"""Keyset pages: an opaque cursor, a bounded limit, and unknown query parameters refused.

A cursor is the last item's sort key, base64url of a JSON array: the next
page starts strictly after it, so rows inserted meanwhile never shift a page.
"""

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from fastapi import Query, Request

from eventproc.http.errors import ApiError
from eventproc.http.schemas import OpenModel

MAX_LIMIT = 500
DEFAULT_LIMIT = 50

Time = Query(
    json_schema_extra={"format": "date-time"},
    max_length=40,
    description="ISO 8601 with a timezone (2026-12-01T10:00:00Z)",
)
Limit = Query(ge=1, le=MAX_LIMIT, description=f"Items per page (1-{MAX_LIMIT})")
Cursor = Query(max_length=400, description="next_cursor of the previous page")


def encode(*key: Any) -> str:
    text = json.dumps([_plain(part) for part in key], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(cursor: str | None, *kinds: Callable[[Any], Any]) -> tuple[Any, ...] | None:
    """The key a cursor holds, each part read by its kind; 422 for anything else."""
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        parts = json.loads(raw)
        if not isinstance(parts, list) or len(parts) != len(kinds):
            raise ValueError("wrong shape")
        return tuple(kind(part) for kind, part in zip(kinds, parts, strict=True))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise ApiError(422, "Invalid cursor: pass next_cursor from a previous page") from None


def moment(value: str | None, name: str) -> datetime | None:
    """A time parameter, strictly ISO 8601 with its zone (no Unix numbers): 422 otherwise."""
    if value is None:
        return None
    try:
        return time_of(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ApiError(422, f"{name} is not an ISO 8601 time with a timezone") from None


def time_of(value: Any) -> datetime:
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        raise ValueError("naive time")
    return moment


def uuid_of(value: Any) -> uuid.UUID:
    return uuid.UUID(str(value))


def int_of(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("not an integer")
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def only(*names: str) -> Callable[[Request], None]:
    """A check refusing (422) query parameters a route does not take: a typo is not ignored.

    Also any value with a NUL character, which PostgreSQL text cannot hold.
    Run by the route's guard before the token's check (common.viewer).
    """
    allowed = frozenset(names)

    def check(request: Request) -> None:
        if any("\x00" in value for value in request.query_params.values()):
            raise ApiError(422, "Query parameters cannot hold a NUL character")
        unknown = sorted(set(request.query_params) - allowed)
        if unknown:
            raise ApiError(
                422,
                f"Unknown query parameter{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}",
                allowed=sorted(allowed),
            )

    return check


class Page(OpenModel):
    next_cursor: str | None = None


def next_cursor(
    items: Iterable[Any], limit: int, key: Callable[[Any], tuple[Any, ...]]
) -> str | None:
    listed = list(items)
    if len(listed) < limit or not listed:
        return None
    return encode(*key(listed[-1]))
