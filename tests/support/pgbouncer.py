"""A real PgBouncer (Debian's package) in front of a PostgreSQL server, on a free port.

Configured as a Supabase user meets one: no ``max_prepared_statements``
(absent from 1.18; with it unset PgBouncer keeps no client's prepared
statements), no ``ignore_startup_parameters``, and fewer server connections
than clients, so that clients really do share them. The tests never skip
without it (they fail, naming the package); the benchmarks and the chaos
run start theirs with the same class (no pytest in here).
"""

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from support.cluster import free_port

BINARY = "/usr/sbin/pgbouncer"
SERVER_CONNECTIONS = 8  # per database and user: far fewer than the clients tests open


class PgBouncerError(RuntimeError):
    """PgBouncer is not installed, or did not start (the message holds its log)."""


class PgBouncer:
    """One PgBouncer in ``mode`` in front of the server of ``target`` (any URL of it)."""

    def __init__(
        self, target: str, mode: str = "transaction", pool_size: int = SERVER_CONNECTIONS
    ) -> None:
        self.target = make_url(target)
        self.mode = mode
        self.pool_size = pool_size
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix=f"eventproc-pgbouncer-{mode}-"))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, database_url: str, **query: str) -> str:
        """``database_url`` (a database of the target server) through here, plus ``query``."""
        url = make_url(database_url).set(host="127.0.0.1", port=self.port)
        url = url.update_query_dict(query)
        return url.render_as_string(hide_password=False)

    def start(self) -> None:
        if not os.path.exists(BINARY):
            raise PgBouncerError(
                f"{BINARY} not found: install PgBouncer (Debian: apt-get install -y pgbouncer)"
            )
        self.port = free_port()
        config = self.dir / "pgbouncer.ini"
        config.write_text(self._config())
        command = [BINARY, str(config)]
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            shutil.chown(self.dir, "postgres")
            command[1:1] = ["-u", "postgres"]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self._wait_listening()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
            self._process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def _config(self) -> str:
        target = self.target
        server = f"host={target.host or '127.0.0.1'} port={target.port or 5432}"
        server += f" user={target.username or 'postgres'}"
        if target.password:
            server += f" password={target.password}"
        return "\n".join(
            [
                "[databases]",
                f"* = {server}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "auth_type = any",  # logs in as the [databases] user (the server trusts it)
                f"pool_mode = {self.mode}",
                f"default_pool_size = {self.pool_size}",
                "max_client_conn = 1000",
                f"logfile = {self.dir / 'pgbouncer.log'}",
                f"pidfile = {self.dir / 'pgbouncer.pid'}",
                "",
            ]
        )

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise PgBouncerError(f"PgBouncer exited at start-up:\n{self.log}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return
            time.sleep(0.05)
        raise PgBouncerError(f"PgBouncer did not listen within 10 s:\n{self.log}")


@contextlib.contextmanager
def running(
    target: str, mode: str = "transaction", pool_size: int = SERVER_CONNECTIONS
) -> Iterator[PgBouncer]:
    """A started PgBouncer, stopped (and its directory removed) at the end."""
    pooler = PgBouncer(target, mode, pool_size)
    try:
        pooler.start()
        yield pooler
    finally:
        pooler.stop()
