#!/usr/bin/env python3
"""Drain benchmark: publish N events, start K ``eventproc worker`` processes, time
until every event is processed.

For each scenario (backend x ORDERING x worker count) and each run:

1. a fresh database (PostgreSQL ``bench_eventproc`` or a SQLite file);
   N events of type ``bench.noop`` published with the batched API
   (``store.event_insert_many``, 1,000 per call: the publish rate is reported
   too). With ORDERING=aggregate the events are spread round-robin over
   ``--aggregates`` aggregate ids; with ORDERING=none they have none.
2. K worker processes start (``eventproc worker``, default settings plus the
   scenario's ORDERING and any ``--env``). The clock starts when the first
   worker is ready (it has migrated its schema: the last step before its loop)
   and stops when the database shows no unprocessed event. The database is
   polled only once the handlers have started N times, so that polling does
   not compete for the CPUs during the drain.
3. Reported: events/s, worker CPU per event, machine CPU busy, peak RSS of each
   worker (VmHWM), commits and WAL bytes per event (PostgreSQL), duplicates,
   and for aggregate ordering the number of per-aggregate order violations.

``--poolers none,session,transaction`` (PostgreSQL) puts a real PgBouncer
(Debian's 1.18, started here on a free port, stopped after the run) between
the workers and the database, in session or transaction mode, with POOLER
set to match: the same drain direct, through a session pooler and through a
transaction pooler, side by side. Publishing and counting stay direct.

Usage (from the repository root):
    .venv/bin/python bench/drain.py                    # the default matrix, 3 runs
    .venv/bin/python bench/drain.py --backends pg --orderings none --workers 1 --runs 5
    .venv/bin/python bench/drain.py --backends pg --poolers none,session,transaction
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from common import (
    PG_PORT,
    ROOT,
    TMP,
    Backend,
    DelayProxy,
    RecordFile,
    Results,
    Worker,
    fmt_med,
    log,
    machine_cpu,
    proc_cpu_seconds,
    proc_status,
    rnd,
    table,
    wait_until,
    worker_env,
)


@dataclass
class Scenario:
    backend: str  # pg | sqlite
    ordering: str  # none | aggregate
    workers: int
    n: int
    aggregates: int = 0
    env: dict[str, str] = field(default_factory=dict)
    delay_ms: float = 0.0  # added to every round trip of the workers (PG only)
    pooler: str = "none"  # none | session | transaction: a PgBouncer in front (PG only)

    @property
    def label(self) -> str:
        agg = f"aggregate/{self.aggregates} aggs" if self.ordering == "aggregate" else "none"
        extra = " ".join(f"{k}={v}" for k, v in sorted(self.env.items()))
        if self.delay_ms:
            extra = f"{extra} +{self.delay_ms:g}ms RTT".strip()
        if self.pooler != "none":
            extra = f"{extra} via PgBouncer {self.pooler}".strip()
        return f"{self.backend} ORDERING={agg} workers={self.workers}" + (
            f" {extra}" if extra else ""
        )


async def publish(store: Any, n: int, chunk: int, aggregates: int) -> float:
    """Publish n no-op events with the batched API; return events/s."""
    from eventproc import NewEvent

    aggs = [uuid.uuid4() for _ in range(aggregates)]
    t0 = time.perf_counter()
    for start in range(0, n, chunk):
        batch = [
            NewEvent("bench.noop", {"i": i}, aggregate_id=aggs[i % aggregates] if aggs else None)
            for i in range(start, min(n, start + chunk))
        ]
        await store.event_insert_many(batch)
    return n / (time.perf_counter() - t0)


def order_violations(handled: list[tuple[int, float]], aggregates: int) -> int:
    """Events of one aggregate that started before an earlier-published one."""
    if not aggregates:
        return 0
    last: dict[int, int] = {}
    bad = 0
    for i, _t in sorted(handled, key=lambda r: r[1]):
        agg = i % aggregates
        if agg in last and i < last[agg]:
            bad += 1
        last[agg] = max(i, last.get(agg, -1))
    return bad


async def measure_drain(
    sc: Scenario,
    *,
    run: int,
    chunk: int = 1000,
    limit_s: float = 300.0,
    launcher: list[str] | None = None,
    db_name: str = "bench_eventproc",
) -> dict[str, Any]:
    backend = Backend(sc.backend, db_name)
    await backend.create()
    tag = f"{sc.backend}-{sc.ordering}-w{sc.workers}-r{run}-{time.time_ns()}"
    record = RecordFile(TMP / f"rec-{tag}.bin")
    workers: list[Worker] = []
    rec: dict[str, Any] = {
        "kind": "drain",
        "scenario": sc.label,
        "backend": sc.backend,
        "ordering": sc.ordering,
        "aggregates": sc.aggregates,
        "workers": sc.workers,
        "n": sc.n,
        "env": sc.env,
        "delay_ms": sc.delay_ms,
        "pooler": sc.pooler,
        "run": run,
        "profiled": bool(launcher),
        # Other work on the (shared) machine shows here: 1-minute load at the start.
        "loadavg_1m_before": round(os.getloadavg()[0], 2),
    }
    proxy: DelayProxy | None = None
    pooler: Any = None
    try:
        store = await backend.open_store()
        try:
            rec["publish_events_per_s"] = round(await publish(store, sc.n, chunk, sc.aggregates))
        finally:
            await store.close()
        probe = await backend.connect()
        try:
            await asyncio.sleep(0.3)  # let the publisher's statistics land
            c0 = await probe.pg_counters()
            settings = {"ORDERING": sc.ordering, **sc.env}
            url = backend.url
            if sc.delay_ms and backend.kind == "pg":
                proxy = DelayProxy(PG_PORT, sc.delay_ms / 2)
                await proxy.start()
                url = url.replace(f":{PG_PORT}/", f":{proxy.port}/")
            if sc.pooler != "none" and backend.kind == "pg":
                pooler = start_pgbouncer(url, sc.pooler)
                url, settings = pooler.url(url), {**settings, "POOLER": sc.pooler}
            env = worker_env(url, record.path, **settings)
            t_spawn = time.time()
            for k in range(sc.workers):
                w = Worker(env, TMP / f"worker-{tag}-{k}.log", launcher=list(launcher or []))
                w.start()
                workers.append(w)
            rec.update(await _watch(sc, record, workers, probe, limit_s))
            rec["spawn_to_done_s"] = rnd(rec["t_done"] - t_spawn, 3)
        finally:
            t_stop = time.monotonic()
            rec["worker_rcs"] = [w.stop() for w in workers]
            rec["stop_s"] = rnd(time.monotonic() - t_stop, 2)
            if proxy is not None:
                await proxy.stop()
            if pooler is not None:
                pooler.stop()
            if backend.kind == "pg":
                await asyncio.sleep(1.0)  # exited backends flush their statistics
                c1 = await probe.pg_counters()
                rec["xact_per_event"] = rnd((c1["xact"] - c0["xact"]) / sc.n, 3)
                rec["wal_bytes_per_event"] = round((c1["wal_bytes"] - c0["wal_bytes"]) / sc.n)
                rec["wal_syncs"] = c1["wal_sync"] - c0["wal_sync"]
            await probe.close()
        _analyse(rec, record, sc)
    except Exception as exc:
        rec["error"] = f"{type(exc).__name__}: {exc}"
        rec["worker_log_tail"] = workers[0].log_tail() if workers else ""
        for w in workers:
            w.kill()
    finally:
        await backend.drop()
        record.remove()
        for w in workers:
            if "error" not in rec and w.log_path.exists():
                w.log_path.unlink()
    return rec


# Server connections per database in front of the drain: a session pooler
# lends one per client for its lifetime, so it needs one for each connection
# a worker opens (DATABASE_POOL_SIZE, 20 by default); a transaction pooler
# needs only as many as run a transaction at once (a Supabase-sized pool).
POOLER_SERVER_CONNECTIONS = {"session": 40, "transaction": 15}


def start_pgbouncer(url: str, mode: str) -> Any:
    """The tests' PgBouncer (tests/support/pgbouncer.py) in front of ``url``'s server."""
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from support.pgbouncer import PgBouncer

    pooler = PgBouncer(url, mode, POOLER_SERVER_CONNECTIONS[mode])
    pooler.start()
    return pooler


async def _watch(
    sc: Scenario, record: RecordFile, workers: list[Worker], probe: Any, limit_s: float
) -> dict[str, Any]:
    """Follow the drain: ready markers, handler count, then the database."""
    pids = {w.pid: w for w in workers}
    cpu0: dict[int, float] = {}
    deadline = time.monotonic() + limit_s

    def check_alive() -> None:
        for w in workers:
            if w.proc is not None and w.proc.poll() is not None:
                raise RuntimeError(f"worker exited early (rc={w.proc.returncode})")

    def all_ready() -> bool:
        check_alive()
        for pid in record.scan_ready():
            if pid in pids and pid not in cpu0:
                cpu0[pid] = proc_cpu_seconds(pid) or 0.0
        return len(cpu0) >= len(workers)

    await wait_until(lambda: bool(record.scan_ready()), limit_s=90, what="a ready worker")
    mcpu0 = machine_cpu()
    await wait_until(all_ready, limit_s=90, what="all workers ready")

    def handled_all() -> bool:
        check_alive()
        return record.size_records() >= sc.n + len(workers)

    try:
        await wait_until(
            handled_all,
            limit_s=max(1.0, deadline - time.monotonic()),
            interval=0.01,
            what="handlers",
        )
    except TimeoutError:
        # Too slow to finish within the cap: report the rate of what got done.
        return _finish(sc, pids, cpu0, mcpu0, completed=sc.n - await probe.remaining())
    while await probe.remaining() > 0:
        if time.monotonic() > deadline:
            raise TimeoutError("events left unprocessed at the deadline")
        await asyncio.sleep(0.005)
    return _finish(sc, pids, cpu0, mcpu0, completed=sc.n)


def _finish(
    sc: Scenario,
    pids: dict[int, Worker],
    cpu0: dict[int, float],
    mcpu0: tuple[int, int],
    completed: int,
) -> dict[str, Any]:
    t_done = time.time()
    mcpu1 = machine_cpu()
    cpu = {pid: (proc_cpu_seconds(pid) or 0.0) - cpu0[pid] for pid in pids}
    rss = {pid: proc_status(pid).get("VmHWM", 0) for pid in pids}
    return {
        "t_done": t_done,
        "completed": completed == sc.n,
        "done": completed,
        "worker_cpu_s": rnd(sum(cpu.values()), 3),
        "worker_cpu_us_per_event": round(sum(cpu.values()) * 1e6 / max(1, completed)),
        "machine_cpu_busy": rnd((mcpu1[0] - mcpu0[0]) / max(1, mcpu1[1] - mcpu0[1]), 3),
        "peak_rss_mb": rnd(max(rss.values()) / 1024, 1),
        "peak_rss_mb_each": [rnd(v / 1024, 1) for v in rss.values()],
    }


def _analyse(rec: dict[str, Any], record: RecordFile, sc: Scenario) -> None:
    allrecs = record.all()
    ready = sorted(t for i, t in allrecs if i < 0)
    handled = [(i, t) for i, t in allrecs if i >= 0]
    if not ready or not handled:
        raise RuntimeError("no ready marker or no handler record")
    t0, t_done = ready[0], rec["t_done"]
    drain = t_done - t0
    rec.update(
        handler_calls=len(handled),
        unique=len({i for i, _ in handled}),
        drain_s=rnd(drain, 3),
        events_per_s=round(rec["done"] / drain),
        first_handler_after_ready_ms=rnd((min(t for _, t in handled) - t0) * 1000, 1),
        ready_spread_s=rnd(ready[-1] - ready[0], 3),
        order_violations=order_violations(handled, sc.aggregates),
    )
    starts: dict[int, list[float]] = {}
    for i, t in handled:
        starts.setdefault(i, []).append(t)
    gaps = sorted((max(ts) - min(ts)) * 1000 for ts in starts.values() if len(ts) > 1)
    if gaps:
        # A re-run after a lost lease comes >= LEASE_SECONDS later; a race, at once.
        rec["duplicates"] = len(handled) - len(starts)
        rec["duplicate_gap_ms_p50"] = rnd(gaps[len(gaps) // 2], 1)
        rec["duplicate_gap_ms_max"] = rnd(gaps[-1], 1)
    if len(ready) > 1:
        # Throughput once every worker is up (the first ones start alone).
        after = [t for _, t in handled if t >= ready[-1]]
        span = t_done - ready[-1]
        rec["after_all_ready_events_per_s"] = round(len(after) / span) if span > 0 else None
    rec.pop("t_done")


def summarize(records: list[dict[str, Any]]) -> str:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("kind") == "drain":
            groups[r["scenario"]].append(r)
    rows = []
    for label, rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        rows.append(
            [
                label,
                rs[0]["n"],
                f"{sum(r['completed'] for r in ok)}/{len(rs)}",
                fmt_med(r["events_per_s"] for r in ok),
                fmt_med(r.get("after_all_ready_events_per_s") for r in ok),
                fmt_med(r["worker_cpu_us_per_event"] for r in ok),
                fmt_med(r["machine_cpu_busy"] for r in ok),
                fmt_med([r["peak_rss_mb"] for r in ok], 1),
                fmt_med([r.get("xact_per_event") for r in ok], 3),
                fmt_med(r.get("wal_bytes_per_event") for r in ok),
                fmt_med(r["publish_events_per_s"] for r in ok),
                sum(
                    r["completed"] and (r["unique"] != r["n"] or r["handler_calls"] != r["n"])
                    for r in ok
                ),
                sum(r["order_violations"] for r in ok),
            ]
        )
    return table(
        [
            "scenario",
            "N",
            "runs done",
            "drain events/s",
            "after all ready/s",
            "worker CPU us/event",
            "machine CPU busy",
            "peak RSS MB",
            "commits/event",
            "WAL B/event",
            "publish events/s",
            "runs w/ dup or miss",
            "order violations",
        ],
        rows,
    )


def parse_env(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--env wants KEY=VALUE, got {item!r}")
        out[key.upper()] = value
    return out


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    base = parse_env(args.env)
    # --env-set A=1,B=2 (repeatable; "" = no change): one scenario per set, so
    # that settings are compared run by run under the same machine conditions.
    sets = [parse_env([x for x in s.split(",") if x]) for s in args.env_set] or [{}]
    poolers = args.poolers.split(",")
    if not set(poolers) <= {"none", "session", "transaction"}:
        raise SystemExit(f"--poolers takes none, session, transaction: {args.poolers!r}")
    out = []
    for backend in args.backends.split(","):
        workers = args.workers if backend == "pg" else args.sqlite_workers
        n = args.n if backend == "pg" else (args.sqlite_n or args.n)
        for ordering in args.orderings.split(","):
            aggs = args.aggregates if ordering == "aggregate" else 0
            for k in workers:
                for extra in sets:
                    for delay in args.delay_ms if backend == "pg" else [0.0]:
                        for pooler in poolers if backend == "pg" else ["none"]:
                            env = {**base, **extra}
                            out.append(Scenario(backend, ordering, k, n, aggs, env, delay, pooler))
    return out


def ints(s: str) -> list[int]:
    return [int(x) for x in s.split(",") if x.strip()]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=50_000, help="events per drain (default: 50000)")
    ap.add_argument("--backends", default="pg,sqlite", help="pg,sqlite (default: both)")
    ap.add_argument("--orderings", default="none,aggregate", help="none,aggregate (default)")
    ap.add_argument("--aggregates", type=int, default=1000, help="aggregate ids (default: 1000)")
    ap.add_argument("--workers", type=ints, default=[1, 2, 4], help="PG (default: 1,2,4)")
    ap.add_argument("--sqlite-workers", type=ints, default=[1], help="SQLite (default: 1)")
    ap.add_argument("--sqlite-n", type=int, default=None, help="events on SQLite (default: -n)")
    ap.add_argument("--runs", type=int, default=3, help="runs per scenario (default: 3)")
    ap.add_argument("--chunk", type=int, default=1000, help="events per publish call")
    ap.add_argument("--env", action="append", default=[], help="extra worker setting KEY=VALUE")
    ap.add_argument(
        "--env-set",
        action="append",
        default=[],
        help='a set of worker settings "A=1,B=2" to compare; repeat it ("" = defaults)',
    )
    ap.add_argument(
        "--delay-ms",
        type=lambda text: [float(x) for x in text.split(",") if x.strip()],
        default=[0.0],
        help="PG: round-trip times to add through a proxy, e.g. 0,5 (default: 0)",
    )
    ap.add_argument(
        "--poolers",
        default="none",
        help="PG: none,session,transaction: direct, or through PgBouncer (default: none)",
    )
    ap.add_argument("--timeout", type=float, default=300.0, help="cap per PG drain, seconds")
    ap.add_argument(
        "--sqlite-timeout",
        type=float,
        default=60.0,
        help="cap per SQLite drain, seconds; a drain that does not finish reports its rate",
    )
    ap.add_argument("--out", default=None, help="JSON lines file (default: bench/results/...)")
    return ap


async def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    results = Results("drain", sys.argv, args.out)
    await results.start()
    plan = scenarios(args)
    # Runs are interleaved (1st run of every scenario, then the 2nd...), so
    # that slow drifts of the shared machine spread over all scenarios.
    for run in range(1, args.runs + 1):
        for sc in plan:
            log(f"drain {sc.label} N={sc.n} run {run}/{args.runs}")
            cap = args.timeout if sc.backend == "pg" else args.sqlite_timeout
            rec = await measure_drain(sc, run=run, chunk=args.chunk, limit_s=cap)
            results.emit(rec)
            if "error" in rec:
                log(f"  FAILED: {rec['error']}\n{rec.get('worker_log_tail', '')}")
            else:
                log(
                    f"  {rec['done']}/{rec['n']} done, "
                    f"{rec['events_per_s']} events/s, RSS {rec['peak_rss_mb']} MB, "
                    f"{rec['worker_cpu_us_per_event']} us CPU/event"
                )
    print(summarize(results.records))
    print(f"\nJSON lines: {results.path}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
