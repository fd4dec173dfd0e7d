#!/usr/bin/env python3
"""The combined results table: issue 6's targets against the newest results.

Reads the newest bench/results/{publish,drain,latency}-*.jsonl, the newest
peers-summary-*.json and profile-*.json, and prints (and writes to
bench/results/report-<stamp>.md) the target table and each benchmark's
summary. Every number is a median over the runs in those files.

Usage (from the repository root):
    .venv/bin/python bench/report.py
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

import drain
import latency
import publish
from common import RESULTS, load_jsonl, med, stamp, table


def newest(pattern: str) -> Path | None:
    files = sorted(RESULTS.glob(pattern))
    return files[-1] if files else None


def records(pattern: str) -> tuple[Path | None, list[dict[str, Any]]]:
    path = newest(pattern)
    return path, (list(load_jsonl([path])) if path else [])


def _drain_med(recs: list[dict[str, Any]], backend: str, ordering: str, workers: int) -> Any:
    return med(
        r["events_per_s"]
        for r in recs
        if r.get("kind") == "drain"
        and "error" not in r
        and r["backend"] == backend
        and r["ordering"] == ordering
        and r["workers"] == workers
        and not r.get("env")
        and not r.get("delay_ms")
    )


def _lat(recs: list[dict[str, Any]], backend: str, ordering: str, series: str, q: str) -> Any:
    return med(
        r[q]
        for r in recs
        if r.get("kind") == "latency"
        and "error" not in r
        and (r["backend"], r["ordering"], r["series"]) == (backend, ordering, series)
    )


def _ratio(summary: dict[str, Any] | None, ep: str, peer: str, metric: str) -> Any:
    if not summary:
        return None
    for r in summary["ratios"]:
        if (r["eventproc"], r["peer"], r["metric"]) == (ep, peer, metric):
            return statistics.median(r["per_run"])
    return None


def _fmt(v: Any, unit: str = "", digits: int = 0) -> str:
    if v is None:
        return "not measured"
    return f"{v:,.{digits}f}{unit}"


def targets(
    pub: list[dict[str, Any]],
    dr: list[dict[str, Any]],
    lat: list[dict[str, Any]],
    peers: dict[str, Any] | None,
) -> str:
    batched = med(
        r["events_per_s"]
        for r in pub
        if r.get("kind") == "publish"
        and r.get("backend") == "pg"
        and r.get("mode") == "batched"
        and r.get("chunk") == 1000
    )
    rss = max(
        (r["peak_rss_mb"] for r in dr if r.get("kind") == "drain" and "peak_rss_mb" in r),
        default=None,
    )
    rows: list[tuple[str, str, Any, Any, str]] = [
        (
            "drain, PG, ORDERING=none, 1 worker",
            ">= 10,000 events/s",
            _drain_med(dr, "pg", "none", 1),
            10_000,
            " events/s",
        ),
        (
            "drain vs PgQueuer, same run (peers.py, N=20000)",
            ">= 3x",
            _ratio(peers, "eventproc", "pgqueuer", "drain"),
            3.0,
            "x",
        ),
        (
            "drain, PG, ORDERING=aggregate, 1,000 aggregates, 1 worker",
            ">= 5,000 events/s",
            _drain_med(dr, "pg", "aggregate", 1),
            5_000,
            " events/s",
        ),
        (
            "pickup p50, idle, PG (default ORDERING)",
            "<= 3 ms",
            _lat(lat, "pg", "aggregate", "idle", "p50_ms"),
            -3.0,
            " ms",
        ),
        (
            "pickup p99, idle, PG (default ORDERING)",
            "<= 10 ms",
            _lat(lat, "pg", "aggregate", "idle", "p99_ms"),
            -10.0,
            " ms",
        ),
        ("publish, PG, batched (1,000/call)", ">= 50,000 events/s", batched, 50_000, " events/s"),
        ("worker peak RSS (any drain)", "<= 150 MB", rss, -150.0, " MB"),
        (
            "drain, SQLite, ORDERING=aggregate (default), 1 worker",
            ">= 3,000 events/s",
            _drain_med(dr, "sqlite", "aggregate", 1),
            3_000,
            " events/s",
        ),
        (
            "drain, SQLite, ORDERING=none, 1 worker",
            ">= 3,000 events/s",
            _drain_med(dr, "sqlite", "none", 1),
            3_000,
            " events/s",
        ),
    ]
    out = []
    for what, target, value, bound, unit in rows:
        if value is None:
            verdict = "?"
        elif bound >= 0:
            verdict = "met" if value >= bound else f"MISSED ({value / bound:.2f} of target)"
        else:
            verdict = "met" if value <= -bound else f"MISSED ({value / -bound:.1f}x the limit)"
        digits = 2 if unit in ("x", " ms") else (1 if unit == " MB" else 0)
        out.append([what, target, _fmt(value, unit, digits), verdict])
    return table(["target (issue 6)", "wanted", "now (median)", "verdict"], out)


def profile_lines() -> str:
    out = []
    for path in sorted(RESULTS.glob("profile-*.json"))[-2:]:
        data = json.loads(path.read_text())
        d, a = data["drain"], data["analysis"]
        total = a["samples"] or 1
        acts = sorted(
            ((k, v) for k, v in a["activities"].items() if not k.startswith("start-up")),
            key=lambda kv: -kv[1],
        )
        out.append(
            f"{path.name}: ORDERING={d['ordering']}, {d['events_per_s']} events/s under py-spy, "
            f"{d['worker_cpu_us_per_event']} us CPU/event"
        )
        out.append(table(["activity", "share"], [[k, f"{v / total:.1%}"] for k, v in acts]))
    return "\n".join(out)


def main() -> int:
    pub_path, pub = records("publish-*.jsonl")
    dr_path, dr = records("drain-*.jsonl")
    lat_path, lat = records("latency-*.jsonl")
    peers_path = newest("peers-summary-*.json")
    peers = json.loads(peers_path.read_text()) if peers_path else None
    parts = [
        "## Targets",
        targets(pub, dr, lat, peers),
        f"\n## Drain ({dr_path.name if dr_path else '-'})",
        drain.summarize(dr),
        f"\n## Pickup latency ({lat_path.name if lat_path else '-'})",
        latency.summarize(lat),
        f"\n## Publish ({pub_path.name if pub_path else '-'})",
        publish.summarize(pub),
    ]
    if peers_path:
        from peers_bench import summarize as peers_summary

        files = [Path(p) for p in peers["files"]]
        parts += [f"\n## Peers ({peers_path.name})", peers_summary(files)[0]]
    prof = profile_lines()
    if prof:
        parts += ["\n## Profile (py-spy)", prof]
    text = "\n".join(parts)
    print(text)
    out = RESULTS / f"report-{stamp()}.md"
    out.write_text(text + "\n")
    print(f"\nwritten: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
