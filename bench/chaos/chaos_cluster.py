"""A throwaway PostgreSQL cluster for the chaos suite, so it can be restarted freely.

Its own data directory, port and socket directory under the system temp
directory; it listens on 127.0.0.1 only; nothing else is touched, and
:meth:`ThrowawayCluster.destroy` removes it all.

``initdb`` refuses to run as root, so when we are root it runs as the
``postgres`` OS user (``runuser -u postgres --``) and the data directory is
handed to that user. The server itself is started as a direct child process
(demoted to ``postgres`` by ``subprocess`` rather than through ``pg_ctl``,
which would detach it) with a parent-death signal: if the driver is killed
outright, the server shuts down instead of lingering.

Settings favour a shared machine: ``fsync=off`` (a restart here stops the
server, not the machine, so every acknowledged commit is still in the OS
page cache and survives even an immediate shutdown) and ``max_connections``
large enough for the workers, their replacements and a stopped worker's
connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

PG_BIN_ENV = "CHAOS_PG_BIN"
DEFAULT_PG_BIN = Path("/usr/lib/postgresql/15/bin")
PREFIX = "eventproc-chaos-"
OS_USER = "postgres"

SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "400",
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "64MB",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] ",
}

# How the server is stopped: pg_ctl's modes, as the postmaster's signals.
STOP_SIGNALS = {
    "smart": signal.SIGTERM,
    "fast": signal.SIGINT,
    "immediate": signal.SIGQUIT,  # no checkpoint: crash recovery on the next start
}


class ClusterError(RuntimeError):
    """The throwaway cluster could not be created, started or stopped."""


def find_pg_bin(explicit: str | Path | None = None) -> Path:
    """The directory holding ``initdb`` and ``postgres``; ClusterError if there is none."""
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    if os.environ.get(PG_BIN_ENV):
        candidates.append(Path(os.environ[PG_BIN_ENV]))
    candidates.append(DEFAULT_PG_BIN)
    candidates.extend(Path(p).parent for p in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    raise ClusterError(
        "PostgreSQL server binaries (initdb, postgres) not found; looked in "
        + ", ".join(str(c) for c in candidates)
        + f". Install them or set {PG_BIN_ENV}."
    )


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale(tmp: Path | None = None) -> list[Path]:
    """Remove clusters left by drivers that died (no live owner, no live server)."""
    removed = []
    for directory in Path(tmp or tempfile.gettempdir()).glob(PREFIX + "*"):
        try:
            owner = int((directory / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        server_pid = _postmaster_pid(directory / "data")
        if server_pid is not None and _alive(server_pid):
            continue
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed


def _postmaster_pid(data: Path) -> int | None:
    try:
        return int((data / "postmaster.pid").read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _die_with_parent() -> None:
    """In the child, after it became ``postgres``: shut down when the driver dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGQUIT)  # PR_SET_PDEATHSIG


class ThrowawayCluster:
    """``create()``, ``start()``, ``stop()``/``restart_async()``, ``destroy()``."""

    def __init__(self, pg_bin: str | Path | None = None, *, database: str = "chaos") -> None:
        self.bin = find_pg_bin(pg_bin)
        self.database = database
        self.root: Path | None = None
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._as_root = os.geteuid() == 0

    # -- paths and URLs ------------------------------------------------------

    @property
    def data(self) -> Path:
        assert self.root is not None, "create() first"
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None, "create() first"
        return self.root / "server.log"

    def url(self, database: str | None = None) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database or self.database}"

    # -- lifecycle -------------------------------------------------------------

    def create(self) -> None:
        """initdb into a fresh temp directory (as ``postgres`` when we are root)."""
        sweep_stale()
        self.root = Path(tempfile.mkdtemp(prefix=PREFIX))
        (self.root / "owner.pid").write_text(str(os.getpid()))
        command = [
            str(self.bin / "initdb"),
            "--pgdata",
            str(self.data),
            "--username",
            "postgres",
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
            "--no-instructions",
        ]
        if self._as_root:
            account = pwd.getpwnam(OS_USER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
            command = ["runuser", "-u", OS_USER, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise ClusterError(f"initdb failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def start(self, timeout: float = 60.0) -> None:
        """Start the server on a free loopback port and wait until it accepts connections."""
        for _ in range(3):  # the free port may be taken before the server binds it
            self.port = free_loopback_port()
            self._spawn()
            deadline = time.monotonic() + timeout
            while not self._ready():
                if self.process is not None and self.process.poll() is not None:
                    break
                if time.monotonic() > deadline:
                    raise ClusterError(f"server not ready after {timeout:g}s: {self.log_tail()}")
                time.sleep(0.05)
            else:
                return
            self.process = None
        raise ClusterError(f"server did not start: {self.log_tail()}")

    async def start_async(self, within: float = 60.0) -> None:
        """Start again on the same port (the workers' URL) without blocking the loop."""
        self._spawn()
        deadline = time.monotonic() + within
        while not self._ready():
            if self.process is not None and self.process.poll() is not None:
                raise ClusterError(f"server exited while starting: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise ClusterError(f"server not ready after {within:g}s: {self.log_tail()}")
            await asyncio.sleep(0.05)

    async def ensure_started_async(self, within: float = 60.0) -> None:
        """Running and ready again, e.g. after a restart that was interrupted half-way."""
        if self.process is None or self.process.poll() is not None:
            self.process = None
            await self.start_async(within)
            return
        deadline = time.monotonic() + within
        while not self._ready():
            if time.monotonic() > deadline:
                raise ClusterError(f"server not ready after {within:g}s: {self.log_tail()}")
            await asyncio.sleep(0.05)

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        self._signal_stop(mode)
        deadline = time.monotonic() + timeout
        while self.process is not None and self.process.poll() is None:
            if time.monotonic() > deadline:
                self.process.kill()
                self.process.wait(10)
                break
            time.sleep(0.05)
        self.process = None

    async def stop_async(self, mode: str = "immediate", within: float = 60.0) -> None:
        self._signal_stop(mode)
        deadline = time.monotonic() + within
        while self.process is not None and self.process.poll() is None:
            if time.monotonic() > deadline:
                raise ClusterError(f"server did not stop within {within:g}s")
            await asyncio.sleep(0.05)
        self.process = None

    async def restart_async(self, mode: str = "immediate", downtime: float = 0.0) -> None:
        """Stop (``immediate`` = as if it crashed), stay down ``downtime`` s, start again."""
        await self.stop_async(mode)
        await asyncio.sleep(downtime)
        await self.start_async()

    def destroy(self) -> None:
        """Stop the server (if running) and remove every file. Safe to call twice."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(Exception):
                self.stop("immediate", timeout=20)
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> ThrowawayCluster:
        self.create()
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # -- internals -------------------------------------------------------------

    def _spawn(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise ClusterError("server already running")
        assert self.root is not None, "create() first"
        command = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        command += ["-k", str(self.root)]
        for name, value in SERVER_SETTINGS.items():
            command += ["-c", f"{name}={value}"]
        demote: dict[str, Any] = {}
        if self._as_root:
            demote = {"user": OS_USER, "group": OS_USER, "extra_groups": []}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl+C reaches the driver, which stops us in order
                preexec_fn=_die_with_parent,
                **demote,
            )
        self.starts += 1

    def _ready(self) -> bool:
        """The postmaster writes ``ready`` into its pid file once it accepts connections."""
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return (
            len(lines) >= 8
            and self.process is not None
            and lines[0].strip() == str(self.process.pid)
            and lines[7].strip() == "ready"
        )

    def _signal_stop(self, mode: str) -> None:
        if mode not in STOP_SIGNALS:
            raise ValueError(f"stop mode must be one of {sorted(STOP_SIGNALS)}")
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(STOP_SIGNALS[mode])

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return "(no server log)"
        return " | ".join(text.strip().splitlines()[-lines:])
