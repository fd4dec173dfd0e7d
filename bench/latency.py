#!/usr/bin/env python3
"""Pickup latency: from the publisher's commit returning to the handler starting.

One ``eventproc worker`` (default settings plus the scenario's ORDERING) is
started on an empty database and left idle for 1 s (LISTENing on PostgreSQL;
on SQLite it watches ``PRAGMA data_version`` every 50 ms for other
processes' commits). Then, per run:

- idle series: ``--idle-events`` events, one per call of the batched publish
  API (``store.event_insert_many([event])``, a commit each), on a fixed
  schedule every ``--idle-interval-ms``; each event is handled long before
  the next is published.
- loaded series: single-row INSERT statements (one commit each, through the
  raw driver so that the load generator is cheap: asyncpg on
  ``--publishers`` connections, or sqlite3) on a fixed schedule at
  ``--load-fraction`` (50 %) of the maximum drain rate of one worker, for
  ``--load-seconds``. The maximum is ``--max-rate``, else the median of the
  latest drain results for that backend/ordering with one worker, else
  measured here with a 20,000-event drain.

Each event carries its sequence number; the publisher notes when its commit
returned (and when its call started), the handler notes ``time.time()`` at
its start (handlers.py). Latency = handler start - commit returned (can be
slightly negative: the worker may start the handler before the publisher
has read the server's reply). "from call" = handler start - call started,
which is how the shared peer benchmark measures its peers.

Usage (from the repository root):
    .venv/bin/python bench/latency.py                  # pg+sqlite, both orderings, 3 runs
    .venv/bin/python bench/latency.py --backends pg --orderings aggregate --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import statistics
import sys
import threading
import time
from collections import defaultdict
from typing import Any

from common import (
    RESULTS,
    TMP,
    Backend,
    RecordFile,
    Results,
    Worker,
    fmt_med,
    load_jsonl,
    log,
    machine_cpu,
    pct,
    rnd,
    table,
    wait_until,
    worker_env,
)

WARM_BASE = 10_000_000  # sequence numbers of warm-up events (not counted)
LOAD_BASE = 1_000_000  # sequence numbers of the loaded series


def latest_max_rate(backend: str, ordering: str) -> float | None:
    """Median one-worker drain rate from the newest drain results that have one."""
    for path in sorted(RESULTS.glob("drain-*.jsonl"), reverse=True):
        rates = [
            r["events_per_s"]
            for r in load_jsonl([path])
            if r.get("kind") == "drain"
            and r.get("backend") == backend
            and r.get("ordering") == ordering
            and r.get("workers") == 1
            and not r.get("env")
            and not r.get("profiled")
            and "error" not in r
        ]
        if rates:
            return float(statistics.median(rates))
    return None


async def find_max_rate(args: argparse.Namespace, backend: str, ordering: str) -> float:
    if args.max_rate:
        return float(args.max_rate)
    found = latest_max_rate(backend, ordering)
    if found:
        return found
    from drain import Scenario, measure_drain

    log(f"no drain result for {backend}/{ordering}: measuring the maximum rate first")
    aggs = 1000 if ordering == "aggregate" else 0
    rec = await measure_drain(Scenario(backend, ordering, 1, 20_000, aggs), run=0)
    if "error" in rec:
        raise RuntimeError(f"could not measure the maximum rate: {rec['error']}")
    return float(rec["events_per_s"])


# ---------------------------------------------------------------------------
# publishers


async def idle_series(
    store: Any, m: int, interval: float, base: int = 0
) -> tuple[dict[int, float], dict[int, float]]:
    """One event per publish call on a fixed schedule; (call start, commit returned)."""
    from eventproc import NewEvent

    calls: dict[int, float] = {}
    commits: dict[int, float] = {}
    t0 = time.perf_counter()
    for k in range(m):
        delay = t0 + k * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        i = base + k
        event = NewEvent("bench.noop", {"i": i})
        calls[i] = time.time()
        await store.event_insert_many([event])
        commits[i] = time.time()
    return calls, commits


_PG_INSERT = "INSERT INTO events (id, event_type, payload) VALUES ($1, 'bench.noop', $2::jsonb)"
_SQLITE_INSERT = "INSERT INTO events (id, event_type, payload) VALUES (?, 'bench.noop', ?)"


async def loaded_series_pg(
    url: str, m: int, rate: float, publishers: int
) -> tuple[dict[int, float], dict[int, float]]:
    import asyncpg

    from eventproc.event import uuid7

    conns = [await asyncpg.connect(url) for _ in range(publishers)]
    calls: dict[int, float] = {}
    commits: dict[int, float] = {}
    counter = iter(range(m))
    t0 = time.perf_counter() + 0.05

    async def publisher(conn: Any) -> None:
        for k in counter:
            delay = t0 + k / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            i = LOAD_BASE + k
            calls[i] = time.time()
            await conn.execute(_PG_INSERT, uuid7(), json.dumps({"i": i}))
            commits[i] = time.time()

    try:
        await asyncio.gather(*(publisher(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    return calls, commits


def _sqlite_publisher(
    path: str, m: int, rate: float, calls: dict[int, float], commits: dict[int, float]
) -> None:
    from eventproc.event import uuid7

    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        t0 = time.perf_counter() + 0.05
        for k in range(m):
            delay = t0 + k / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            i = LOAD_BASE + k
            calls[i] = time.time()
            conn.execute(_SQLITE_INSERT, (str(uuid7()), json.dumps({"i": i})))
            commits[i] = time.time()
    finally:
        conn.close()


async def loaded_series_sqlite(
    path: str, m: int, rate: float
) -> tuple[dict[int, float], dict[int, float]]:
    calls: dict[int, float] = {}
    commits: dict[int, float] = {}
    thread = threading.Thread(target=_sqlite_publisher, args=(path, m, rate, calls, commits))
    thread.start()
    await asyncio.to_thread(thread.join)
    return calls, commits


# ---------------------------------------------------------------------------


def series_stats(
    name: str,
    calls: dict[int, float],
    commits: dict[int, float],
    started: dict[int, float],
) -> dict[str, Any]:
    lat = [(started[i] - commits[i]) * 1000 for i in commits if i in started]
    from_call = [(started[i] - calls[i]) * 1000 for i in calls if i in started]
    call_ms = [(commits[i] - calls[i]) * 1000 for i in commits]
    span = (max(calls.values()) - min(calls.values())) if len(calls) > 1 else 0.0
    return {
        "series": name,
        "events": len(commits),
        "lost": len(commits) - len(lat),
        "publish_rate": round((len(calls) - 1) / span) if span > 0 else None,
        "p50_ms": rnd(pct(lat, 50)),
        "p95_ms": rnd(pct(lat, 95)),
        "p99_ms": rnd(pct(lat, 99)),
        "max_ms": rnd(max(lat) if lat else None),
        "min_ms": rnd(min(lat) if lat else None),
        "mean_ms": rnd(statistics.fmean(lat) if lat else None),
        "from_call_p50_ms": rnd(pct(from_call, 50)),
        "from_call_p99_ms": rnd(pct(from_call, 99)),
        "publish_call_p50_ms": rnd(pct(call_ms, 50)),
        "publish_call_p99_ms": rnd(pct(call_ms, 99)),
    }


async def measure_latency(
    args: argparse.Namespace, backend_kind: str, ordering: str, run: int, max_rate: float
) -> list[dict[str, Any]]:
    backend = Backend(backend_kind, "bench_eventproc")
    await backend.create()
    tag = f"lat-{backend_kind}-{ordering}-r{run}-{time.time_ns()}"
    record = RecordFile(TMP / f"rec-{tag}.bin")
    worker: Worker | None = None
    common = {
        "kind": "latency",
        "backend": backend_kind,
        "ordering": ordering,
        "run": run,
        "loadavg_1m_before": round(os.getloadavg()[0], 2),
    }
    out: list[dict[str, Any]] = []
    poll_s = int(args.env_poll_ms) / 1000 if args.env_poll_ms else 10.0
    settle = poll_s + 15 if backend_kind == "sqlite" else 15.0
    try:
        store = await backend.open_store()
        env_extra = {"POLL_INTERVAL_MS": args.env_poll_ms} if args.env_poll_ms else {}
        worker = Worker(
            worker_env(backend.url, record.path, ORDERING=ordering, **env_extra),
            TMP / f"worker-{tag}.log",
        )
        worker.start()
        await wait_until(lambda: bool(record.scan_ready()), limit_s=90, what="worker ready")
        await asyncio.sleep(1.0)  # let it reach its idle wait (LISTEN set up)
        try:
            # warm-up: connections, prepared statements, first claim
            await idle_series(store, 5, 0.02, base=WARM_BASE)
            await wait_until(lambda: record.size_records() >= 1 + 5, limit_s=settle, what="warm-up")
            await asyncio.sleep(0.5)

            m = args.idle_events
            mc0 = machine_cpu()
            calls, commits = await idle_series(store, m, args.idle_interval_ms / 1000)
            await wait_until(
                lambda: record.size_records() >= 6 + m, limit_s=settle, what="idle series"
            )
            mc1 = machine_cpu()
            started = {i: t for i, t in record.handled() if i < WARM_BASE}
            rec = {**common, **series_stats("idle", calls, commits, started)}
            rec["interval_ms"] = args.idle_interval_ms
            rec["machine_cpu_busy"] = rnd((mc1[0] - mc0[0]) / max(1, mc1[1] - mc0[1]), 3)
            out.append(rec)

            rate = max_rate * args.load_fraction
            m2 = min(int(rate * args.load_seconds), args.load_max_events)
            done_before = record.size_records()
            mc0 = machine_cpu()
            if backend_kind == "pg":
                calls, commits = await loaded_series_pg(backend.url, m2, rate, args.publishers)
            else:
                assert backend.path is not None
                calls, commits = await loaded_series_sqlite(str(backend.path), m2, rate)
            await wait_until(
                lambda: record.size_records() >= done_before + m2,
                limit_s=settle + 60,
                interval=0.02,
                what="loaded series",
            )
            mc1 = machine_cpu()
            started = {i: t for i, t in record.handled() if LOAD_BASE <= i < WARM_BASE}
            rec = {**common, **series_stats("loaded", calls, commits, started)}
            rec.update(
                max_rate=round(max_rate),
                target_rate=round(rate),
                machine_cpu_busy=rnd((mc1[0] - mc0[0]) / max(1, mc1[1] - mc0[1]), 3),
            )
            out.append(rec)
        finally:
            await store.close()
            rc = worker.stop()
            for r in out:
                r["worker_rc"] = rc
    except Exception as exc:
        out.append(
            {
                **common,
                "series": "error",
                "error": f"{type(exc).__name__}: {exc}",
                "worker_log_tail": worker.log_tail() if worker else "",
            }
        )
        if worker:
            worker.kill()
    finally:
        await backend.drop()
        record.remove()
        if worker and not any("error" in r for r in out):
            worker.log_path.unlink(missing_ok=True)
    return out


def summarize(records: list[dict[str, Any]]) -> str:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("kind") == "latency" and "error" not in r:
            groups[(r["backend"], r["ordering"], r["series"])].append(r)
    rows = []
    for (backend, ordering, series), rs in groups.items():
        rate = (
            f"every {rs[0]['interval_ms']:g} ms"
            if series == "idle"
            else f"{fmt_med(r['target_rate'] for r in rs)}/s target"
        )
        rows.append(
            [
                backend,
                ordering,
                series,
                rate,
                fmt_med([r["publish_rate"] for r in rs], 0),
                len(rs),
                rs[0]["events"],
                fmt_med(r["p50_ms"] for r in rs),
                fmt_med(r["p95_ms"] for r in rs),
                fmt_med(r["p99_ms"] for r in rs),
                fmt_med(r["max_ms"] for r in rs),
                sum(r["lost"] for r in rs),
                fmt_med(r["from_call_p50_ms"] for r in rs),
                fmt_med(r["publish_call_p50_ms"] for r in rs),
            ]
        )
    return table(
        [
            "backend",
            "ORDERING",
            "series",
            "offered",
            "achieved/s",
            "runs",
            "events",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "lost",
            "from call p50",
            "publish call p50",
        ],
        rows,
    )


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backends", default="pg,sqlite")
    ap.add_argument("--orderings", default="aggregate,none", help="default: aggregate,none")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle-events", type=int, default=500)
    ap.add_argument("--idle-interval-ms", type=float, default=20.0)
    ap.add_argument("--load-fraction", type=float, default=0.5)
    ap.add_argument("--load-seconds", type=float, default=5.0)
    ap.add_argument("--load-max-events", type=int, default=50_000)
    ap.add_argument("--publishers", type=int, default=8, help="PG connections for the load")
    ap.add_argument("--max-rate", type=float, default=None, help="events/s (default: see above)")
    ap.add_argument(
        "--env-poll-ms", default=None, help="POLL_INTERVAL_MS for the worker (default: eventproc's)"
    )
    ap.add_argument("--out", default=None)
    return ap


async def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    results = Results("latency", sys.argv, args.out)
    await results.start()
    plan = [(b, o) for b in args.backends.split(",") for o in args.orderings.split(",")]
    rates = {(b, o): await find_max_rate(args, b, o) for b, o in plan}
    for run in range(1, args.runs + 1):
        for b, o in plan:
            log(f"latency {b} ORDERING={o} run {run}/{args.runs} (max rate {rates[(b, o)]:.0f}/s)")
            for rec in await measure_latency(args, b, o, run, rates[(b, o)]):
                results.emit(rec)
                if "error" in rec:
                    log(f"  FAILED: {rec['error']}\n{rec['worker_log_tail']}")
                else:
                    log(
                        f"  {rec['series']}: p50 {rec['p50_ms']} p99 {rec['p99_ms']} "
                        f"max {rec['max_ms']} ms, {rec['publish_rate']}/s, lost {rec['lost']}"
                    )
    print(summarize(results.records))
    print(f"\nJSON lines: {results.path}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
