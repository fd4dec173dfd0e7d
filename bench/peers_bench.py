#!/usr/bin/env python3
"""eventproc side by side with procrastinate, pgqueuer and a raw asyncpg loop.

Drives the shared benchmark ``shared/bench-peers/peers.py`` (imported from its
shared path, never copied) with the eventproc plugin ``bench/eventproc_peer.py``
inside ``bench/.venv-peers`` (created on first use by setup_peers_venv.sh from
the shared requirements.txt). Every run measures all peers one after the
other, so the ratios eventproc / peer of one run come from the same minutes of
the same machine; the table shows the median (and range) of those per-run
ratios over ``--runs`` runs.

peers.py's working files (worker logs, stats) go to bench/results/peers-work/
and its JSON lines to bench/results/peers-<stamp>-runK.jsonl: shared/ is
read-only, and nothing is written there (no bytecode either).

Usage (from the repository root):
    .venv/bin/python bench/peers_bench.py                  # 3 runs, N=20000
    .venv/bin/python bench/peers_bench.py --runs 1 -- --skip latency   # extra peers.py flags
    .venv/bin/python bench/peers_bench.py --summarize bench/results/peers-*-run*.jsonl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
PEERS_DIR = Path(os.environ.get("BENCH_PEERS_DIR", ROOT.parent / "shared" / "bench-peers"))
PEERS_PY = PEERS_DIR / "peers.py"
VENV_PY = BENCH / ".venv-peers" / "bin" / "python"
PLUGIN = BENCH / "eventproc_peer.py"
WORK = RESULTS / "peers-work"

EVENTPROC = (
    "eventproc",
    "eventproc_sync",
    "eventproc_agg",
    "eventproc_fanout",
    "eventproc_fanout_agg",
)
OTHERS = ("pgqueuer", "procrastinate", "raw")
# Settings of eventproc the caller's shell must not leak into the harness.
SCRUB = (
    "DATABASE_URL",
    "HANDLERS",
    "ORDERING",
    "BATCH_SIZE",
    "CONCURRENCY",
    "POLL_INTERVAL_MS",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "LISTEN",
    "ENABLE_POLLING",
)


def inner(argv: list[str]) -> int:
    """Runs in bench/.venv-peers: import the shared peers.py and run it."""
    sys.dont_write_bytecode = True  # never write __pycache__ into shared/
    spec = importlib.util.spec_from_file_location("peers", PEERS_PY)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["peers"] = mod
    spec.loader.exec_module(mod)
    WORK.mkdir(parents=True, exist_ok=True)
    mod.HERE = WORK  # its results/ (worker logs, stats files) and the workers' cwd
    sys.argv = [str(PEERS_PY), *argv]
    return int(mod.main())


def run_once(run: int, stamp: str, args: argparse.Namespace, extra: list[str]) -> Path:
    out = RESULTS / f"peers-{stamp}-run{run}.jsonl"
    cmd = [
        str(VENV_PY),
        str(Path(__file__).resolve()),
        "_inner",
        "--peers",
        args.peers,
        "-n",
        args.n,
        "-c",
        args.c,
        "--skip",
        args.skip,
        "--plugin",
        str(PLUGIN),
        "--out",
        str(out),
        "--pg-user",
        os.environ.get("BENCH_PGUSER", "postgres"),
        "--pg-password",
        os.environ.get("BENCH_PGPASSWORD", ""),
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if k.upper() not in SCRUB}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    print(f"# peers run {run}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    subprocess.run(cmd, env=env, check=True, cwd=str(WORK), stdout=subprocess.DEVNULL)
    return out


# ---------------------------------------------------------------------------
# summary: medians over runs, and per-run ratios eventproc / peer


def _load(paths: list[Path]) -> dict[str, list[dict[str, Any]]]:
    """File -> its records (one file = one run)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for p in paths:
        with open(p) as fh:
            runs[str(p)] = [json.loads(line) for line in fh if line.strip()]
    return runs


def _fmt(vals: list[float], digits: int = 0) -> str:
    if not vals:
        return ""
    m = statistics.median(vals)
    f = f"{{:.{digits}f}}"
    if len(vals) == 1:
        return f.format(m)
    return f"{f.format(m)} [{f.format(min(vals))}-{f.format(max(vals))}]"


def _best_drain(recs: list[dict[str, Any]], peer: str) -> dict[str, Any] | None:
    """The peer's fastest completed drain (its best variant) in one run."""
    drains = [
        r for r in recs if r.get("kind") == "drain" and r["peer"] == peer and r.get("completed")
    ]
    return max(drains, key=lambda r: r["jobs_per_s"], default=None)


def _latency(recs: list[dict[str, Any]], peer: str) -> dict[str, Any] | None:
    return next((r for r in recs if r.get("kind") == "latency" and r["peer"] == peer), None)


Rows = dict[tuple[str, str, Any], dict[str, list[float]]]
Ratios = dict[tuple[str, str, str], list[float]]


def _collect(recs: list[dict[str, Any]], rows: Rows, ratios: Ratios) -> None:
    """Add one run's records to the per-row series and the per-run ratios."""
    for r in recs:
        if r.get("kind") == "drain" and r.get("completed"):
            v = rows[(r["peer"], r["variant"], r["n"])]
            v["drain"].append(r["jobs_per_s"])
            v["enqueue"].append(r["enqueue_jobs_per_s"])
            if r.get("worker_cpu_us_per_job") is not None:
                v["cpu"].append(r["worker_cpu_us_per_job"])
            v["commits"].append(r.get("db_xact_commits_per_job") or 0)
        if r.get("kind") == "latency" and r.get("p50_ms") is not None:
            v = rows[(r["peer"], f"latency: {r['variant']}", r["jobs"])]
            for q in ("p50_ms", "p95_ms", "p99_ms", "max_ms"):
                v[q].append(r[q])
    for ep in EVENTPROC:
        mine, my_lat = _best_drain(recs, ep), _latency(recs, ep)
        for other in OTHERS:
            theirs, their_lat = _best_drain(recs, other), _latency(recs, other)
            if mine and theirs:
                ratios[(ep, other, "drain")].append(mine["jobs_per_s"] / theirs["jobs_per_s"])
            if my_lat and their_lat and my_lat.get("p50_ms") and their_lat.get("p50_ms"):
                ratios[(ep, other, "p50")].append(my_lat["p50_ms"] / their_lat["p50_ms"])
                ratios[(ep, other, "p99")].append(my_lat["p99_ms"] / their_lat["p99_ms"])


def _render(rows: Rows, ratios: Ratios) -> str:
    lines = ["Drain (one worker process) and latency, median [min-max] over runs", ""]
    lines.append(
        "| peer | variant | N | runs | drain jobs/s | enqueue jobs/s (bulk) | "
        "worker CPU us/job | commits/job |"
    )
    lines.append("|---|---|---|---|---|---|---|---|")
    for (peer, variant, n), v in rows.items():
        if "drain" in v:
            lines.append(
                f"| {peer} | {variant} | {n} | {len(v['drain'])} | {_fmt(v['drain'])} | "
                f"{_fmt(v['enqueue'])} | {_fmt(v['cpu'])} | {_fmt(v['commits'], 2)} |"
            )
    lines += ["", "| peer | latency variant | jobs | runs | p50 ms | p95 ms | p99 ms | max ms |"]
    lines.append("|---|---|---|---|---|---|---|---|")
    for (peer, variant, n), v in rows.items():
        if "p50_ms" in v:
            lines.append(
                f"| {peer} | {variant.removeprefix('latency: ')} | {n} | {len(v['p50_ms'])} | "
                + " | ".join(_fmt(v[q], 2) for q in ("p50_ms", "p95_ms", "p99_ms", "max_ms"))
                + " |"
            )
    lines += [
        "",
        "Ratios eventproc / peer, computed within each run (peer = its fastest variant in"
        " that run), median [min-max] over runs. Drain: >1 means eventproc is faster."
        " Latency: <1 means eventproc picks up sooner.",
        "",
        "| eventproc | peer | drain ratio | latency p50 ratio | latency p99 ratio |",
        "|---|---|---|---|---|",
    ]
    for ep in EVENTPROC:
        for other in OTHERS:
            d, p50, p99 = (ratios.get((ep, other, k), []) for k in ("drain", "p50", "p99"))
            if d or p50:
                lines.append(f"| {ep} | {other} | {_fmt(d, 2)} | {_fmt(p50, 2)} | {_fmt(p99, 2)} |")
    return "\n".join(lines)


def summarize(paths: list[Path]) -> tuple[str, dict[str, Any]]:
    rows: Rows = defaultdict(lambda: defaultdict(list))
    ratios: Ratios = defaultdict(list)
    for recs in _load(paths).values():
        _collect(recs, rows, ratios)
    data = {
        "files": [str(p) for p in paths],
        "rows": [
            {"peer": k[0], "variant": k[1], "n": k[2], **{m: list(x) for m, x in v.items()}}
            for k, v in rows.items()
        ],
        "ratios": [
            {"eventproc": k[0], "peer": k[1], "metric": k[2], "per_run": v}
            for k, v in ratios.items()
        ],
    }
    return _render(rows, ratios), data


def main(argv: list[str]) -> int:
    if argv[:1] == ["_inner"]:
        return inner(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--peers", default="eventproc,eventproc_sync,eventproc_agg,pgqueuer,procrastinate,raw"
    )
    ap.add_argument("-n", default="20000", help="drain sizes for peers.py (default: 20000)")
    ap.add_argument("-c", default="50", help="peer concurrencies for peers.py (default: 50)")
    ap.add_argument("--skip", default="retry,profile", help="peers.py measurements to skip")
    ap.add_argument("--summarize", nargs="+", type=Path, help="only summarize these files")
    ap.add_argument("extra", nargs="*", help="more peers.py flags, after --")
    args = ap.parse_args(argv)
    if args.summarize:
        paths = args.summarize
    else:
        subprocess.run([str(BENCH / "setup_peers_venv.sh")], check=True)
        RESULTS.mkdir(parents=True, exist_ok=True)
        WORK.mkdir(parents=True, exist_ok=True)
        import time

        stamp = time.strftime("%Y%m%d-%H%M%S")
        paths = [run_once(k, stamp, args, args.extra) for k in range(1, args.runs + 1)]
    text, data = summarize(paths)
    print(text)
    if not args.summarize:
        run_stamp = paths[0].stem.removeprefix("peers-").rsplit("-run", 1)[0]
        out = RESULTS / f"peers-summary-{run_stamp}.json"
        out.write_text(json.dumps(data, indent=1))
        print(f"\nJSON: {out}\nper run: {', '.join(str(p) for p in paths)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
