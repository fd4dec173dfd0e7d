#!/usr/bin/env python3
"""Plans and server-side times of the hot-path statements on a deep backlog.

Takes the claim and completion statement texts the stores send
(``postgres._CLAIM_SQL`` / ``_COMPLETE_SQL``, ``sqlite_hot._CLAIM_SQL`` /
``_COMPLETE_SQL``) and runs them on a database holding ``-n`` pending
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
and per completion batch. Internal API use (the ``_CLAIM_SQL`` texts) is
deliberate: this is a diagnostic for the store's developers.

Usage (from the repository root):
    .venv/bin/python bench/explain.py
    .venv/bin/python bench/explain.py --backends sqlite -n 50000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import time
import uuid
from typing import Any

from common import Backend, log

Rendered = tuple[str, Any]  # SQL and its parameters: a list (PG, $n) or a dict (SQLite, :name)


def statements(kind: str, leases: list[Any], batch: int) -> dict[str, Rendered]:
    """The hot-path statement texts exactly as the stores send them."""
    from eventproc.store.sqlstore import claim_window

    window = claim_window(batch)
    out: dict[str, Rendered] = {}
    if kind == "pg":
        from eventproc.store import postgres

        ids = [lease.event_id for lease in leases]
        tokens = [lease.token for lease in leases]
        outcomes = ["succeeded"] * len(leases)
        for ordered in (False, True):
            out[f"claim, ordered={ordered}"] = (
                postgres._CLAIM_SQL[(ordered, True, False)],
                ["bench", 30.0, batch, window],
            )
            out[f"claim carrying {len(leases)} completions, ordered={ordered}"] = (
                postgres._CLAIM_SQL[(ordered, True, True)],
                ["bench", 30.0, batch, window, ids, tokens, outcomes, "bench"],
            )
        out[f"completion of {len(leases)} events"] = (
            postgres._COMPLETE_SQL,
            [ids, tokens, outcomes, "bench", False],
        )
        return out
    from eventproc.store import sqlite_hot

    for ordered in (False, True):
        out[f"claim, ordered={ordered}"] = (
            sqlite_hot._CLAIM_SQL[(ordered, True)],
            {"token": "bench", "lease": "+30.000 seconds", "limit": batch, "window": window},
        )
    ids = json.dumps([str(lease.event_id) for lease in leases])
    token = leases[0].token if leases else "none"
    out[f"completion of {len(leases)} events"] = (
        sqlite_hot._COMPLETE_SQL,
        {"outcome": "succeeded", "worker": "bench", "token": token, "ids": ids,
         "in_order": False, "flushed": "[]"},
    )  # fmt: skip
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
    conn = sqlite3.connect(str(backend.path), isolation_level=None)
    try:
        for name, (sql, params) in sqls.items():
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
