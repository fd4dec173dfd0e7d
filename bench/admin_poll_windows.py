#!/usr/bin/env python3
"""What the admin API costs a running worker, measured inside one drain.

admin_poll.py compares whole drains, one quiet and one polled; on a shared
2-core machine whose speed swings by half within minutes, a 5 % budget
drowns in that noise (two quiet drains of one round differed by 1.8x).
Here one worker drains one deep backlog while the client switches every
``--window`` seconds between three states, in the pattern

    quiet, polling the worker, quiet, polling an API process, quiet, ...

(polling: every admin list endpoint and /health once a second, as a
dashboard left open does; the API process is a second ``eventproc run``
with ENABLE_POLLING=false on the same database, started before the drain
and idle while not polled). The handler records every event's start time
(bench/handlers.py), so the drain rate of each window is known exactly.
Each polled window is compared with the mean of the quiet windows on
either side of it: the machine's drift over a few seconds weighs on the
three alike. The report is the ratio per polled window, median [min-max],
for each of the two polled states.

    .venv/bin/python bench/admin_poll_windows.py [--events 400000] [--window 3]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from admin_poll import _start_worker, _wait_answering, free_port, poll, publish
from common import TMP, RecordFile, drop_pg_db, fmt_med, pg_url, recreate_pg_db, worker_env

DB = "bench_admin_windows"
PATTERN = ("quiet", "worker", "quiet", "api")
LABELS = {"worker": "polling the worker", "api": "polling an API process"}


async def drain(n: int, window: float) -> tuple[list[tuple[str, float, float]], dict[str, Any]]:
    """Drain ``n`` events, switching states; the windows (state, start, end) and answers."""
    await recreate_pg_db(DB)
    await publish(n, DB)
    records = RecordFile(TMP / "admin-windows.rec")
    env = worker_env(pg_url(DB), records.path, ORDERING="none", LOG_LEVEL="warning")
    api_port, worker_port = free_port(), free_port()
    api = _start_worker({**env, "PORT": str(api_port), "ENABLE_POLLING": "false"}, "api")
    worker = None
    answers: dict[str, list[float]] = {}
    errors: list[str] = []
    windows: list[tuple[str, float, float]] = []
    try:
        await _wait_answering(f"http://127.0.0.1:{api_port}")
        worker = _start_worker({**env, "PORT": str(worker_port)}, "worker")
        while records.size_records() < 2 + 1000:  # noqa: ASYNC110 (a file another process writes)
            await asyncio.sleep(0.05)
        bases = {
            s: f"http://127.0.0.1:{p}" for s, p in (("worker", worker_port), ("api", api_port))
        }
        state_index = 0
        # Stop switching before the backlog runs low: the tail drains slower.
        while records.size_records() < 0.85 * n:
            state = PATTERN[state_index % len(PATTERN)]
            start = time.time()
            if state == "quiet":
                await asyncio.sleep(window)
            else:
                stop = asyncio.Event()
                task = asyncio.create_task(poll(bases[state], stop, answers, errors))
                await asyncio.sleep(window)
                stop.set()
                await task
            windows.append((state, start, time.time()))
            state_index += 1
    finally:
        for process in (worker, api):
            if process is not None:
                process.terminate()
                process.wait(30)
        await drop_pg_db(DB)
    times = sorted(t for i, t in records.handled())
    records.remove()
    rated = [(s, a, b, _rate(times, a, b)) for s, a, b in windows]
    return [(s, a, rate) for s, a, _, rate in rated], {"answers": answers, "errors": errors}


def _rate(times: list[float], start: float, end: float) -> float:
    return (bisect.bisect_left(times, end) - bisect.bisect_left(times, start)) / (end - start)


def ratios(windows: list[tuple[str, float, float]], state: str) -> list[float]:
    """Each ``state`` window's rate over the mean of the quiet windows either side."""
    found = []
    for k in range(1, len(windows) - 1):
        (before, _, r0), (here, _, r), (after, _, r1) = windows[k - 1 : k + 2]
        if here == state and before == after == "quiet" and r0 + r1 > 0:
            found.append(r / ((r0 + r1) / 2))
    return found


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=400_000)
    parser.add_argument("--window", type=float, default=3.0)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    per_state: dict[str, list[float]] = {"worker": [], "api": []}
    quiet_rates: list[float] = []
    answers: dict[str, list[float]] = {}
    for run in range(args.runs):
        windows, extra = await drain(args.events, args.window)
        for state in per_state:
            found = ratios(windows, state)
            per_state[state] += found
            print(
                f"run {run + 1}: {LABELS[state]}: {len(found)} windows, "
                f"{fmt_med([round(x * 100, 1) for x in found], 1)} % of the quiet ones beside",
                flush=True,
            )
        quiet_rates += [rate for state, _, rate in windows if state == "quiet"]
        for path, times in extra["answers"].items():
            answers.setdefault(path, []).extend(times)
        if extra["errors"]:
            print("non-200 answers:", ", ".join(sorted(set(extra["errors"]))))
    print(f"\nquiet windows: {fmt_med([round(r) for r in quiet_rates])} events/s")
    for state, found in per_state.items():
        if found:
            print(
                f"{LABELS[state]}: {fmt_med([round(x * 100, 1) for x in found], 1)} % of the "
                f"quiet windows beside it ({len(found)} windows; mean "
                f"{statistics.fmean(found) * 100:.1f} %)"
            )
    flat = [t for times in answers.values() for t in times]
    if flat:
        print(f"answer p50 {statistics.median(flat) * 1000:.1f} ms over {len(flat)} requests")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
