"""A throwaway PostgreSQL cluster of a test's own, so it can be restarted freely."""

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found (Debian: apt-get install postgresql)"
        )
    return Path(found[-1]).parent


def free_port() -> int:
    """A loopback port nobody holds right now (bound to 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Cluster:
    def __init__(self) -> None:
        self.bindir = _bindir()
        self.port = free_port()
        self.datadir = Path(tempfile.mkdtemp(prefix="eventproc-cluster-"))
        self._as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_pg:
            shutil.chown(self.datadir, "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*self._as_pg, str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )

    def init(self) -> None:
        subprocess.run(
            [
                *self._as_pg,
                str(self.bindir / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                "postgres",
                "--auth=trust",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=120,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-w", "-l", str(self.datadir / "log"), "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-w", "-m", mode, "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)
