"""Chaos suite for eventproc: one command, bounded in time, loopback only.

    .venv/bin/python bench/chaos/run.py            # 4 workers, 50,000 events, 10 kills, 1 restart
    .venv/bin/python bench/chaos/run.py --events 5000 --kills 3
    .venv/bin/python bench/chaos/run.py --workload fanout --events 5000 --kills 3

Runs its own throwaway PostgreSQL cluster (never the shared one), prints the
table, writes bench/chaos/results/chaos-<time>.json (worker logs beside it)
and exits 0 only if every invariant held. ``--workload fanout`` then runs the
same workload again without the failing subscription (``--baseline``) and
prints the healthy handlers' deliveries/s of both runs. See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_cluster import ClusterError
from chaos_driver import ChaosConfig, ChaosResult, format_result, run_chaos
from chaos_workload import FLAKY_MODES

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = ChaosConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--workers", type=int, default=defaults.workers, help="worker processes kept running")
    add("--events", type=int, default=defaults.events, help="events published")
    add("--aggregates", type=int, default=defaults.aggregates, help="aggregates they spread over")
    add("--kills", type=int, default=defaults.kills, help="SIGKILLs (each worker replaced)")
    add("--stops", type=int, default=defaults.stops, help="SIGSTOPs past the lease, then SIGCONT")
    add("--restarts", type=int, default=defaults.restarts, help="PostgreSQL restarts")
    add(
        "--duration-limit",
        type=float,
        default=defaults.duration_limit,
        help="seconds from the first publish after which the run gives up (and fails)",
    )
    add("--seed", type=int, default=defaults.seed, help="workload, fault points and victims")
    add("--ordering", choices=["aggregate", "none"], default=defaults.ordering)
    add("--lease-seconds", type=float, default=defaults.lease_seconds)
    add("--stop-seconds", type=float, default=None, help="default: 2 x lease + 1")
    add("--restart-downtime", type=float, default=defaults.restart_downtime)
    add("--restart-mode", choices=["immediate", "fast"], default=defaults.restart_mode)
    add("--concurrency", type=int, default=defaults.concurrency, help="CONCURRENCY per worker")
    add("--max-retries", type=int, default=defaults.max_retries)
    add("--pg-bin", default=None, help="PostgreSQL bin directory (default: found)")
    add("--dump", action="store_true", help="also save the tables as CSV beside the logs")
    add(
        "--pgbouncer",
        action="store_true",
        help="workers and publisher through a PgBouncer in transaction mode (POOLER=transaction)",
    )
    add(
        "--workload",
        choices=["default", "fanout"],
        default=defaults.workload,
        help="default: chaos.plain/chaos.tx, one subscription each; fanout: one type, "
        "three subscriptions (fast, flaky, slow)",
    )
    add(
        "--flaky",
        choices=FLAKY_MODES,
        default=defaults.flaky,
        help="fanout: the failing subscription fails as planned, never fails, or is absent",
    )
    add(
        "--baseline",
        choices=["absent", "quiet", "none"],
        default="absent",
        help="fanout with --flaky failing: run the same workload again with flaky absent "
        "(not subscribed) or quiet (subscribed, never failing) to compare the healthy "
        "handlers' deliveries/s; none: no second run",
    )
    add("--no-json", action="store_true", help="do not write results/")
    return parser.parse_args(argv)


def config_from(args: argparse.Namespace, workdir: Path | None) -> ChaosConfig:
    return ChaosConfig(
        workers=args.workers,
        events=args.events,
        aggregates=args.aggregates,
        kills=args.kills,
        stops=args.stops,
        restarts=args.restarts,
        duration_limit=args.duration_limit,
        seed=args.seed,
        ordering=args.ordering,
        lease_seconds=args.lease_seconds,
        stop_seconds=args.stop_seconds,
        restart_downtime=args.restart_downtime,
        restart_mode=args.restart_mode,
        concurrency=args.concurrency,
        max_retries=args.max_retries,
        workdir=workdir,
        dump=args.dump,
        pg_bin=args.pg_bin,
        pgbouncer=args.pgbouncer,
        workload=args.workload,
        flaky=args.flaky,
    )


def source_state() -> dict[str, object]:
    """Which eventproc was tested: the commit, and whether src/ had local changes."""
    root = Path(__file__).resolve().parents[2]

    def git(*command: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *command], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    import eventproc

    package = Path(eventproc.__file__).resolve().parent
    local = package.is_relative_to(root / "src")
    return {
        "eventproc": str(package),
        "commit": git("rev-parse", "HEAD") if local else None,
        "src_changes": git("status", "--short", "src") if local else None,
    }


def comparison(main: ChaosResult, baseline: ChaosResult) -> tuple[str, dict[str, Any]]:
    """The healthy handlers' deliveries/s with the failing subscription and without it."""
    ours = main.report.throughput.get("healthy") or {}
    theirs = baseline.report.throughput.get("healthy") or {}
    names = " + ".join(ours.get("handlers", []))
    rows = [
        ("whole run", "overall_per_s"),
        ("before the first fault", "fault_free_per_s"),
        ("from the first fault to the end", "under_faults_per_s"),
    ]
    header = f"flaky {baseline.config.flaky}"
    lines = [
        f"healthy handlers ({names}), deliveries/s: the same workload, seed and faults, "
        f"with flaky failing and with flaky {baseline.config.flaky}",
        "",
        f"| | flaky failing | {header} | ratio |",
        "|---|---:|---:|---:|",
    ]
    data: dict[str, Any] = {"baseline": baseline.config.flaky}
    for label, key in rows:
        a, b = ours.get(key), theirs.get(key)
        ratio = f"{a / b:.0%}" if a and b else "-"
        lines.append(f"| {label} | {_num(a)} | {_num(b)} | {ratio} |")
        data[key] = {"failing": a, baseline.config.flaky: b}
    return "\n".join(lines), data


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


async def main_async(config: ChaosConfig, baseline: str = "none") -> int:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)  # same clean-up as Ctrl+C
    source = source_state()  # what the workers run: read before, not after a long run
    result = await run_chaos(config)
    table = format_result(result)
    print()
    print(table)
    data: dict[str, Any] = result.as_json() | {"table": table}
    passed = result.passed
    if config.workload == "fanout" and config.flaky == "failing" and baseline != "none":
        workdir = config.workdir / "baseline" if config.workdir is not None else None
        if workdir is not None:
            workdir.mkdir(parents=True, exist_ok=True)
        print(f"\nthe same run again with flaky {baseline}, for comparison")
        second = await run_chaos(replace(config, flaky=baseline, workdir=workdir))
        second_table = format_result(second)
        compared, figures = comparison(result, second)
        print()
        print(second_table)
        print()
        print(compared)
        data["baseline"] = second.as_json() | {"table": second_table}
        data["comparison"] = figures | {"table": compared}
        passed = passed and second.passed
    if config.workdir is not None:
        stamp = config.workdir.name.removesuffix("-logs")
        path = RESULTS / f"{stamp}.json"
        path.write_text(json.dumps(data | {"source": source}, indent=1, default=str))
        print(f"\nJSON: {path}\nworker logs: {config.workdir}")
    return 0 if passed else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = None
    if not args.no_json:
        workdir = RESULTS / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}-logs"
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(main_async(config_from(args, workdir), args.baseline))
    except (ClusterError, RuntimeError, TimeoutError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: workers killed, cluster removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
