#!/usr/bin/env python3
"""The ordered carrying claim's SQL, one commit's text against another's, on one database state.

A drain-rate comparison of two versions on a shared machine swings by tens
of percent between runs; the claim statement alone does not. This fills
``bench_claim_ab`` (``-n`` pending events over 1,000 aggregates, ANALYZEd),
leases the first ``--batch`` of them, and then runs each version's
``event_claim_ordered_carrying`` with those as its completions, alternating
versions, each inside a transaction rolled back, so every call sees the
same rows. It prints the median time per call (client side: the round trip,
planning and execution) and, from EXPLAIN (ANALYZE), the median planning and
execution times the server reports. Every connection plans each call anew
(plan_cache_mode=force_custom_plan), as the workers' do.

Extra versions: ``--variant NAME=FILE`` (a file holding one statement with
the head's parameters), for trying a change without committing it.

    .venv/bin/python bench/claim_sql_ab.py [--base 4be787f] [--head HEAD] [-n 30000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import drop_pg_db, pg_url, recreate_pg_db

from eventproc import NewEvent
from eventproc.store import open_store
from eventproc.store.queries import parse

DB = "bench_claim_ab"
NAME = "event_claim_ordered_carrying"
SQL_FILE = "src/eventproc/store/queries/postgresql.sql"


def sql_at(commit: str, name: str = NAME) -> str:
    source = subprocess.run(
        ["git", "show", f"{commit}:{SQL_FILE}"], check=True, capture_output=True, text=True
    ).stdout
    return parse(source)[name]


async def fill(n: int) -> None:
    await recreate_pg_db(DB)
    store = open_store(pg_url(DB))
    try:
        await store.migrate()
        aggregates = [uuid.uuid4() for _ in range(1000)]
        for start in range(0, n, 2000):
            await store.event_insert_many(
                [
                    NewEvent("b", {"i": i}, aggregate_id=aggregates[i % 1000])
                    for i in range(start, min(n, start + 2000))
                ]
            )
    finally:
        await store.close()


def arguments(batch: int, ids: list[Any], handlers: bool) -> list[Any]:
    """The carrying claim's arguments; ``handlers``: the version takes $9 (handler names)."""
    done = len(ids)
    args = ["U", 60.0, batch, max(100, batch * 5), ids, ["T"] * done, ["succeeded"] * done, "w"]
    return [*args, ["h"] * done] if handlers else args


async def measure(
    conn: asyncpg.Connection, versions: dict[str, str], batch: int, rounds: int
) -> dict[str, dict[str, list[float]]]:
    leased = await conn.fetch(sql_at("HEAD", "event_claim_ordered"), "T", 60.0, batch, 100)
    ids = sorted(row["id"] for row in leased)
    found: dict[str, dict[str, list[float]]] = {
        name: {"call": [], "plan": [], "exec": []} for name in versions
    }
    prepared = {name: await conn.prepare(sql) for name, sql in versions.items()}
    for k in range(rounds):
        names = list(versions) if k % 2 == 0 else list(versions)[::-1]
        for name in names:
            args = arguments(batch, ids, "$9" in versions[name])
            transaction = conn.transaction()
            await transaction.start()
            try:
                started = time.perf_counter()
                await prepared[name].fetch(*args)
                found[name]["call"].append(time.perf_counter() - started)
            finally:
                await transaction.rollback()
            await _explained(conn, versions[name], args, found[name])
    return found


async def _explained(
    conn: asyncpg.Connection, sql: str, args: list[Any], into: dict[str, list[float]]
) -> None:
    transaction = conn.transaction()
    await transaction.start()
    try:
        plan = json.loads(await conn.fetchval("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, *args))[0]
    finally:
        await transaction.rollback()
    into["plan"].append(plan["Planning Time"] / 1000)
    into["exec"].append(plan["Execution Time"] / 1000)


def _versions(base: str, head: str, variants: list[str]) -> dict[str, str]:
    versions = {base: sql_at(base), head: sql_at(head)}
    for item in variants:
        name, _, path = item.partition("=")
        versions[name] = Path(path).read_text().strip().rstrip(";")
    return versions


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", default="4be787f")
    parser.add_argument("--head", default="HEAD")
    parser.add_argument("-n", type=int, default=30_000)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=FILE")
    parser.add_argument(
        "--setup", metavar="FILE", help="SQL run once after filling (functions a variant calls)"
    )
    args = parser.parse_args()
    await fill(args.n)
    versions = _versions(args.base, args.head, args.variant)
    conn = await asyncpg.connect(pg_url(DB))
    try:
        if args.setup:
            await conn.execute(Path(args.setup).read_text())  # noqa: ASYNC240 (once, before timing)
        await conn.execute("ANALYZE")
        await conn.execute("SET plan_cache_mode = force_custom_plan")
        found = await measure(conn, versions, args.batch, args.rounds)
    finally:
        await conn.close()
        await drop_pg_db(DB)
    base = statistics.median(found[args.base]["call"]) * 1000
    print(f"{args.n:,} events over 1,000 aggregates, {args.batch} completions per call")
    for name, times in found.items():
        call, plan, run = (statistics.median(times[k]) * 1000 for k in ("call", "plan", "exec"))
        print(
            f"{name:>12}: {call:.3f} ms per call ({call / base * 100:.1f} % of {args.base}); "
            f"server: planning {plan:.3f} ms, execution {run:.3f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
