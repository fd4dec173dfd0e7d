#!/usr/bin/env python3
"""A soak run: a steady publisher against one worker with the pruner on, for half an hour.

One ``eventproc worker`` (PRUNE=on, RETAIN_SUCCEEDED_DAYS short enough that
pruning runs all along, PRUNE_ARCHIVE=table so that what was pruned can be
checked) on a fresh PostgreSQL database; this script publishes RATE events/s
in batches of a tenth of a second and, every SAMPLE seconds, reads the events
table's size (with indexes), its dead tuples, the worker's RSS, and the
pickup p99 of the window (processed_at - created_at of the events finished
in it). At the end: nothing lost (published = on the table + archived),
nothing pruned that was still needed (every archived event processed, and
older than its retention when it went), and the trends (first third against
last third of the samples).

    .venv/bin/python bench/soak.py [--minutes 30] [--rate 500] [--sample 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import asyncpg
from common import TMP, VENV_BIN, drop_pg_db, pg_url, proc_status, recreate_pg_db, worker_env

from eventproc import NewEvent
from eventproc.store import open_store

DB = "bench_soak"
RETAIN_DAYS = 120 / 86_400  # two minutes: a pass every 30 s finds rows due all along


async def publish(rate: int, stop: asyncio.Event, published: list[int]) -> None:
    store = open_store(pg_url(DB))
    per_tick, started = max(rate // 10, 1), time.monotonic()
    try:
        while not stop.is_set():
            await store.event_insert_many(
                [NewEvent("bench.noop", {"i": i}) for i in range(per_tick)]
            )
            published[0] += per_tick
            behind = started + published[0] / rate - time.monotonic()
            if behind > 0:
                await asyncio.sleep(behind)
    finally:
        await store.close()


async def sample(conn: asyncpg.Connection, pid: int, window: float) -> dict[str, Any]:
    size = await conn.fetchval("SELECT pg_total_relation_size('events')")
    dead = await conn.fetchval(
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'events'"
    )
    p99 = await conn.fetchval(
        "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY processed_at - created_at) "
        "FROM events WHERE processed AND processed_at > now() - make_interval(secs => $1)",
        window,
    )
    pending = await conn.fetchval("SELECT count(*) FROM events WHERE NOT processed")
    archived = await conn.fetchval("SELECT count(*) FROM events_archive")
    return {
        "events_bytes": size,
        "dead_tuples": dead,
        "rss_kib": proc_status(pid).get("VmRSS"),
        "pickup_p99_ms": p99.total_seconds() * 1000 if p99 is not None else None,
        "pending": pending,
        "archived": archived,
    }


async def final_checks(conn: asyncpg.Connection, published: int) -> list[str]:
    failures = []
    present = await conn.fetchval("SELECT count(*) FROM events")
    archived = await conn.fetchval("SELECT count(*) FROM events_archive")
    if present + archived != published:
        failures.append(f"lost: published {published}, on the table {present}, archived {archived}")
    early = await conn.fetchval(
        "SELECT count(*) FROM events_archive WHERE NOT processed OR processed_at IS NULL "
        "OR archived_at - processed_at < make_interval(secs => $1)",
        RETAIN_DAYS * 86_400,
    )
    if early:
        failures.append(f"{early} archived events were unfinished or younger than their retention")
    return failures


def trend(samples: list[dict[str, Any]], key: str) -> str:
    values = [s[key] for s in samples if s[key] is not None]
    if len(values) < 6:
        return "too few samples"
    third = len(values) // 3
    first, last = statistics.median(values[:third]), statistics.median(values[-third:])
    ratio = last / first if first else float("inf")
    return f"first third {first:,.0f}, last third {last:,.0f} (x{ratio:.2f})"


def _start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    TMP.mkdir(parents=True, exist_ok=True)
    with open(TMP / "soak-worker.log", "wb") as log:
        return subprocess.Popen(
            [str(VENV_BIN / "eventproc"), "worker"], env=env, stdout=log, stderr=log
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--sample", type=float, default=30)
    args = parser.parse_args()
    await recreate_pg_db(DB)
    store = open_store(pg_url(DB))
    await store.migrate()
    await store.close()
    env = worker_env(
        pg_url(DB),
        TMP / "soak.rec",
        PRUNE="on",
        PRUNE_INTERVAL_SECONDS="30",
        RETAIN_SUCCEEDED_DAYS=str(RETAIN_DAYS),
        PRUNE_ARCHIVE="table",
        LOG_LEVEL="warning",
    )
    env.pop("BENCH_RECORD_FILE")
    worker = _start_worker(env)
    conn = await asyncpg.connect(pg_url(DB))
    stop, published, samples = asyncio.Event(), [0], []
    publisher = asyncio.create_task(publish(args.rate, stop, published))
    try:
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            await asyncio.sleep(args.sample)
            found = await sample(conn, worker.pid, args.sample)
            samples.append(found)
            print(
                f"{len(samples) * args.sample:6.0f} s published={published[0]:,} {found}",
                flush=True,
            )
        stop.set()
        await publisher
        while await conn.fetchval("SELECT count(*) FROM events WHERE NOT processed"):  # noqa: ASYNC110
            await asyncio.sleep(1)
        failures = await final_checks(conn, published[0])
    finally:
        stop.set()
        worker.terminate()
        worker.wait(60)
        await conn.close()
        await drop_pg_db(DB)
    print()
    for key in ("events_bytes", "dead_tuples", "rss_kib", "pickup_p99_ms"):
        print(f"{key}: {trend(samples, key)}")
    print(f"published {published[0]:,} in {args.minutes:g} min at {args.rate}/s")
    print(
        "FAIL: " + "; ".join(failures) if failures else "PASS: nothing lost, nothing pruned early"
    )
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    asyncio.run(main())
