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

With ``--poll-seconds S`` it measures instead what admin_poll.py's client
costs with the default settings (readings shared): every list endpoint and
/health once a second for S seconds, and the CPU per second of polling of
the worker and of PostgreSQL. Unlike a drain-rate ratio, this does not
drown in a shared machine's noise.

    .venv/bin/python bench/admin_request_cost.py [--events 200000] [--requests 100]
    .venv/bin/python bench/admin_request_cost.py --poll-seconds 60
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

from admin_poll import ENDPOINTS, LightClient, _start_worker, free_port, publish
from common import TMP, drop_pg_db, pg_url, proc_cpu_seconds, recreate_pg_db, table, worker_env

DB = "bench_admin_cost"


def cpu_seconds(worker_pid: int, pids: list[int]) -> tuple[float, float]:
    """CPU seconds so far of the worker, and of the database backends ``pids`` together."""
    backends = sum(proc_cpu_seconds(pid) or 0.0 for pid in pids)
    return proc_cpu_seconds(worker_pid) or 0.0, backends


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
            (worker0, pg0), t0 = cpu_seconds(worker_pid, pids), time.monotonic()
            for _ in range(n):
                (await client.get(path)).raise_for_status()
            elapsed = time.monotonic() - t0
            worker1, pg1 = cpu_seconds(worker_pid, pids)
            worker, database = (worker1 - worker0) / n * 1000, (pg1 - pg0) / n * 1000
            rows.append([path, f"{worker:.2f}", f"{database:.2f}", f"{elapsed / n * 1000:.2f}"])
    return rows


async def cpu_per_second(
    client: LightClient | None, conn: asyncpg.Connection, worker_pid: int, seconds: float
) -> tuple[float, float, float]:
    """(worker, PostgreSQL, this client) CPU ms per second, with ``client`` polling (None: idle)."""
    pids = await backend_pids(conn)
    (worker0, pg0), t0 = cpu_seconds(worker_pid, pids), time.monotonic()
    client0 = time.process_time()
    while time.monotonic() - t0 < seconds:
        started = time.monotonic()
        for path in ENDPOINTS if client is not None else ():
            if (status := await client.get(path)) != 200:
                raise RuntimeError(f"{path}: HTTP {status}")
        await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - started)))
    elapsed = time.monotonic() - t0
    worker1, pg1 = cpu_seconds(worker_pid, pids)
    client = (time.process_time() - client0) / elapsed * 1000
    return (worker1 - worker0) / elapsed * 1000, (pg1 - pg0) / elapsed * 1000, client


async def poll_cost(base: str, conn: asyncpg.Connection, worker_pid: int, seconds: float) -> str:
    client = LightClient(base)
    try:
        for path in ENDPOINTS:  # warm-up: the backends the polling uses exist from here
            await client.get(path)
        idle = await cpu_per_second(None, conn, worker_pid, seconds)
        busy = await cpu_per_second(client, conn, worker_pid, seconds)
    finally:
        await client.close()
    return (
        f"one client polling {len(ENDPOINTS)} endpoints once a second, {seconds:.0f} s each "
        f"(default settings), CPU ms per second idle -> polling: worker {idle[0]:.1f} -> "
        f"{busy[0]:.1f}, PostgreSQL {idle[1]:.1f} -> {busy[1]:.1f}; the polling's share: "
        f"{(busy[0] - idle[0] + busy[1] - idle[1]) / 10:.1f} % of one core; the polling "
        f"client (admin_poll.LightClient, this process) {busy[2]:.1f} ms/s"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--poll-seconds", type=float, default=0.0)
    args = parser.parse_args()
    unshared = {
        "STATS_MAX_AGE_SECONDS": "0",
        "HANDLER_FIGURES_MAX_AGE_SECONDS": "0",
        "TABLE_HEALTH_MAX_AGE_SECONDS": "0",
    }
    await recreate_pg_db(DB)
    await publish(args.events, DB)
    port = free_port()
    env = worker_env(
        pg_url(DB),
        TMP / "admin-cost.rec",
        PORT=str(port),
        ENABLE_POLLING="false",
        LOG_LEVEL="warning",
        **({} if args.poll_seconds else unshared),
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
        if args.poll_seconds:
            print(await poll_cost(base, conn, worker.pid, args.poll_seconds))
            return
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
