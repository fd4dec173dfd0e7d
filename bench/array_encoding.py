#!/usr/bin/env python3
"""What asyncpg costs the client per array element a named query sends.

Times ``SELECT cardinality($1::T[])`` with a 300-element list, against the
same values sent as one text literal cast in SQL (``$1::text::T[]``), on
one connection to 127.0.0.1:5432, by this process's CPU time (the server's
is not counted). An empty statement gives the per-call floor to take off.

    .venv/bin/python bench/array_encoding.py
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
ELEMENTS = 300
CALLS = 300


def _literal(items: list[str]) -> str:
    return "{" + ",".join(items) + "}"


async def main() -> None:
    conn = await asyncpg.connect(SERVER)
    ids = [
        row[0]
        for row in await conn.fetch(
            "SELECT gen_random_uuid() FROM generate_series(1, $1)", ELEMENTS
        )
    ]
    flags, numbers = [True] * ELEMENTS, list(range(ELEMENTS))
    tokens = [uuid.uuid4().hex for _ in range(ELEMENTS)]
    cases: dict[str, tuple[str, Callable[[], Any]]] = {
        "empty": ("SELECT 1", lambda: None),
        "uuid list": ("SELECT cardinality($1::uuid[])", lambda: ids),
        "uuid text": (
            "SELECT cardinality($1::text::uuid[])",
            lambda: _literal([str(i) for i in ids]),
        ),
        "bool list": ("SELECT cardinality($1::bool[])", lambda: flags),
        "bool text": (
            "SELECT cardinality($1::text::bool[])",
            lambda: _literal(["t" if f else "f" for f in flags]),
        ),
        "int list": ("SELECT cardinality($1::int[])", lambda: numbers),
        "int text": (
            "SELECT cardinality($1::text::int[])",
            lambda: _literal([str(n) for n in numbers]),
        ),
        "token list": ("SELECT cardinality($1::text[])", lambda: tokens),
        "token text": ("SELECT cardinality($1::text::text[])", lambda: _literal(tokens)),
    }
    floor = 0.0
    for name, (sql, make) in cases.items():
        statement = await conn.prepare(sql)
        for _ in range(2):  # the first pass warms up
            started = time.process_time()
            for _ in range(CALLS):
                value = make()
                await (statement.fetchval() if value is None else statement.fetchval(value))
            per_call = (time.process_time() - started) / CALLS
        if name == "empty":
            floor = per_call
            print(f"{name:11s} {per_call * 1e6:7.1f} us/call (the floor)")
            continue
        per_element = (per_call - floor) / ELEMENTS
        print(f"{name:11s} {per_call * 1e6:7.1f} us/call {per_element * 1e9:6.0f} ns/element")
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
