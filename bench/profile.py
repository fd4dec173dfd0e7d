#!/usr/bin/env python3
"""Profile one ``eventproc worker`` during a PostgreSQL drain with py-spy.

The worker is started under ``py-spy record -f raw`` (sampling, CPU time only:
idle waits are not sampled) for a drain.py drain (one worker, N events),
once per ORDERING. The collapsed stacks are then summarised three ways:

- by activity (each sample counted once, first match wins): start-up, the
  claim statement, the completion statement, logging, metrics, the
  dispatcher/handler, the processor loop (task creation, bookkeeping),
  and the rest (event loop, asyncpg's protocol callbacks);
- inside the claim and completion statements: SQLAlchemy statement building
  and compilation, SQLAlchemy execution layers, the asyncpg adaptor and the
  driver, row conversion;
- the top functions by self time.

Shares are of the samples outside start-up; "us/event" multiplies a share by
the worker's CPU time per event measured in the same (profiled) drain.

Needs py-spy in the main venv: ``.venv/bin/pip install -e '.[bench]'``.

Usage (from the repository root):
    .venv/bin/python bench/profile.py                         # both orderings, N=50000
    .venv/bin/python bench/profile.py --orderings none -n 20000
    .venv/bin/python bench/profile.py --analyse bench/results/profile-*-none.txt
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from common import RESULTS, VENV_BIN, log, stamp, table

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")

# (activity, predicate over the stack's frames) in priority order.
STARTUP = ("_find_and_load", "runtime.py:prepare", "config.py:", "cli.py:_settings")


def parse(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    """[(frames [(file, func)] root first, count)]"""
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for raw in stack.split(";"):
            m = FRAME.match(raw.strip())
            if m:
                frames.append((m["file"], m["func"]))
            else:
                frames.append(("", raw.strip()))
        out.append((frames, int(count)))
    return out


def _has(frames: list[tuple[str, str]], file_part: str, func: str | None = None) -> bool:
    # py-spy names methods Class.method
    return any(
        file_part in f and (func is None or fn == func or fn.endswith("." + func))
        for f, fn in frames
    )


GREENLET = "SQLAlchemy execute() internals, in its greenlet (claim or completion)"
STATEMENTS = ("claim statement", "completion statement", GREENLET)
BUILDERS = ("claim", "write_back", "leases", "insert", "successes")  # store/args.py


def activity(frames: list[tuple[str, str]]) -> str:
    if (
        _has(frames, "importlib", "_find_and_load")
        or _has(frames, "runtime.py", "prepare")
        or _has(frames, "eventproc/config.py")
        or _has(frames, "eventproc/cli.py", "_settings")
        or _has(frames, "runtime.py", "__init__")
        or _has(frames, "alembic/")
    ):
        return "start-up (imports, settings, migration)"
    if not _has(frames, "asyncio/base_events.py") and _has(frames, "sqlalchemy/"):
        # SQLAlchemy runs its sync core in a greenlet: py-spy shows that stack
        # without the coroutine that called it.
        return GREENLET
    if _has(frames, "", "event_claim_many"):
        return "claim statement (event_claim_many), outside the greenlet"
    if _has(frames, "", "event_write_back") or _has(frames, "eventproc/engine/completer.py"):
        return "completion statement (Completer.flush), outside the greenlet"
    if _has(frames, "logging/") or _has(frames, "eventproc/logs.py"):
        return "logging (one INFO line per event: record, JSON, write)"
    if _has(frames, "prometheus_client"):
        return "metrics (prometheus_client)"
    if _has(frames, "eventproc/engine/dispatch.py") or _has(frames, "handlers.py"):
        return "dispatcher + handler (rest)"
    if _has(frames, "eventproc/engine/"):
        return "processor loop (task creation, bookkeeping)"
    if _has(frames, "", "listen") or _has(frames, "eventproc/engine/leases.py"):
        return "listener / lease keeper"
    if _has(frames, "asyncio/"):
        return "event loop + asyncpg protocol callbacks (rest)"
    return "other"


def layer(frames: list[tuple[str, str]]) -> str:
    """Which layer a claim/completion sample is in (first match wins)."""
    leaf_file, leaf_func = frames[-1] if frames else ("", "")
    if "selector_events.py" in leaf_file and leaf_func.endswith("write"):
        return "socket send (syscall; wakes the PG backend, which may preempt us)"
    if _has(frames, "", "_generate_cache_key") or _has(frames, "", "_gen_cache_key"):
        return "SQLAlchemy cache key of the statement (every execution)"
    if _has(frames, "sqlalchemy/sql/compiler.py"):
        return "SQLAlchemy compile (cache miss)"
    if _has(frames, "sqlalchemy/pool/"):
        return "SQLAlchemy pool checkout / checkin / reset"
    if (
        _has(frames, "", "row_to_event")
        or _has(frames, "", "event_from_returned")
        or _has(frames, "sqlalchemy/engine/result.py")
    ):
        return "row conversion (Row -> Event)"
    if any(_has(frames, "eventproc/store/", b) for b in BUILDERS):
        return "statement construction in eventproc (Core objects built per call)"
    if "asyncpg" in leaf_file:
        return "asyncpg adaptor + driver (its C code is attributed here)"
    if "greenlet" in leaf_file or "concurrency.py" in leaf_file:
        return "greenlet switch"
    if _has(frames, "sqlalchemy/"):
        return "SQLAlchemy execution layers (connection, context, result setup)"
    if "eventproc/" in leaf_file:
        return "eventproc store code"
    return "other (" + (leaf_file.rsplit("/", 2)[-1] or "?") + ")"


def analyse(path: Path, cpu_us_per_event: float | None) -> tuple[str, dict[str, Any]]:
    stacks = parse(path)
    acts: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for frames, n in stacks:
        a = activity(frames)
        acts[a] += n
        if a.startswith("start-up"):
            continue
        if a.startswith(STATEMENTS):
            layers[layer(frames)] += n
        if frames:
            f, fn = frames[-1]
            leaf[f"{fn} ({f.split('site-packages/')[-1]})"] += n
    startup = sum(n for a, n in acts.items() if a.startswith("start-up"))
    total = sum(acts.values()) - startup

    def rows(counter: Counter[str], base: int) -> list[list[Any]]:
        out = []
        for name, n in counter.most_common():
            share = n / base if base else 0.0
            us = f"{share * cpu_us_per_event:.0f}" if cpu_us_per_event else ""
            out.append([name, n, f"{share * 100:.1f}%", us])
        return out

    text = [f"profile {path.name}: {total} samples after start-up ({startup} in start-up)"]
    text.append(
        table(
            ["activity", "samples", "share", "us/event"],
            rows(Counter({a: n for a, n in acts.items() if not a.startswith("start-up")}), total),
        )
    )
    text.append("\ninside the claim + completion statements (share of all drain samples)")
    text.append(table(["layer", "samples", "share", "us/event"], rows(layers, total)))
    text.append("\ntop 20 functions by self time (share of all drain samples)")
    text.append(
        table(
            ["function", "samples", "share", "us/event"],
            rows(Counter(dict(leaf.most_common(20))), total),
        )
    )
    data = {
        "file": str(path),
        "samples": total,
        "startup_samples": startup,
        "cpu_us_per_event": cpu_us_per_event,
        "activities": dict(acts),
        "statement_layers": dict(layers),
        "top_self": dict(leaf.most_common(40)),
    }
    return "\n".join(text), data


async def profile(args: argparse.Namespace) -> int:
    from drain import Scenario, measure_drain

    spy = VENV_BIN / "py-spy"
    if not spy.exists():
        raise SystemExit("py-spy is not installed: .venv/bin/pip install -e '.[bench]'")
    st = stamp()
    reports = []
    for ordering in args.orderings.split(","):
        out = RESULTS / f"profile-{st}-{ordering}.txt"
        launcher = [str(spy), "record", "-f", "raw", "-r", str(args.rate), "-o", str(out), "--"]
        aggs = args.aggregates if ordering == "aggregate" else 0
        log(f"profiling a drain: pg ORDERING={ordering} N={args.n}")
        rec = await measure_drain(
            Scenario("pg", ordering, 1, args.n, aggs), run=1, launcher=launcher
        )
        if "error" in rec:
            raise SystemExit(f"drain failed: {rec['error']}\n{rec.get('worker_log_tail')}")
        text, data = analyse(out, rec["worker_cpu_us_per_event"])
        header = (
            f"ORDERING={ordering}: {rec['events_per_s']} events/s under py-spy "
            f"({args.rate} Hz), worker CPU {rec['worker_cpu_us_per_event']} us/event"
        )
        reports.append(header + "\n" + text)
        (RESULTS / f"profile-{st}-{ordering}.json").write_text(
            json.dumps({"drain": rec, "analysis": data}, indent=1, default=str)
        )
    print("\n\n".join(reports))
    return 0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=50_000)
    ap.add_argument("--orderings", default="none,aggregate")
    ap.add_argument("--aggregates", type=int, default=1000)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples/s (default: 250)")
    ap.add_argument("--analyse", nargs="+", type=Path, help="only analyse these raw files")
    ap.add_argument("--cpu-us", type=float, default=None, help="CPU us/event for --analyse")
    args = ap.parse_args(argv)
    if args.analyse:
        for p in args.analyse:
            print(analyse(p, args.cpu_us)[0] + "\n")
        return 0
    return asyncio.run(profile(args))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
