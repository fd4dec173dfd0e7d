#!/usr/bin/env python3
"""Plans and server-side times of the hot-path statements on a deep backlog.

Takes the claim and write-back named queries (store/queries/*.sql) with
the arguments the store builds for them and runs them on a database holding ``-n`` pending
events (over ``--aggregates`` aggregates), ``--in-flight`` of them already
leased by another worker (as during a drain with CONCURRENCY=50), and the
oldest ``--processed`` fraction already processed by plain UPDATEs without a
VACUUM since (as in the middle of a drain: dead entries stay in the partial
indexes until autovacuum runs). PostgreSQL plans without statistics unless
``--analyze`` or ``--vacuum`` is given, as the workers of a drain do on a
server with autovacuum off:

- PostgreSQL: ``EXPLAIN (ANALYZE, BUFFERS)`` inside a rolled-back transaction;
- SQLite: ``EXPLAIN QUERY PLAN`` plus the statement's time (rolled back).

Nothing here is timed end to end; it shows what the database does per claim
and per completion batch. Internal API use (``eventproc.store.args``) is
deliberate: this is a diagnostic for the store's developers.

Usage (from the repository root):
    .venv/bin/python bench/explain.py
    .venv/bin/python bench/explain.py --backends sqlite -n 50000
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
import uuid
from typing import Any

from common import Backend, log

Rendered = tuple[str, Any]  # SQL and its arguments, in the positions both backends share


def statements(kind: str, leases: list[Any], batch: int) -> dict[str, Rendered]:
    """The hot-path named queries with the arguments the store builds for them."""
    from eventproc.store import args, queries
    from eventproc.store.protocol import ClaimPolicy, WriteBack

    backend: queries.Backend = "postgresql" if kind == "pg" else "sqlite"
    named = queries.load(backend)
    done = [WriteBack.succeeded(lease) for lease in leases]
    out: dict[str, Rendered] = {}
    for ordered in (False, True):
        policy = ClaimPolicy(30.0, ordered=ordered, limit=batch, block_on_dead_letters=False)
        name = queries.claim_query(ordered=ordered, block_on_dead_letters=False, carrying=False)
        out[f"claim, ordered={ordered}"] = (named[name], args.claim("bench", policy, "bench"))
        if kind == "pg":  # SQLite's carrying claim is the write-back, then the claim
            carrying = queries.claim_query(
                ordered=ordered, block_on_dead_letters=False, carrying=True
            )
            out[f"claim carrying {len(leases)} completions, ordered={ordered}"] = (
                named[carrying],
                args.claim("bench", policy, "bench", done),
            )
    write_back = named["event_write_back"]
    if kind != "pg":  # the successes' statement: the first of the write-back
        write_back = queries.sqlite_statements(write_back)[0]
    out[f"write-back of {len(leases)} successes"] = (
        write_back,
        args.write_back(done, "bench", in_order=False),
    )
    return out


async def prepare(
    backend: Backend, n: int, aggregates: int, in_flight: int, processed: float
) -> Any:
    from eventproc import NewEvent
    from eventproc.store.protocol import ClaimPolicy, Lease

    store = await backend.open_store()
    aggs = [uuid.uuid4() for _ in range(aggregates)]
    for start in range(0, n, 1000):
        await store.event_insert_many(
            [
                NewEvent("bench.noop", {"i": i}, aggregate_id=aggs[i % aggregates])
                for i in range(start, min(n, start + 1000))
            ]
        )
    done = int(n * processed)
    if done:
        # The first `done` events in claim order, completed as a drain would.
        sql = (
            "UPDATE events SET processed = {true}, outcome = 'succeeded' WHERE id IN "
            "(SELECT id FROM events ORDER BY priority DESC, created_at, id LIMIT {done})"
        )
        probe = await backend.connect()
        try:
            await probe.execute(sql.format(true="true" if backend.kind == "pg" else 1, done=done))
        finally:
            await probe.close()
    # Another worker holds `in_flight` leases (as a running drain would).
    claimed = await store.event_claim_many("other", ClaimPolicy(30, False, in_flight))
    return store, [Lease.of(e) for e in claimed[:20]]


async def explain_pg(
    backend: Backend, sqls: dict[str, Rendered], vacuum: bool, analyze: bool
) -> None:
    import asyncpg

    conn = await asyncpg.connect(backend.url)
    try:
        if vacuum or analyze:
            await conn.execute("VACUUM ANALYZE events" if vacuum else "ANALYZE events")
        for name, (sql, params) in sqls.items():
            tr = conn.transaction()
            await tr.start()
            try:
                rows = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, *params)
            finally:
                await tr.rollback()
            print(f"\n### PostgreSQL: {name}\n")
            print("\n".join("    " + r[0] for r in rows))
    finally:
        await conn.close()


def explain_sqlite(backend: Backend, sqls: dict[str, Rendered]) -> None:
    from eventproc.store.sqlite.driver import _encoded

    conn = sqlite3.connect(str(backend.path), isolation_level=None)
    try:
        for name, (sql, arguments) in sqls.items():
            params = _encoded(arguments)[: max(_positions(sql), default=0)]
            plan = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            conn.execute("BEGIN")
            t0 = time.perf_counter()
            conn.execute(sql, params).fetchall()
            ms = (time.perf_counter() - t0) * 1000
            conn.execute("ROLLBACK")
            print(f"\n### SQLite: {name} ({ms:.2f} ms)\n")
            print("\n".join(f"    {r[3]}" for r in plan))
    finally:
        conn.close()


def _positions(sql: str) -> list[int]:
    import re

    return [int(n) for n in re.findall(r"\?(\d+)", sql)]


async def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backends", default="pg,sqlite")
    ap.add_argument("-n", type=int, default=50_000)
    ap.add_argument("--aggregates", type=int, default=1000)
    ap.add_argument("--in-flight", type=int, default=50)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--processed", type=float, default=0.5, help="fraction already processed")
    ap.add_argument("--vacuum", action="store_true", help="PG: VACUUM ANALYZE before")
    ap.add_argument(
        "--analyze",
        action="store_true",
        help="PG: ANALYZE before (default: no statistics, as in a drain with autovacuum off)",
    )
    args = ap.parse_args(argv)
    for kind in args.backends.split(","):
        backend = Backend(kind, "bench_eventproc_explain")
        await backend.create()
        try:
            log(
                f"{kind}: {args.n} events over {args.aggregates} aggregates, "
                f"{args.processed:.0%} processed, {args.in_flight} leased"
            )
            store, leases = await prepare(
                backend, args.n, args.aggregates, args.in_flight, args.processed
            )
            sqls = statements(kind, leases, args.batch)
            await store.close()
            if kind == "pg":
                await explain_pg(backend, sqls, args.vacuum, args.analyze)
            else:
                explain_sqlite(backend, sqls)
        finally:
            await backend.drop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
