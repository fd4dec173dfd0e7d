"""Shared pieces of the eventproc benchmarks (not part of the test suite).

Databases: each benchmark creates its own throwaway PostgreSQL database (name
starting with ``bench_``) on a loopback server, or a SQLite file under
``bench/results/tmp/``, and drops it afterwards. Nothing else is touched.

Workers: real ``eventproc worker`` processes from the main venv, with
``HANDLERS=handlers:registry`` and ``PYTHONPATH=bench`` (see handlers.py for
what they record).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime as dt
import json
import os
import platform
import signal
import statistics
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
TMP = RESULTS / "tmp"
VENV_BIN = ROOT / ".venv" / "bin"
RECORD = struct.Struct("<qd")  # keep in sync with handlers.py

PG_HOST = os.environ.get("BENCH_PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("BENCH_PGPORT", "5432"))
PG_USER = os.environ.get("BENCH_PGUSER", "postgres")
PG_PASSWORD = os.environ.get("BENCH_PGPASSWORD", "")
PG_ADMIN_DB = os.environ.get("BENCH_PGADMINDB", "postgres")

_LOOPBACK = ("127.", "localhost", "::1")


def _check_loopback() -> None:
    if not PG_HOST.startswith(_LOOPBACK):
        raise SystemExit(f"refusing a non-loopback PostgreSQL host: {PG_HOST}")


def pg_url(db: str) -> str:
    auth = PG_USER + (f":{PG_PASSWORD}" if PG_PASSWORD else "")
    return f"postgresql://{auth}@{PG_HOST}:{PG_PORT}/{db}"


def _check_name(db: str) -> None:
    if not db.startswith("bench_") or not db.replace("_", "").isalnum():
        raise ValueError(f"benchmark databases are named bench_*: {db!r}")


async def _admin_execute(sql: str) -> None:
    import asyncpg

    _check_loopback()
    conn = await asyncpg.connect(pg_url(PG_ADMIN_DB))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def recreate_pg_db(db: str) -> None:
    _check_name(db)
    await _admin_execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    await _admin_execute(f'CREATE DATABASE "{db}"')


async def drop_pg_db(db: str) -> None:
    _check_name(db)
    await _admin_execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


# ---------------------------------------------------------------------------
# backends


@dataclass
class Backend:
    """One throwaway database: PostgreSQL (``pg``) or a SQLite file (``sqlite``)."""

    kind: str  # "pg" | "sqlite"
    name: str = "bench_eventproc"
    path: Path | None = None

    @property
    def url(self) -> str:
        if self.kind == "pg":
            return pg_url(self.name)
        assert self.path is not None
        return f"sqlite:///{self.path}"

    async def create(self) -> None:
        if self.kind == "pg":
            await recreate_pg_db(self.name)
        else:
            TMP.mkdir(parents=True, exist_ok=True)
            self.path = TMP / f"{self.name}-{os.getpid()}.db"
            self._remove_files()

    async def drop(self) -> None:
        if self.kind == "pg":
            await drop_pg_db(self.name)
        else:
            self._remove_files()

    def _remove_files(self) -> None:
        if self.path is None:
            return
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{self.path}{suffix}").unlink()

    async def open_store(self) -> Any:
        from eventproc.store import open_store

        store = open_store(self.url)
        await store.migrate()
        return store

    async def connect(self) -> Probe:
        probe = Probe(self)
        await probe.open()
        return probe


class Probe:
    """A small side connection for counting what is left (and PG statistics)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.conn: Any = None

    async def open(self) -> None:
        if self.backend.kind == "pg":
            import asyncpg

            self.conn = await asyncpg.connect(self.backend.url)
        else:
            import sqlite3

            self.conn = sqlite3.connect(str(self.backend.path), isolation_level=None, timeout=30)

    async def close(self) -> None:
        if self.conn is None:
            return
        if self.backend.kind == "pg":
            await self.conn.close()
        else:
            self.conn.close()

    async def remaining(self) -> int:
        if self.backend.kind == "pg":
            return int(await self.conn.fetchval("SELECT count(*) FROM events WHERE NOT processed"))
        return int(
            self.conn.execute("SELECT count(*) FROM events WHERE processed = 0").fetchone()[0]
        )

    async def execute(self, sql: str) -> None:
        if self.backend.kind == "pg":
            await self.conn.execute(sql)
        else:
            self.conn.execute(sql)

    async def pg_counters(self) -> dict[str, int]:
        """Cluster WAL and this database's commits (PostgreSQL only; {} on SQLite)."""
        if self.backend.kind != "pg":
            return {}
        await self.conn.execute("SELECT pg_stat_clear_snapshot()")
        wal = await self.conn.fetchrow(
            "SELECT wal_bytes::bigint AS wal_bytes, wal_sync FROM pg_stat_wal"
        )
        xact = await self.conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return {"wal_bytes": int(wal["wal_bytes"]), "wal_sync": int(wal["wal_sync"]), "xact": xact}


# ---------------------------------------------------------------------------
# worker processes


def _die_with_parent() -> None:
    # Linux PR_SET_PDEATHSIG: the worker gets SIGTERM if the benchmark dies.
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


@dataclass
class Worker:
    """One ``eventproc worker`` process (optionally launched under py-spy)."""

    env: dict[str, str]
    log_path: Path
    launcher: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [*self.launcher, str(VENV_BIN / "eventproc"), "worker"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=str(TMP),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int:
        """The Python process that runs eventproc (the launcher's child if any)."""
        assert self.proc is not None
        if not self.launcher:
            return self.proc.pid
        for _ in range(200):
            kids = _children(self.proc.pid)
            if kids:
                return kids[0]
            time.sleep(0.01)
        raise RuntimeError("the launcher started no worker")

    def stop(self, grace: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            target = self.pid if self.launcher else self.proc.pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.wait()

    def kill(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


class DelayProxy:
    """A loopback TCP proxy that holds every chunk ``one_way_ms`` in each direction.

    Stands in for a database across a network (``drain.py --delay-ms``): every
    round trip of the workers gets ``2 * one_way_ms`` longer, in order. It runs
    in the benchmark's own event loop, which is otherwise mostly idle.
    """

    def __init__(self, target_port: int, one_way_ms: float) -> None:
        self.target_port = target_port
        self.delay = one_way_ms / 1000
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        _check_loopback()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(PG_HOST, self.target_port)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                if (wait := due - loop.time()) > 0:
                    await asyncio.sleep(wait)
                dst.write(data)

        sender = asyncio.create_task(deliver())
        try:
            while data := await src.read(65536):
                queue.put_nowait((loop.time() + self.delay, data))
        finally:
            queue.put_nowait((0.0, b""))
            await sender
            dst.close()


def worker_env(database_url: str, record_file: Path, **settings: str) -> dict[str, str]:
    """The environment of a benchmark worker: the caller's, plus eventproc settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        # eventproc reads these names; never let the caller's shell leak into a run
        if k.upper()
        not in {
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
            "WORKER_ID",
        }
    }
    env.update(
        DATABASE_URL=database_url,
        HANDLERS="handlers:registry",
        # bench/ for handlers.py; then the caller's PYTHONPATH (run_all.sh puts a
        # snapshot of src/ there, so that edits during a run do not mix versions)
        PYTHONPATH=os.pathsep.join(p for p in (str(BENCH), os.environ.get("PYTHONPATH")) if p),
        BENCH_RECORD_FILE=str(record_file),
    )
    env.update({k.upper(): str(v) for k, v in settings.items()})
    return env


def proc_status(pid: int) -> dict[str, int]:
    """VmHWM (peak RSS) and VmRSS in KiB."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs."""
    with open("/proc/stat") as fh:
        vals = [int(x) for x in fh.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return sum(vals) - idle, sum(vals)


# ---------------------------------------------------------------------------
# the handlers' record file


class RecordFile:
    """Reads what handlers.py appended: handler starts and ready markers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.ready: dict[int, float] = {}  # pid -> time
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(b"")

    def size_records(self) -> int:
        try:
            return self.path.stat().st_size // RECORD.size
        except FileNotFoundError:
            return 0

    def scan_ready(self) -> dict[int, float]:
        """Read new records incrementally, noting ready markers (cheap while small)."""
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            data = fh.read()
        usable = len(data) - len(data) % RECORD.size
        self._offset += usable
        for i, t in RECORD.iter_unpack(data[:usable]):
            if i < 0 and -i not in self.ready:
                self.ready[-i] = t
        return self.ready

    def all(self) -> list[tuple[int, float]]:
        data = self.path.read_bytes()
        usable = len(data) - len(data) % RECORD.size
        return list(RECORD.iter_unpack(data[:usable]))

    def handled(self) -> list[tuple[int, float]]:
        return [(i, t) for i, t in self.all() if i >= 0]

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


async def wait_until(
    predicate: Any, *, limit_s: float, interval: float = 0.005, what: str = "condition"
) -> None:
    """Poll a sync predicate; raise TimeoutError after ``limit_s`` seconds."""
    end = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {limit_s:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------------------
# numbers and output


def pct(vals: Sequence[float], p: float) -> float | None:
    if not vals:
        return None
    s = sorted(vals)
    k = (len(s) - 1) * p / 100.0
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def rnd(x: Any, nd: int = 2) -> Any:
    return round(x, nd) if isinstance(x, float) else x


def med(vals: Iterable[Any]) -> float | None:
    v = [x for x in vals if isinstance(x, int | float)]
    return statistics.median(v) if v else None


def fmt_med(vals: Iterable[Any], digits: int | None = None) -> str:
    """``median [min-max]`` of the numbers in ``vals``."""
    v = [x for x in vals if isinstance(x, int | float)]
    if not v:
        return ""
    m = statistics.median(v)
    if digits is None:
        digits = 0 if abs(m) >= 100 or all(isinstance(x, int) for x in v) else 2
    f = f"{{:.{digits}f}}"
    if len(v) == 1:
        return f.format(m)
    return f"{f.format(m)} [{f.format(min(v))}-{f.format(max(v))}]"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(r: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(r)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(list(headers)), sep, *(line(r) for r in cells)])


def stamp() -> str:
    return dt.datetime.now().strftime("%Y%m%d-%H%M%S")


class Results:
    """JSON lines in bench/results/<kind>-<stamp>.jsonl, first line a meta record."""

    def __init__(self, kind: str, argv: Sequence[str], out: str | None = None) -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.path = Path(out) if out else RESULTS / f"{kind}-{stamp()}.jsonl"
        self.records: list[dict[str, Any]] = []
        self.kind = kind
        self.argv = list(argv)

    async def start(self) -> None:
        meta = {"kind": "meta", "bench": self.kind, "argv": self.argv, **await environment()}
        self.emit(meta)

    def emit(self, rec: dict[str, Any]) -> None:
        rec.setdefault("ts", dt.datetime.now().isoformat(timespec="seconds"))
        self.records.append(rec)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(rec, default=str) + "\n")


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return rev + ("+dirty-src" if dirty else "")


async def environment() -> dict[str, Any]:
    """Machine, versions and PostgreSQL settings, for the meta record."""
    import importlib.metadata as md

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in _read_text("/proc/cpuinfo").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = {}
    for dist in ("eventproc", "sqlalchemy", "asyncpg", "aiosqlite", "pydantic"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            versions[dist] = "-"
    pg: dict[str, str] = {}
    with contextlib.suppress(Exception):
        import asyncpg

        conn = await asyncpg.connect(pg_url(PG_ADMIN_DB))
        try:
            rows = await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name = ANY($1)",
                [
                    "server_version",
                    "shared_buffers",
                    "synchronous_commit",
                    "fsync",
                    "wal_sync_method",
                    "max_connections",
                    "autovacuum",
                ],
            )
            pg = {r["name"]: r["setting"] for r in rows}
        finally:
            await conn.close()
    import sqlite3

    return {
        "eventproc_source": source_identity(),
        "machine": {
            "nproc": os.cpu_count(),
            "cpu_model": cpu,
            "kernel": platform.release(),
            "python": platform.python_version(),
            "loadavg": os.getloadavg(),
        },
        "versions": {**versions, "sqlite": sqlite3.sqlite_version},
        "postgres": pg,
        "git": git_revision(),
    }


def _read_text(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def source_identity() -> dict[str, str]:
    """Where eventproc is imported from, and a hash of its .py files (what ran)."""
    import hashlib
    import importlib.util

    spec = importlib.util.find_spec("eventproc")
    if spec is None or spec.origin is None:
        return {}
    pkg = Path(spec.origin).parent
    digest = hashlib.sha256()
    for f in sorted(pkg.rglob("*.py")):
        digest.update(str(f.relative_to(pkg)).encode())
        digest.update(f.read_bytes())
    return {"path": str(pkg), "sha256_12": digest.hexdigest()[:12]}


def load_jsonl(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    for p in paths:
        with open(p) as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def new_event_ids(n: int) -> list[uuid.UUID]:
    from eventproc.event import uuid7

    return [uuid7() for _ in range(n)]


def log(msg: str) -> None:
    print(f"# {time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)
