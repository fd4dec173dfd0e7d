"""Reading a JSON request body without trusting its size or its nesting.

The size is capped while the body arrives (:class:`eventproc.http.middleware.BodyLimit`);
the nesting is checked here before ``json.loads`` recurses into it, so a
body of 2,000 nested arrays is a 400, not a ``RecursionError``.
"""

import json
import re
from typing import Any

from fastapi import Request

from eventproc.http.errors import ApiError

# Far beyond any body the API takes, far below Python's recursion limit.
MAX_JSON_DEPTH = 64

# A JSON string (so that brackets inside strings are not counted) or one bracket.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def nesting_exceeds(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than ``limit`` (outside strings)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth = 0
    for match in _TOKENS.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif token in (b"]", b"}"):
            depth -= 1
    return False


def parse_json(body: bytes, *, empty: Any = None) -> Any:
    """The parsed body, ``empty`` for no body; :class:`ApiError` 400 for anything unparseable."""
    if not body.strip():
        return empty
    if nesting_exceeds(body):
        raise ApiError(400, f"Malformed JSON body: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ApiError(400, "Malformed JSON body") from None


async def read_json(request: Request, *, empty: Any = None) -> Any:
    """Read (within MAX_BODY_BYTES) and parse the request's JSON body."""
    return parse_json(await request.body(), empty=empty)
