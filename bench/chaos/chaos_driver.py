"""The chaos run: workers, a publisher, faults at seeded moments, then the checks.

``run_chaos(config)`` does everything and always cleans up (workers killed,
throwaway cluster stopped and removed), also when cancelled (Ctrl+C) or on
an error. It is used by ``run.py`` (the command) and by tests/chaos.

Faults are scheduled by progress, not by clock: each one fires when the
share of published events that reached a final state passes a point drawn
(seeded) from ``fault_window``. The same seed gives the same schedule on any
machine, and every fault lands while events are being processed, however
fast or slow the machine is. Victims are a seeded choice among the workers
that hold leases at that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import chaos_checks
from chaos_cluster import ThrowawayCluster
from chaos_handlers import HEALTHY_HANDLERS, SCHEMA
from chaos_workload import FLAKY_MODES, FanMix, Mix, Planned, plan, plan_fanout

from eventproc.config import Settings
from eventproc.errors import StoreError
from eventproc.store import open_store
from eventproc.store.postgres.url import Pooler

CHAOS_DIR = Path(__file__).resolve().parent
WORKER_READY_SECONDS = 90.0
SHUTDOWN_GRACE_SECONDS = 5.0
SETUP_AND_TEARDOWN_SECONDS = 300.0  # on top of duration_limit: the run's hard bound
MONITOR_INTERVAL = 0.2
DUMPED_TABLES = (
    "events",
    "event_deliveries",
    "event_dead_letters",
    "chaos_journal",
    "chaos_transitions",
    "chaos_effects",
    "chaos_workers",
)

# Every variable eventproc reads: none of the caller's may leak into a worker.
_SETTING_NAMES = {name.upper() for name in Settings.model_fields} | {"NODE_ENV"}

Log = Callable[[str], None]


@dataclass
class ChaosConfig:
    workers: int = 4
    events: int = 50_000
    aggregates: int = 500
    kills: int = 10
    stops: int = 1
    restarts: int = 1
    duration_limit: float = 900.0  # seconds from the first publish to giving up
    seed: int = 1
    ordering: str = "aggregate"
    lease_seconds: float = 5.0
    stop_seconds: float | None = None  # how long a SIGSTOP lasts; default 2 x lease + 1
    restart_downtime: float = 2.0
    restart_mode: str = "immediate"  # as if the server crashed; or "fast"
    concurrency: int = 16
    max_retries: int = 8
    retry_base_ms: int = 20
    retry_max_ms: int = 400
    poll_interval_ms: int = 500
    backlog: int = 5_000  # the publisher keeps at most this many events pending
    publish_batch: int = 500
    fault_window: tuple[float, float] = (0.2, 0.85)
    # "default": chaos.plain / chaos.tx, one subscription each; "fanout": one
    # type taken by fast, flaky and slow (chaos_handlers), flaky as ``flaky`` says.
    workload: str = "default"
    flaky: str = "failing"  # fanout: failing | quiet (never fails) | absent (not subscribed)
    mix: Mix = field(default_factory=Mix)
    fan_mix: FanMix = field(default_factory=FanMix)
    workdir: Path | None = None  # worker logs (default: inside the cluster's temp dir)
    dump: bool = False  # copy the tables to workdir as CSV (always done when a check fails)
    pg_bin: str | None = None
    # Workers and the publisher through a real PgBouncer in transaction mode
    # (tests/support/pgbouncer.py; POOLER=transaction); the checks stay direct.
    pgbouncer: bool = False

    def __post_init__(self) -> None:
        if self.workload not in ("default", "fanout"):
            raise ValueError(f"workload must be default or fanout, got {self.workload!r}")
        if self.flaky not in FLAKY_MODES:
            raise ValueError(f"flaky must be one of {FLAKY_MODES}, got {self.flaky!r}")

    @property
    def stop_for(self) -> float:
        return self.stop_seconds if self.stop_seconds is not None else 2 * self.lease_seconds + 1

    @property
    def registry_name(self) -> str:
        """The workers' ``HANDLERS=chaos_handlers:<this>``."""
        if self.workload == "default":
            return "registry"
        return "fanout_without_flaky" if self.flaky == "absent" else "fanout"

    @property
    def healthy(self) -> tuple[str, ...]:
        """Handlers whose throughput is reported apart (the fan-out's healthy ones)."""
        return HEALTHY_HANDLERS if self.workload == "fanout" else ()

    def plan(self) -> list[Planned]:
        if self.workload == "fanout":
            return plan_fanout(self.events, self.aggregates, self.seed, self.fan_mix, self.flaky)
        return plan(self.events, self.aggregates, self.seed, self.mix)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["workdir"] = str(self.workdir) if self.workdir else None
        data["stop_seconds"] = self.stop_for
        return data


@dataclass
class Fault:
    kind: str  # kill | stop | restart
    at_progress: float  # planned: share of events final when it fires
    fired_progress: float | None = None
    started: float | None = None  # wall clock
    finished: float | None = None
    detail: str = ""

    @property
    def done(self) -> bool:
        return self.finished is not None


@dataclass
class Worker:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    started: float
    ended: float | None = None
    returncode: int | None = None
    fate: str = "running"  # running, killed, exited on its own, stopping, stopped (rc)


@dataclass
class ChaosResult:
    config: ChaosConfig
    report: chaos_checks.Report
    faults: list[Fault]
    workers: list[Worker]
    publish_started: float
    finished: float
    timeline: list[tuple[float, int, int]]  # (seconds, published, final)
    server_log_tail: str = ""

    @property
    def passed(self) -> bool:
        return self.report.passed

    def as_json(self) -> dict[str, Any]:
        return {
            "config": self.config.as_json(),
            "report": self.report.as_json(),
            "faults": [
                {
                    "kind": f.kind,
                    "at_progress": round(f.at_progress, 3),
                    "fired_progress": f.fired_progress,
                    "at_s": _rel(f.started, self.publish_started),
                    "took_s": _rel(f.finished, f.started),
                    "detail": f.detail,
                }
                for f in self.faults
            ],
            "workers": [
                {
                    "name": w.name,
                    "pid": w.process.pid,
                    "fate": w.fate,
                    "returncode": w.returncode,
                    "started_s": _rel(w.started, self.publish_started),
                    "ended_s": _rel(w.ended, self.publish_started),
                    "log": str(w.log),
                }
                for w in self.workers
            ],
            "timeline": self.timeline,
            "server_log_tail": self.server_log_tail,
        }


def _rel(moment: float | None, origin: float | None) -> float | None:
    if moment is None or origin is None:
        return None
    return round(moment - origin, 3)


class Progress:
    """Published and final counts, sampled from the database by ``monitor``."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.published = 0
        self.final = 0
        self.samples: list[tuple[float, int, int]] = []
        self._changed = asyncio.Event()

    @property
    def fraction(self) -> float:
        return self.final / self.total if self.total else 1.0

    @property
    def complete(self) -> bool:
        return self.published == self.total and self.final == self.total

    def update(self, final: int, sample: tuple[float, int, int]) -> None:
        self.final = final
        self.samples.append(sample)
        self._changed.set()
        self._changed = asyncio.Event()

    async def reached(self, fraction: float) -> None:
        while self.fraction < fraction:
            await self._changed.wait()


class Workers:
    """The worker processes: spawned, killed, stopped, replaced, watched."""

    def __init__(
        self, url: str, config: ChaosConfig, logdir: Path, log: Log, worker_url: str | None = None
    ) -> None:
        self.url = url  # direct: the harness's own connections
        self.worker_url = worker_url or url  # what the workers get as DATABASE_URL
        self.config = config
        self.logdir = logdir
        self.say = log
        self.all: list[Worker] = []
        self.stopped: set[str] = set()
        self._count = 0

    def env(self, name: str) -> dict[str, str]:
        config = self.config
        env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTING_NAMES}
        env.update(
            DATABASE_URL=self.worker_url,
            CHAOS_JOURNAL_URL=self.url,  # the journal is the harness's, never pooled
            HANDLERS=f"chaos_handlers:{config.registry_name}",
            PYTHONPATH=os.pathsep.join(filter(None, [str(CHAOS_DIR), env.get("PYTHONPATH")])),
            WORKER_ID=name,
            CHAOS_DRIVER_PID=str(os.getpid()),
            LEASE_SECONDS=str(config.lease_seconds),
            POLL_INTERVAL_MS=str(config.poll_interval_ms),
            CONCURRENCY=str(config.concurrency),
            ORDERING=config.ordering,
            MAX_RETRIES=str(config.max_retries),
            RETRY_BASE_MS=str(config.retry_base_ms),
            RETRY_MAX_MS=str(config.retry_max_ms),
            HANDLER_TIMEOUT_SECONDS="30",
            SHUTDOWN_GRACE_SECONDS=str(SHUTDOWN_GRACE_SECONDS),
            LOG_FORMAT="text",
            LOG_LEVEL="warning",
        )
        if config.pgbouncer:
            env["POOLER"] = "transaction"
        return env

    def spawn(self) -> Worker:
        name = f"w{self._count:02d}"
        self._count += 1
        log = self.logdir / f"worker-{name}.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "eventproc", "worker"],
                env=self.env(name),
                cwd=self.logdir,  # no stray .env
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl+C reaches the driver only
            )
        worker = Worker(name, process, log, time.time())
        self.all.append(worker)
        return worker

    def running(self) -> list[Worker]:
        return [w for w in self.all if w.fate == "running" and w.process.poll() is None]

    def candidates(self) -> list[Worker]:
        """Victims for the next fault: running and not currently stopped."""
        return [w for w in self.running() if w.name not in self.stopped]

    async def wait_ready(self, names: list[str], within: float) -> None:
        deadline = time.monotonic() + within
        conn = await asyncpg.connect(self.url, timeout=10)
        try:
            while True:
                ready = {r["name"] for r in await conn.fetch("SELECT name FROM chaos_workers")}
                if set(names) <= ready:
                    return
                for worker in self.all:
                    if worker.name in names and worker.process.poll() is not None:
                        raise RuntimeError(f"{worker.name} exited at start: {_tail(worker)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not ready after {within:g}s: {set(names) - ready}")
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    async def kill(self, worker: Worker) -> None:
        worker.fate = "killed"
        worker.process.send_signal(signal.SIGKILL)
        await _reap(worker, within=30)

    async def stop_for(self, worker: Worker, seconds: float) -> None:
        """SIGSTOP, wait (past the lease), SIGCONT."""
        self.stopped.add(worker.name)
        worker.process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGCONT)
            self.stopped.discard(worker.name)

    async def watch(self) -> None:
        """Replace workers that exit on their own (and count them: they should not)."""
        while True:
            for worker in list(self.all):
                if worker.fate == "running" and worker.process.poll() is not None:
                    worker.fate = "exited on its own"
                    worker.returncode = worker.process.returncode
                    worker.ended = time.time()
                    self.say(f"  ! {worker.name} exited on its own ({worker.returncode})")
                    self.spawn()
            await asyncio.sleep(0.5)

    async def stop_all(self) -> None:
        """SIGTERM everyone (they finish what runs within the grace), then SIGKILL stragglers.

        A replacement started moments before the end may still be importing
        Python, before any code of ours can catch a signal: each is given
        the time to start first, so that what is judged is its shutdown.
        """
        with contextlib.suppress(RuntimeError):  # one that does not start is reported
            await self.wait_ready([w.name for w in self.running()], WORKER_READY_SECONDS)
        for worker in self.all:
            if worker.fate == "running" and worker.process.poll() is not None:
                worker.fate = "exited on its own"  # since the last look of watch()
        for worker in self.running():
            worker.process.send_signal(signal.SIGCONT)
            worker.process.send_signal(signal.SIGTERM)
            worker.fate = "stopping"
        stragglers = [w for w in self.all if w.fate == "stopping"]
        await asyncio.gather(*(_reap(w, SHUTDOWN_GRACE_SECONDS + 20) for w in stragglers))
        for worker in stragglers:
            worker.fate = "stopped" if worker.returncode == 0 else f"stopped ({worker.returncode})"

    def kill_all_now(self) -> None:
        """Synchronous last resort (errors, Ctrl+C): nothing may outlive the run."""
        for worker in self.all:
            if worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGCONT)
                    worker.process.kill()
        for worker in self.all:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(10)
            if worker.returncode is None:
                worker.returncode = worker.process.returncode
                worker.ended = worker.ended or time.time()

    def unexpected_exits(self) -> list[Worker]:
        return [
            w for w in self.all if w.fate == "exited on its own" or w.fate.startswith("stopped (")
        ]


async def _reap(worker: Worker, within: float) -> None:
    deadline = time.monotonic() + within
    while worker.process.poll() is None:
        if time.monotonic() > deadline:
            worker.process.kill()
            worker.process.wait(10)
            break
        await asyncio.sleep(0.05)
    worker.returncode = worker.process.returncode
    worker.ended = time.time()


def _tail(worker: Worker, lines: int = 10) -> str:
    try:
        return " | ".join(worker.log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ChaosRun:
    def __init__(self, config: ChaosConfig, log: Log) -> None:
        self.config = config
        self.say = log
        self.cluster = ThrowawayCluster(config.pg_bin)
        self.planned: list[Planned] = []
        self.published: set[uuid.UUID] = set()
        self.progress = Progress(config.events)
        self.faults = self._schedule()
        self.workers: Workers | None = None
        self.publish_started = 0.0
        self.pooler: Any = None  # the PgBouncer in front of the workers (--pgbouncer)

    def _schedule(self) -> list[Fault]:
        rng = random.Random(f"chaos-faults-{self.config.seed}")
        low, high = self.config.fault_window
        faults = []
        for kind, count in (
            ("kill", self.config.kills),
            ("stop", self.config.stops),
            ("restart", self.config.restarts),
        ):
            faults += sorted(
                (Fault(kind, rng.uniform(low, high)) for _ in range(count)),
                key=lambda f: f.at_progress,
            )
        return faults

    # -- the run ---------------------------------------------------------------

    async def execute(self) -> ChaosResult:
        config = self.config
        try:
            self.cluster.create()
            self.cluster.start()
            url = self.cluster.url()
            self.say(f"throwaway PostgreSQL on 127.0.0.1:{self.cluster.port} ({self.cluster.root})")
            await self._prepare_database()
            logdir = config.workdir or (self.cluster.root / "logs")  # type: ignore[operator]
            logdir.mkdir(parents=True, exist_ok=True)
            worker_url = url
            if config.pgbouncer:
                self.pooler = start_pgbouncer(url)
                worker_url = self.pooler.url(url)
                self.say(f"PgBouncer (transaction mode) on 127.0.0.1:{self.pooler.port}")
            self.workers = Workers(url, config, logdir, self.say, worker_url)
            self.planned = config.plan()
            first = [self.workers.spawn() for _ in range(config.workers)]
            await self.workers.wait_ready([w.name for w in first], WORKER_READY_SECONDS)
            self.say(f"{config.workers} workers ready; publishing {config.events:,} events")
            await self._main_phase(worker_url)
            await self.workers.stop_all()
            observed = await chaos_checks.fetch(url)
            report = chaos_checks.analyse(
                observed,
                self.planned,
                self.published,
                ordered=config.ordering == "aggregate",
                publish_started=self.publish_started,
                fault_times=[f.started for f in self.faults if f.started is not None],
                healthy=config.healthy,
            )
            self._add_run_checks(report)
            if config.dump or not report.passed:
                await self._dump(url, logdir)
            return ChaosResult(
                config,
                report,
                self.faults,
                self.workers.all,
                self.publish_started,
                time.time(),
                self.progress.samples,
                self.cluster.log_tail(),
            )
        finally:
            if self.workers is not None:
                self.workers.kill_all_now()
            if self.pooler is not None:
                with contextlib.suppress(OSError):
                    shutil.copy(self.pooler.dir / "pgbouncer.log", logdir / "pgbouncer.log")
                self.pooler.stop()
            if config.workdir is not None and self.cluster.root is not None:
                with contextlib.suppress(OSError):
                    shutil.copy(self.cluster.log_path, config.workdir / "postgresql.log")
            self.cluster.destroy()

    async def _prepare_database(self) -> None:
        admin = await asyncpg.connect(self.cluster.url("postgres"), timeout=10)
        try:
            await admin.execute(f'CREATE DATABASE "{self.cluster.database}"')
        finally:
            await admin.close()
        store = open_store(self.cluster.url())
        try:
            await store.migrate()
        finally:
            await store.close()
        conn = await asyncpg.connect(self.cluster.url(), timeout=10)
        try:
            await conn.execute(SCHEMA)
        finally:
            await conn.close()

    async def _dump(self, url: str, directory: Path) -> None:
        """Keep the evidence of a failed run: every table the checks read, as CSV."""
        conn = await asyncpg.connect(url, timeout=10)
        try:
            for table in DUMPED_TABLES:
                await conn.copy_from_table(
                    table, output=str(directory / f"{table}.csv"), format="csv", header=True
                )
        finally:
            await conn.close()
        self.say(f"tables dumped to {directory}")

    async def _main_phase(self, url: str) -> None:
        """``url``: what the publisher uses (through the pooler with --pgbouncer)."""
        assert self.workers is not None
        self.publish_started = time.time()
        deadline = self.publish_started + self.config.duration_limit
        side = [
            asyncio.create_task(self._monitor(self.cluster.url()), name="chaos-monitor"),
            asyncio.create_task(self.workers.watch(), name="chaos-watch"),
        ]
        publisher = asyncio.create_task(self._publish(url), name="chaos-publisher")
        faults = [
            asyncio.create_task(self._faults(kind), name=f"chaos-{kind}s")
            for kind in ("kill", "stop", "restart")
        ]
        try:
            while not (self.progress.complete and all(t.done() for t in faults)):
                for task in [publisher, *faults]:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                if time.time() > deadline:
                    self.say(f"time limit of {self.config.duration_limit:g}s reached")
                    break
                await asyncio.sleep(0.1)
        finally:
            for task in [publisher, *faults, *side]:
                task.cancel()
            await asyncio.gather(publisher, *faults, *side, return_exceptions=True)
            await self.cluster.ensure_started_async()  # a restart may have been cut short
        self.say(
            f"done after {time.time() - self.publish_started:.1f}s: "
            f"{self.progress.final:,}/{self.progress.published:,} final"
        )

    async def _publish(self, url: str) -> None:
        store = open_store(
            url,
            worker_name="chaos-publisher",
            pool_size=3,
            listen=False,
            pooler=Pooler.TRANSACTION if self.config.pgbouncer else None,
        )
        batch_size = self.config.publish_batch
        try:
            index = 0
            while index < len(self.planned):
                if self.progress.published - self.progress.final >= self.config.backlog:
                    await asyncio.sleep(0.05)
                    continue
                batch = self.planned[index : index + batch_size]
                try:
                    # Ids are given, so a retry of a batch that did commit adds nothing.
                    await store.event_insert_many([p.event for p in batch])
                except StoreError as exc:
                    self.say(f"  publisher: {exc}; retrying")
                    await asyncio.sleep(0.5)
                    continue
                self.published.update(p.event.id for p in batch)
                index += len(batch)
                self.progress.published = index
        finally:
            await store.close()

    async def _monitor(self, url: str) -> None:
        """Sample how many published events are final (while the database is up)."""
        conn: asyncpg.Connection | None = None
        try:
            while True:
                try:
                    if conn is None or conn.is_closed():
                        conn = await asyncpg.connect(url, timeout=3)
                    published = self.progress.published
                    pending = await conn.fetchval(
                        "SELECT count(*) FROM events WHERE NOT processed", timeout=5
                    )
                    final = max(published - pending, 0)
                    elapsed = round(time.time() - self.publish_started, 2)
                    self.progress.update(final, (elapsed, published, final))
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                    if conn is not None:
                        conn.terminate()
                    conn = None
                await asyncio.sleep(MONITOR_INTERVAL)
        finally:
            if conn is not None:
                conn.terminate()

    async def _faults(self, kind: str) -> None:
        assert self.workers is not None
        rng = random.Random(f"chaos-victims-{kind}-{self.config.seed}")
        for fault in (f for f in self.faults if f.kind == kind):
            await self.progress.reached(fault.at_progress)
            fault.fired_progress = round(self.progress.fraction, 3)
            fault.started = time.time()
            at = fault.started - self.publish_started
            if kind == "restart":
                self.say(f"  {at:6.1f}s restart PostgreSQL ({self.config.restart_mode})")
                await self.cluster.restart_async(
                    self.config.restart_mode, self.config.restart_downtime
                )
                fault.detail = f"{self.config.restart_mode}, down {self.config.restart_downtime:g}s"
            elif kind == "kill":
                victim = await self._victim(rng)
                await self.workers.kill(victim)
                replacement = self.workers.spawn()
                fault.detail = f"SIGKILL {victim.name}, started {replacement.name}"
                self.say(f"  {at:6.1f}s {fault.detail}")
            else:
                victim = await self._victim(rng)
                fault.detail = f"SIGSTOP {victim.name} for {self.config.stop_for:g}s"
                self.say(f"  {at:6.1f}s {fault.detail}")
                await self.workers.stop_for(victim, self.config.stop_for)
                fault.detail += ", then SIGCONT"
            fault.finished = time.time()

    async def _victim(self, rng: random.Random) -> Worker:
        """A random worker among those holding leases right now (so the fault hits
        work in progress); any running one if that cannot be told (database down)."""
        assert self.workers is not None
        while True:
            candidates = sorted(self.workers.candidates(), key=lambda w: w.name)
            busy = await self._busy_workers()
            if any(w.name in busy for w in candidates):
                candidates = [w for w in candidates if w.name in busy]
            if candidates:
                return rng.choice(candidates)
            await asyncio.sleep(0.1)

    async def _busy_workers(self) -> set[str]:
        try:
            conn = await asyncpg.connect(self.cluster.url(), timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return set()
        try:
            rows = await conn.fetch(
                "SELECT split_part(locked_by, ':', 1) AS worker FROM events "
                "WHERE NOT processed AND locked_until > now() "
                "UNION SELECT split_part(locked_by, ':', 1) FROM event_deliveries "
                "WHERE status = 'pending' AND locked_until > now()",
                timeout=5,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            return set()
        finally:
            conn.terminate()
        return {row["worker"] for row in rows}

    def _add_run_checks(self, report: chaos_checks.Report) -> None:
        assert self.workers is not None
        unexpected = self.workers.unexpected_exits()
        report.checks.append(
            chaos_checks.Check(
                "worker_exits",
                "workers that died or failed to stop cleanly on their own",
                len(unexpected),
                True,
            )
        )
        for worker in unexpected:
            report.examples.setdefault("worker_exits", []).append(
                f"{worker.name} ({worker.fate}): {_tail(worker, 5)}"
            )
        missed = sum(1 for f in self.faults if not f.done)
        report.checks.append(
            chaos_checks.Check("faults_missed", "planned faults not performed", missed, True)
        )


def start_pgbouncer(url: str) -> Any:
    """The tests' PgBouncer (no prepared-statement support, as 1.18) in front of ``url``."""
    tests = str(CHAOS_DIR.parents[1] / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from support.pgbouncer import PgBouncer

    pooler = PgBouncer(url, "transaction")
    pooler.start()
    return pooler


async def run_chaos(config: ChaosConfig, log: Log = print) -> ChaosResult:
    """One chaos run; raises TimeoutError if even setup and teardown overrun their bound."""
    async with asyncio.timeout(config.duration_limit + SETUP_AND_TEARDOWN_SECONDS):
        return await ChaosRun(config, log).execute()


def format_result(result: ChaosResult) -> str:
    """The summary table (Markdown, so that the README can quote it as printed)."""
    config, report = result.config, result.report
    out, done = report.outcomes, _faults_done(result.faults)
    workload = "default workload"
    if config.workload == "fanout":
        workload = f"fan-out workload ({config.registry_name}, flaky {config.flaky})"
    lines = [
        f"eventproc chaos run, {workload}: {config.workers} workers, {out['planned']:,} events "
        f"({out['deliveries_planned']:,} deliveries) over {config.aggregates:,} aggregates, "
        f"ORDERING={config.ordering}, lease {config.lease_seconds:g}s, seed {config.seed}",
        f"faults: {done['kill']}/{config.kills} SIGKILLs (each worker replaced), "
        f"{done['stop']}/{config.stops} SIGSTOPs for {config.stop_for:g}s, "
        f"{done['restart']}/{config.restarts} PostgreSQL restarts "
        f"({config.restart_mode}, down {config.restart_downtime:g}s); "
        f"failures injected into {out['injected_failures']:,} events",
        "",
        "| | count | must be |",
        "|---|---:|:---:|",
        f"| events published | {out['published']:,} | {out['planned']:,} |",
        f"| deliveries succeeded | {out['succeeded']:,} | |",
        f"| deliveries dead-lettered as injected (always failing, permanent) "
        f"| {out['dead_lettered_expected']:,} | |",
        f"| events processed: succeeded / partial / dead-lettered | "
        f"{out['events_succeeded']:,} / {out['events_partial']:,} / "
        f"{out['events_dead_lettered']:,} | |",
    ]
    for check in report.checks:
        verdict = "0" if check.enforced else "(not required)"
        mark = "" if check.ok else " **FAIL**"
        lines.append(f"| {check.label} | {check.value:,}{mark} | {verdict} |")
    lines += _throughput_rows(report.throughput)
    activity = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in report.activity.items())
    lines += ["", f"activity: {activity}"]
    for key, examples in report.examples.items():
        lines.append(f"examples of {key}: " + "; ".join(examples))
    verdict = "PASS" if report.passed else f"FAIL: {report.violations}"
    lines.append(f"RESULT: {verdict}")
    return "\n".join(lines)


def _throughput_rows(speed: dict[str, Any]) -> list[str]:
    lines = []
    if speed.get("overall_per_s") is not None:
        lines.append(
            f"| throughput, whole run ({speed['seconds']:g} s) | "
            f"{speed['overall_per_s']:,.0f} events/s | |"
        )
    if speed.get("fault_free_per_s") is not None:
        lines += [
            f"| throughput before the first fault ({speed['fault_free_seconds']:g} s) | "
            f"{speed['fault_free_per_s']:,.0f} events/s | |",
            f"| throughput from the first fault to the end | "
            f"{speed['under_faults_per_s']:,.0f} events/s "
            f"({speed.get('held', 0):.0%} held) | |",
        ]
    if speed.get("longest_stall_s") is not None:
        stall = speed["longest_stall_s"]
        lines.append(f"| longest time without an event finishing | {stall} s | |")
    per_handler = speed.get("deliveries_per_s") or {}
    if len(per_handler) > 1:
        rates = ", ".join(f"{name} {rate:,.0f}" for name, rate in per_handler.items() if rate)
        lines.append(f"| deliveries/s per handler, whole run | {rates} | |")
    healthy = speed.get("healthy")
    if healthy and healthy.get("overall_per_s") is not None:
        names = " + ".join(healthy["handlers"])
        lines.append(
            f"| healthy handlers ({names}), whole run ({healthy['seconds']:g} s) | "
            f"{healthy['overall_per_s']:,.0f} deliveries/s | |"
        )
        if healthy.get("under_faults_per_s") is not None:
            lines.append(
                f"| healthy handlers before the first fault / from it to the end | "
                f"{healthy['fault_free_per_s']:,.0f} / {healthy['under_faults_per_s']:,.0f} "
                f"deliveries/s | |"
            )
        waits = healthy.get("latency_ms", {})
        failing, calm = waits.get("beside_a_failure", {}), waits.get("beside_no_failure", {})
        if failing.get("deliveries") and calm.get("deliveries"):
            lines.append(
                "| healthy deliveries' time from routing to done, median / p90: events whose "
                "other delivery failed / the others | "
                f"{failing['median']:,.0f} / {failing['p90']:,.0f} ms "
                f"({failing['deliveries']:,}) / {calm['median']:,.0f} / {calm['p90']:,.0f} ms "
                f"({calm['deliveries']:,}) | |"
            )
    return lines


def _faults_done(faults: list[Fault]) -> dict[str, int]:
    done = {"kill": 0, "stop": 0, "restart": 0}
    for fault in faults:
        if fault.done:
            done[fault.kind] += 1
    return done
