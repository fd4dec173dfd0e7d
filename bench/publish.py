#!/usr/bin/env python3
"""Publish throughput through eventproc's own API (no worker running).

Per backend and run, on a fresh database:

- single: ``store.event_insert_many([event])`` once per event (one commit
  each), ``--single-n`` events, from 1 task and from ``--tasks`` concurrent
  tasks sharing the store's connection pool;
- batched: ``store.event_insert_many(batch)`` with ``--chunks`` events per
  call (one commit per call), ``-n`` events in all.

Usage (from the repository root):
    .venv/bin/python bench/publish.py
    .venv/bin/python bench/publish.py --backends pg --chunks 1000,10000 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import defaultdict
from typing import Any

from common import Backend, Results, fmt_med, log, machine_cpu, rnd, table


def events(start: int, stop: int) -> list[Any]:
    from eventproc import NewEvent

    return [NewEvent("bench.noop", {"i": i}) for i in range(start, stop)]


async def single(store: Any, n: int, tasks: int) -> float:
    counter = iter(range(n))

    async def one_task() -> None:
        for i in counter:
            await store.event_insert_many(events(i, i + 1))

    t0 = time.perf_counter()
    await asyncio.gather(*(one_task() for _ in range(tasks)))
    return n / (time.perf_counter() - t0)


async def batched(store: Any, n: int, chunk: int) -> float:
    # Build the NewEvent objects inside the timed loop: part of publishing.
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        await store.event_insert_many(events(start, min(n, start + chunk)))
    return n / (time.perf_counter() - t0)


async def measure(args: argparse.Namespace, kind: str, run: int) -> list[dict[str, Any]]:
    plan: list[tuple[str, int, int]] = [("single", 1, args.single_n)]
    plan += [("single", t, args.single_n) for t in args.tasks if t > 1]
    plan += [("batched", c, args.n) for c in args.chunks]
    out = []
    for mode, param, n in plan:
        backend = Backend(kind, "bench_eventproc")
        await backend.create()
        try:
            store = await backend.open_store()
            try:
                await store.event_insert_many(events(-5, 0))  # warm the pool
                mc0 = machine_cpu()
                c0 = time.process_time()
                if mode == "single":
                    rate = await single(store, n, param)
                else:
                    rate = await batched(store, n, param)
                cpu = time.process_time() - c0
                mc1 = machine_cpu()
            finally:
                await store.close()
            rec = {
                "kind": "publish",
                "backend": kind,
                "mode": mode,
                "tasks": param if mode == "single" else 1,
                "chunk": param if mode == "batched" else 1,
                "n": n,
                "run": run,
                "events_per_s": round(rate),
                "publisher_cpu_us_per_event": round(cpu * 1e6 / n),
                "machine_cpu_busy": rnd((mc1[0] - mc0[0]) / max(1, mc1[1] - mc0[1]), 3),
            }
        except Exception as exc:
            rec = {"kind": "publish", "backend": kind, "mode": mode, "run": run}
            rec["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            await backend.drop()
        out.append(rec)
    return out


def summarize(records: list[dict[str, Any]]) -> str:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("kind") == "publish" and "error" not in r:
            groups[(r["backend"], r["mode"], r["tasks"], r["chunk"], r["n"])].append(r)
    rows = [
        [
            backend,
            mode,
            tasks,
            chunk,
            n,
            len(rs),
            fmt_med(r["events_per_s"] for r in rs),
            fmt_med(r["publisher_cpu_us_per_event"] for r in rs),
            fmt_med(r["machine_cpu_busy"] for r in rs),
        ]
        for (backend, mode, tasks, chunk, n), rs in groups.items()
    ]
    return table(
        [
            "backend",
            "mode",
            "tasks",
            "events/call",
            "N",
            "runs",
            "events/s",
            "publisher CPU us/event",
            "machine CPU busy",
        ],
        rows,
    )


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--backends", default="pg,sqlite")
    ap.add_argument("-n", type=int, default=50_000, help="events per batched run")
    ap.add_argument("--chunks", type=ints, default=[1000, 10_000], help="events per call")
    ap.add_argument("--single-n", type=int, default=3000, help="events per single-insert run")
    ap.add_argument("--tasks", type=ints, default=[1, 8], help="concurrent single publishers")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=None)
    return ap


async def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    results = Results("publish", sys.argv, args.out)
    await results.start()
    for run in range(1, args.runs + 1):
        for kind in args.backends.split(","):
            log(f"publish {kind} run {run}/{args.runs}")
            for rec in await measure(args, kind, run):
                results.emit(rec)
                log(f"  {rec['mode']}: {rec.get('events_per_s', rec.get('error'))}")
    print(summarize(results.records))
    print(f"\nJSON lines: {results.path}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
