#!/usr/bin/env python3
"""What one admin API request costs: the worker's CPU and PostgreSQL's, per endpoint.

One ``eventproc run`` process (ENABLE_POLLING=false: it serves and never
drains, so its CPU is the requests') over a database of N pending events;
each endpoint is warmed up, then asked ``--requests`` times in a row, and
the CPU time of the worker process and of every PostgreSQL backend of the
database (``/proc``, this machine's server) is divided by the requests.
Shared readings are disabled (STATS_MAX_AGE_SECONDS=0,
HANDLER_FIGURES_MAX_AGE_SECONDS=0, TABLE_HEALTH_MAX_AGE_SECONDS=0) so every
request reads the database: the worst case of many dashboards.

    .venv/bin/python bench/admin_request_cost.py [--events 200000] [--requests 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import admin_poll
from admin_poll import ENDPOINTS, _start_worker, free_port, publish
from common import TMP, drop_pg_db, pg_url, proc_cpu_seconds, recreate_pg_db, table, worker_env

DB = admin_poll.DB = "bench_admin_cost"  # publish() writes to admin_poll.DB


def backends_cpu(pids: list[int]) -> float:
    return sum(proc_cpu_seconds(pid) or 0.0 for pid in pids)


async def backend_pids(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid()"
    )
    return [row["pid"] for row in rows]


async def measure(base: str, conn: asyncpg.Connection, worker_pid: int, n: int) -> list[list[str]]:
    rows: list[list[str]] = []
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        for path in ENDPOINTS:
            for _ in range(5):  # warm-up: routes, statement caches, connections
                (await client.get(path)).raise_for_status()
            pids = await backend_pids(conn)
            worker0, pg0, t0 = (
                proc_cpu_seconds(worker_pid) or 0.0,
                backends_cpu(pids),
                time.monotonic(),
            )
            for _ in range(n):
                (await client.get(path)).raise_for_status()
            elapsed = time.monotonic() - t0
            worker = ((proc_cpu_seconds(worker_pid) or 0.0) - worker0) / n * 1000
            database = (backends_cpu(pids) - pg0) / n * 1000
            rows.append([path, f"{worker:.2f}", f"{database:.2f}", f"{elapsed / n * 1000:.2f}"])
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    await recreate_pg_db(DB)
    await publish(args.events)
    port = free_port()
    env = worker_env(
        pg_url(DB),
        TMP / "admin-cost.rec",
        PORT=str(port),
        ENABLE_POLLING="false",
        LOG_LEVEL="warning",
        STATS_MAX_AGE_SECONDS="0",
        HANDLER_FIGURES_MAX_AGE_SECONDS="0",
        TABLE_HEALTH_MAX_AGE_SECONDS="0",
    )
    env.pop("BENCH_RECORD_FILE")
    worker = _start_worker(env)
    conn = await asyncpg.connect(pg_url(DB))
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            for _ in range(300):
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        rows = await measure(base, conn, worker.pid, args.requests)
    finally:
        worker.terminate()
        worker.wait(30)
        await conn.close()
        await drop_pg_db(DB)
    print(
        f"{args.events:,} pending events, {args.requests} requests per endpoint,"
        " shared readings off"
    )
    print(
        table(["endpoint", "worker CPU ms/request", "PostgreSQL CPU ms/request", "wall ms"], rows)
    )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
