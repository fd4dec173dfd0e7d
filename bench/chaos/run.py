"""Chaos suite for eventproc: one command, bounded in time, loopback only.

    .venv/bin/python bench/chaos/run.py            # 4 workers, 50,000 events, 10 kills, 1 restart
    .venv/bin/python bench/chaos/run.py --events 5000 --kills 3

Runs its own throwaway PostgreSQL cluster (never the shared one), prints the
table, writes bench/chaos/results/chaos-<time>.json (worker logs beside it)
and exits 0 only if every invariant held. See README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chaos_cluster import ClusterError
from chaos_driver import ChaosConfig, format_result, run_chaos

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


async def main_async(config: ChaosConfig) -> int:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)  # same clean-up as Ctrl+C
    result = await run_chaos(config)
    table = format_result(result)
    print()
    print(table)
    if config.workdir is not None:
        stamp = config.workdir.name.removesuffix("-logs")
        data = result.as_json() | {"source": source_state(), "table": table}
        path = RESULTS / f"{stamp}.json"
        path.write_text(json.dumps(data, indent=1, default=str))
        print(f"\nJSON: {path}\nworker logs: {config.workdir}")
    return 0 if result.passed else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = None
    if not args.no_json:
        workdir = RESULTS / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}-logs"
        workdir.mkdir(parents=True, exist_ok=True)
    try:
        return asyncio.run(main_async(config_from(args, workdir)))
    except (ClusterError, RuntimeError, TimeoutError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: workers killed, cluster removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
