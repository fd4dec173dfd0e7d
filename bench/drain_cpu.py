#!/usr/bin/env python3
"""CPU per event of one drain, version against version: a figure the machine's jitter barely moves.

On this project's shared 2-core machines a drain's rate swings 2x between
consecutive runs of the same code (16 alternating pairs of peers_bench's
aggregate variant: 6,784 to 16,392 events/s), so a 10 % budget on the rate
cannot be judged there. The CPU a drain spends per event moves much less
with the neighbours: a stolen core stops the clock, not the work. Each
round drains ``-n`` events with one worker per source tree (``--tree
NAME=DIR``, a snapshot of ``src/``, alternating order per round) and
reports, per 1,000 events, the worker process's CPU and the whole
machine's busy CPU (user, system, interrupts: PostgreSQL, the worker and
this script's light polling; steal and idle excluded), with the wall-clock
rate beside it.

    .venv/bin/python bench/drain_cpu.py --tree rel=/tmp/pb/rel/src --tree head=src \\
        [--settings agg] [-n 60000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TMP, VENV_BIN, drop_pg_db, pg_url, proc_cpu_seconds, recreate_pg_db, worker_env

DB = "bench_drain_cpu"
SETTINGS = {
    "none": {"ORDERING": "none"},
    "sync": {"ORDERING": "none", "ASYNC_COMMIT": "false"},
    "agg": {"ORDERING": "aggregate"},
}
_CLK_TCK = os.sysconf("SC_CLK_TCK")
BENCH = Path(__file__).resolve().parent

_PUBLISH = """
import asyncio, sys, uuid
from eventproc import NewEvent
from eventproc.store import open_store
async def main(url, n, aggregates):
    keys = [uuid.uuid4() for _ in range(aggregates)] if aggregates else [None]
    store = open_store(url)
    try:
        await store.migrate()
        for start in range(0, n, 2000):
            await store.event_insert_many([
                NewEvent("bench.noop", {"i": i}, aggregate_id=keys[i % len(keys)])
                for i in range(start, min(n, start + 2000))])
    finally:
        await store.close()
asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def machine_busy_seconds() -> float:
    """user + nice + system + irq + softirq over all CPUs (no idle, iowait or steal)."""
    with open("/proc/stat") as fh:
        vals = [int(x) for x in fh.readline().split()[1:]]
    return (vals[0] + vals[1] + vals[2] + vals[5] + vals[6]) / _CLK_TCK


async def one_drain(tree: str, n: int, settings: str) -> dict[str, float]:
    """Publish with the tree's own code (its own schema), then drain with its worker."""
    await recreate_pg_db(DB)
    url = pg_url(DB)
    aggregates = 1000 if settings == "agg" else 0
    env = worker_env(url, TMP / "drain-cpu.rec", LOG_LEVEL="warning", **SETTINGS[settings])
    env["PYTHONPATH"] = os.pathsep.join((str(BENCH), tree))
    subprocess.run(  # noqa: ASYNC221 (before the clock starts)
        [sys.executable, "-c", _PUBLISH, url, str(n), str(aggregates)], env=env, check=True
    )
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("ANALYZE")
        return await _timed(conn, env, n)
    finally:
        await conn.close()
        await drop_pg_db(DB)


async def _timed(conn: asyncpg.Connection, env: dict[str, str], n: int) -> dict[str, float]:
    TMP.mkdir(parents=True, exist_ok=True)
    with open(TMP / "drain-cpu-worker.log", "wb") as log:  # noqa: ASYNC230
        worker = subprocess.Popen(  # noqa: ASYNC220 (before the clock starts)
            [str(VENV_BIN / "eventproc"), "run"], env=env, stdout=log, stderr=log
        )
    try:
        pending = "SELECT count(*) FROM events WHERE NOT processed"
        deadline = time.monotonic() + 600
        while await conn.fetchval(pending) == n:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the worker did not start; see drain-cpu-worker.log")
            await asyncio.sleep(0.02)
        started, busy, own = time.monotonic(), machine_busy_seconds(), proc_cpu_seconds(worker.pid)
        while await conn.fetchval(pending) > 0:
            if time.monotonic() > deadline:
                raise RuntimeError("the drain did not end within 600 s")
            await asyncio.sleep(0.1)
        wall = time.monotonic() - started
        used, own_end = machine_busy_seconds() - busy, proc_cpu_seconds(worker.pid)
    finally:
        worker.terminate()
        worker.wait(30)
    return {
        "events_per_s": n / wall,
        "machine_ms": used * 1e6 / n,  # per 1,000 events
        "worker_ms": ((own_end or 0.0) - (own or 0.0)) * 1e6 / n,
    }


def _report(found: dict[str, list[dict[str, float]]], base: str) -> None:
    print("| tree | machine CPU ms / 1,000 events | worker CPU ms / 1,000 | events/s | vs " + base)
    print("|---|---|---|---|---|")
    for name, runs in found.items():
        figures = []
        for key in ("machine_ms", "worker_ms", "events_per_s"):
            values = [r[key] for r in runs]
            figures.append(
                f"{statistics.median(values):,.1f} [{min(values):,.1f}-{max(values):,.1f}]"
            )
        ratios = [
            b["machine_ms"] / r["machine_ms"] * 100 for b, r in zip(found[base], runs, strict=True)
        ]
        per_round = ", ".join(f"{x:.1f}" for x in ratios)
        print(
            f"| {name} | {' | '.join(figures)} | {statistics.median(ratios):.1f} % ({per_round}) |"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", action="append", required=True, metavar="NAME=DIR")
    parser.add_argument("--settings", choices=sorted(SETTINGS), default="agg")
    parser.add_argument("-n", type=int, default=60_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    trees = {k: os.path.abspath(v) for k, v in (i.split("=", 1) for i in args.tree)}  # noqa: ASYNC240
    found: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for k in range(args.rounds):
        for name in list(trees) if k % 2 == 0 else list(trees)[::-1]:
            result = await one_drain(trees[name], args.n, args.settings)
            found[name].append(result)
            print(f"round {k + 1} {name}: {result}", flush=True)
    print(f"\n{args.settings}: {SETTINGS[args.settings]}, {args.n:,} events per drain")
    print("(the last column: the first tree's machine CPU per event over this one's, per round)")
    _report(found, next(iter(trees)))


if __name__ == "__main__":
    asyncio.run(main())
