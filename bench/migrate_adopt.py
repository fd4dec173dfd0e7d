"""Adopting a 1,000,000-row seed table: do publishers wait while `eventproc migrate` runs?

Per run: a fresh database ``bench_eventproc_migrate`` with the replaced
service's two tables exactly as its README creates them (seed columns only)
and ``--rows`` events (nine in ten processed, 1,000 dead letters), then
VACUUM ANALYZE and CHECKPOINT (a live seed table has been vacuumed, and a
checkpoint of the load itself would land in the middle of the measurement).
A publisher then INSERTs one seed-style row every ``--interval-ms`` with
plain SQL, as the replaced service's publishers do, each INSERT on its own
pooled connection and started on schedule whether or not earlier ones have
finished (a blocked publisher does not hide the INSERTs that would have
queued behind it). ``eventproc migrate`` runs as a subprocess meanwhile.

Latency is counted from an INSERT's scheduled start to its completion. The
figures cover the INSERTs scheduled while the migrate process was alive.

``--src /tmp/before/src`` runs the migration from another checkout (the
code before the change; see bench/README.md), with this venv's packages.

    .venv/bin/python bench/migrate_adopt.py --runs 3
    .venv/bin/python bench/migrate_adopt.py --runs 1 --src /tmp/before/src --label before
    .venv/bin/python bench/migrate_adopt.py --runs 3 --control --label control
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

import asyncpg
from common import (
    ROOT,
    TMP,
    Results,
    drop_pg_db,
    fmt_med,
    log,
    pct,
    pg_url,
    recreate_pg_db,
    rnd,
    table,
)

DB = "bench_eventproc_migrate"
SEED_SCHEMA = """
CREATE TABLE events (
  id UUID PRIMARY KEY,
  event_type VARCHAR(100) NOT NULL,
  aggregate_id UUID,
  aggregate_type VARCHAR(50),
  payload JSONB NOT NULL,
  metadata JSONB,
  processed BOOLEAN DEFAULT FALSE,
  version INTEGER DEFAULT 1,
  created_at TIMESTAMPTZ DEFAULT now(),
  created_by VARCHAR(100)
);
CREATE TABLE event_dead_letters (
  id UUID PRIMARY KEY,
  event_id UUID NOT NULL,
  event_type VARCHAR(100) NOT NULL,
  payload JSONB NOT NULL,
  error_message TEXT NOT NULL,
  retry_count INTEGER NOT NULL,
  original_created_at TIMESTAMPTZ NOT NULL,
  created_at TIMESTAMPTZ DEFAULT now()
);
"""
LOAD_EVENTS = """
INSERT INTO events (id, event_type, aggregate_id, aggregate_type, payload, metadata,
                    processed, created_at, created_by)
SELECT gen_random_uuid(), 'user.type' || (n % 11), gen_random_uuid(), 'user',
       jsonb_build_object('userId', gen_random_uuid(), 'n', n, 'note', 'seed row ' || n),
       jsonb_build_object('retry_count', n % 3), n % 10 <> 0,
       now() - make_interval(secs => $1 - n), 'agent-' || (n % 7)
FROM generate_series(1, $1) AS n
"""
LOAD_DEAD_LETTERS = """
INSERT INTO event_dead_letters (id, event_id, event_type, payload, error_message,
                                retry_count, original_created_at)
SELECT gen_random_uuid(), gen_random_uuid(), 'user.type1', '{}', 'failure ' || n, 5, now()
FROM generate_series(1, 1000) AS n
"""
PUBLISH = (
    "INSERT INTO events (id, event_type, aggregate_id, payload, created_by) "
    "VALUES ($1, 'user.message.received', $2, $3::jsonb, 'publisher')"
)


async def load_seed(url: str, rows: int, copy: bool = False) -> float:
    started = time.monotonic()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(SEED_SCHEMA)
        await conn.execute(LOAD_EVENTS, rows)
        await conn.execute(LOAD_DEAD_LETTERS)
        if copy:
            await conn.execute("CREATE TABLE bench_copy AS SELECT * FROM events")
            await conn.execute("VACUUM ANALYZE bench_copy")
        await conn.execute("VACUUM ANALYZE events")
        await conn.execute("VACUUM ANALYZE event_dead_letters")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return time.monotonic() - started


class Publisher:
    """One INSERT every ``interval`` seconds, each started on schedule."""

    def __init__(self, pool: asyncpg.Pool, interval: float) -> None:
        self.pool = pool
        self.interval = interval
        self.samples: list[tuple[float, float]] = []  # (scheduled, latency), monotonic s
        self.errors: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()

    async def _one(self, scheduled: float) -> None:
        import uuid

        try:
            async with self.pool.acquire() as conn:
                await conn.execute(PUBLISH, uuid.uuid4(), uuid.uuid4(), '{"text": "hi"}')
        except Exception as exc:  # recorded, never fatal: the run reports them
            self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        self.samples.append((scheduled, time.monotonic() - scheduled))

    async def run(self) -> None:
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            scheduled = start + n * self.interval
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._one(scheduled))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            n += 1
        await asyncio.gather(*self._tasks)

    def stop(self) -> None:
        self._stop.set()


async def imported_from(src: Path) -> str:
    """Where a process started like the migrate one imports eventproc from (a check)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "import eventproc; print(eventproc.__file__)",
        env={**os.environ, "PYTHONPATH": str(src)},
        cwd=str(TMP),
        stdout=subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    return out.decode().strip()


def _src_hash(src: Path) -> str:
    digest = hashlib.sha256()
    pkg = src / "eventproc"
    for f in sorted(pkg.rglob("*.py")):
        digest.update(str(f.relative_to(pkg)).encode())
        digest.update(f.read_bytes())
    return digest.hexdigest()[:12]


def _log_file(path: Path) -> BinaryIO:
    return path.open("wb")


async def run_migrate(
    url: str, src: Path, log_path: Path, log_level: str
) -> tuple[int, float, float]:
    """``python -m eventproc migrate``; (exit code, start, end) in monotonic seconds."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HANDLERS")}
    env.update(DATABASE_URL=url, PYTHONPATH=str(src), LOG_FORMAT="json", LOG_LEVEL=log_level)
    started = time.monotonic()
    global MIGRATE_WALL_START
    MIGRATE_WALL_START = time.time()
    with _log_file(log_path) as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eventproc",
            "migrate",
            env=env,
            cwd=str(TMP),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
        code = await proc.wait()
    return code, started, time.monotonic()


MIGRATE_WALL_START = 0.0


def timeline(log_path: Path, wall_start: float) -> list[tuple[float, str]]:
    """(seconds after the migrate process started, message) of its eventproc log lines."""
    import datetime as dt
    import json

    events = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not str(record.get("logger", "")).startswith("eventproc"):
            continue
        at = dt.datetime.fromisoformat(record["time"]).timestamp() - wall_start
        events.append((rnd(at, 3), str(record["message"])[:120]))
    return events


async def run_control(url: str, log_path: Path) -> tuple[int, float, float]:
    """No eventproc: the largest index eventproc builds (events_type_created_idx's
    definition), built concurrently on a copy of the table no publisher touches.
    What is left of the publishers' latency then is the build's I/O (its WAL and
    the index file's fsync), not any lock."""
    conn = await asyncpg.connect(url)
    try:
        started = time.monotonic()
        await conn.execute(
            "CREATE INDEX CONCURRENTLY bench_copy_idx ON bench_copy (event_type, created_at)"
        )
        ended = time.monotonic()
    finally:
        await conn.close()
    _log_file(log_path).close()
    return 0, started, ended


def summarize(samples: list[tuple[float, float]], lo: float, hi: float) -> dict[str, Any]:
    during = [lat * 1000 for at, lat in samples if lo <= at <= hi]
    return {
        "inserts": len(during),
        "p50_ms": rnd(pct(during, 50)),
        "p99_ms": rnd(pct(during, 99)),
        "max_ms": rnd(max(during)) if during else None,
        "over_100ms": sum(1 for ms in during if ms > 100),
    }


async def wait_quiet(limit: float, most_s: float = 900.0) -> None:
    """Wait (at most ``most_s``) until the 1-minute load average is under ``limit``:
    on a shared machine another job's burst shows up as publisher latency."""
    deadline = time.monotonic() + most_s
    for _ in range(int(most_s // 5)):
        if os.getloadavg()[0] < limit or time.monotonic() > deadline:
            return
        await asyncio.sleep(5)


async def one_run(args: argparse.Namespace, src: Path, index: int) -> dict[str, Any]:
    if args.quiet_below:
        await wait_quiet(args.quiet_below)
    load_at_start = os.getloadavg()
    await recreate_pg_db(DB)
    url = pg_url(DB)
    try:
        load_s = await load_seed(url, args.rows, copy=args.control)
        log(f"run {index}: loaded {args.rows:,} rows in {load_s:.1f} s")
        pool = await asyncpg.create_pool(url, min_size=8, max_size=64)
        publisher = Publisher(pool, args.interval_ms / 1000)
        publishing = asyncio.create_task(publisher.run())
        await asyncio.sleep(args.settle)
        log_path = TMP / f"migrate-{args.label}-{index}.log"
        if args.control:
            code, lo, hi = await run_control(url, log_path)
        else:
            code, lo, hi = await run_migrate(url, src, log_path, args.log_level)
        await asyncio.sleep(args.settle)
        publisher.stop()
        await publishing
        await pool.close()
        check = await asyncpg.connect(url)
        try:
            published = await check.fetchval(
                "SELECT count(*) FROM events WHERE created_by = 'publisher'"
            )
            invalid = await check.fetchval("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
        finally:
            await check.close()
    finally:
        await drop_pg_db(DB)
    return {
        "kind": "run",
        "label": args.label,
        "run": index,
        "rows": args.rows,
        "src": str(src),
        "src_sha256_12": _src_hash(src),
        "imported_from": await imported_from(src),
        "migrate_exit": code,
        "migrate_s": rnd(hi - lo),
        "load_s": rnd(load_s),
        "before": summarize(publisher.samples, 0, lo),
        "during": summarize(publisher.samples, lo, hi),
        "slow_inserts": [  # (scheduled s after migrate started, ms) of those over 100 ms
            (rnd(at - lo, 3), rnd(lat * 1000, 1)) for at, lat in publisher.samples if lat > 0.1
        ],
        "timeline": timeline(log_path, MIGRATE_WALL_START),
        "loadavg_at_start": load_at_start,
        "loadavg_at_end": os.getloadavg(),
        "published": published,
        "publish_errors": len(publisher.errors),
        "invalid_indexes": invalid,
        "migrate_log_tail": log_path.read_text(errors="replace")[-1500:],
    }


def report(records: list[dict[str, Any]]) -> str:
    rows = []
    for rec in records:
        d = rec["during"]
        rows.append(
            [
                rec["label"],
                rec["run"],
                rec["migrate_exit"],
                rec["migrate_s"],
                d["inserts"],
                d["p50_ms"],
                d["p99_ms"],
                d["max_ms"],
                d["over_100ms"],
                rec["before"]["max_ms"],
                rec["publish_errors"],
                rnd(rec["loadavg_at_start"][0], 1),
            ]
        )
    headers = [
        "code",
        "run",
        "exit",
        "migrate s",
        "INSERTs during",
        "p50 ms",
        "p99 ms",
        "max ms",
        "> 100 ms",
        "max ms before",
        "errors",
        "load",
    ]
    out = table(headers, rows)
    if len(records) > 1:
        out += "\n\nmedian [min-max]: migrate {} s, p99 {} ms, max {} ms".format(
            fmt_med([r["migrate_s"] for r in records], 1),
            fmt_med([r["during"]["p99_ms"] for r in records], 1),
            fmt_med([r["during"]["max_ms"] for r in records], 1),
        )
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=2.0, help="publishing before/after, s")
    parser.add_argument("--src", type=Path, default=ROOT / "src", help="eventproc's src/ to run")
    parser.add_argument("--label", default="after")
    parser.add_argument("--log-level", default="info", help="the migrate process's LOG_LEVEL")
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=0.0,
        help="before each run, wait until the 1-minute load average is below this",
    )
    parser.add_argument(
        "--control",
        action="store_true",
        help="no migrate: build one index concurrently on a copy of the table (I/O floor)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if not (args.src / "eventproc" / "__init__.py").is_file():
        raise SystemExit(f"no eventproc package under --src {args.src}")
    TMP.mkdir(parents=True, exist_ok=True)
    results = Results("migrate", sys.argv, args.out)
    await results.start()
    records = []
    for index in range(1, args.runs + 1):
        record = await one_run(args, args.src.resolve(), index)
        results.emit(record)
        records.append(record)
        log(f"run {index}: {record['during']}, migrate {record['migrate_s']} s")
    print(report(records))
    print(f"\nresults: {results.path}")


if __name__ == "__main__":
    asyncio.run(main())
