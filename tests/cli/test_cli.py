"""The `eventproc` command, run as a real subprocess."""

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from eventproc.event import NewEvent
from eventproc.store import open_store
from support.proxy import Proxy
from support.waiting import eventually

TESTS = Path(__file__).resolve().parents[1]


def env(**values: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HANDLERS")}
    base.update(PYTHONPATH=str(TESTS), HANDLERS="support.handlers:registry")
    base.update(values)
    return base


async def eventproc(*args: str, **values: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventproc",
        *args,
        env=env(**values),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_help_explains_each_command() -> None:
    code, out, _ = await eventproc("--help")
    assert code == 0
    for command in ("run", "worker", "migrate", "publish"):
        assert command in out
    code, out, _ = await eventproc("run", "--help")
    assert code == 0 and "SIGTERM" in out


async def test_flags_in_help_take_no_value() -> None:
    for command in ((), ("run",), ("worker",), ("migrate",), ("publish",), ("demo",)):
        code, out, _ = await eventproc(*command, "--help")
        assert code == 0
        assert "<bool>" not in out, command
        assert re.search(r"--help\s+Show this message", out), command


async def test_bad_setting_stops_startup_naming_the_variable() -> None:
    code, _, err = await eventproc("migrate", BATCH_SIZE="zero")
    assert code == 2
    assert "BATCH_SIZE='zero'" in err and len(err.strip().splitlines()) == 1


async def test_supabase_url_alone_explains_what_to_set() -> None:
    code, _, err = await eventproc("migrate", SUPABASE_URL="https://x.supabase.co")
    assert code == 2 and "DATABASE_URL" in err and "5432" in err


async def test_public_bind_without_token_is_refused(tmp_path: Path) -> None:
    code, _, err = await eventproc(
        "run", DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}", HOST="0.0.0.0"
    )
    assert code == 2 and "API_TOKEN" in err


async def test_migrate_creates_sqlite_file(tmp_path: Path) -> None:
    target = tmp_path / "fresh.db"
    code, _, err = await eventproc("migrate", DATABASE_URL=f"sqlite:///{target}")
    assert code == 0, err
    assert target.exists() and "Schema is up to date" in err


async def test_publish_then_run_processes_and_exits_zero_on_sigterm(
    fresh_pg_url: str, tmp_path: Path
) -> None:
    database = fresh_pg_url
    code, out, err = await eventproc(
        "publish", "test.ok", "--payload", '{"k": 1}', DATABASE_URL=database
    )
    assert code == 0, err
    event_id = out.strip()
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventproc",
        "run",
        env=env(
            DATABASE_URL=database,
            PORT=str(port),
            TEST_MARKS_DIR=str(tmp_path),
            LOG_FORMAT="json",
        ),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:

            async def processed() -> bool:
                try:
                    health = (await client.get("/health")).json()
                except httpx.TransportError:
                    return False
                return bool(health["stats"]["successCount"] == 1)

            await eventually(processed, within=30)
        assert (tmp_path / f"{event_id}.1.done").exists()
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stderr is not None
    lines = (await process.stderr.read()).decode().splitlines()
    assert code == 0
    first = json.loads(lines[0])
    assert "postgresql" in first["message"] and first["severity"] == "INFO"
    outcome = next(json.loads(line) for line in lines if event_id in line)
    assert outcome["event_type"] == "test.ok" and outcome["attempt"] == 1
    assert "duration_ms" in outcome


# -- start-up: settings, URLs, HTTP before the database (issue 11, items 6-10) ------

LISTENING = re.compile(r"HTTP on http://127\.0\.0\.1:(\d+) ")


class Started:
    """An `eventproc` subprocess whose JSON log lines are read as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, object]] = []

    async def line_matching(self, pattern: re.Pattern[str], within: float) -> re.Match[str]:
        for line in self.lines:
            if found := pattern.search(str(line["message"])):
                return found
        assert self.process.stderr is not None
        async with asyncio.timeout(within):
            while raw := await self.process.stderr.readline():
                entry = json.loads(raw)
                self.lines.append(entry)
                if found := pattern.search(str(entry["message"])):
                    return found
        raise AssertionError(f"eventproc exited without logging {pattern.pattern!r}")

    async def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 30)


@contextlib.asynccontextmanager
async def started(*args: str, **values: str) -> AsyncIterator[Started]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventproc",
        *args,
        env=env(LOG_FORMAT="json", **values),
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield Started(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_version_option_prints_the_version() -> None:
    from eventproc import __version__

    code, out, _ = await eventproc("--version")
    assert code == 0 and out.strip() == f"eventproc {__version__}"


async def test_bad_url_parameter_stops_run_with_one_line_before_connecting() -> None:
    url = "postgresql://postgres:s3cret@127.0.0.1:1/x?connect_timeout=10&foo=1"
    code, _, err = await eventproc("run", DATABASE_URL=url, PORT="0")
    assert code == 2
    assert err.strip().splitlines() == [
        "error: Invalid configuration: DATABASE_URL: unsupported parameter 'foo' "
        "(eventproc takes libpq's connection parameters and pgbouncer, statement_cache_size, "
        "prepared_statement_cache_size)"
    ]
    assert "s3cret" not in err


async def test_libpq_and_pooler_url_parameters_work(fresh_pg_url: str) -> None:
    query = (
        "connect_timeout=10&application_name=eventproc-cli-test&keepalives=1"
        "&options=-c%20statement_timeout%3D30s&target_session_attrs=read-write"
        "&statement_cache_size=0&prepared_statement_cache_size=0"
    )
    # A transaction pooler takes every parameter but a session setting in options.
    pooled = query.replace("options=-c%20statement_timeout%3D30s", "pgbouncer=true")
    for given in (query, pooled):
        code, _, err = await eventproc("migrate", DATABASE_URL=f"{fresh_pg_url}?{given}")
        assert code == 0, err
        assert "Traceback" not in err and "Schema is up to date" in err


async def test_unreachable_database_at_start_keeps_http_answering() -> None:
    database = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"  # nothing listens
    async with started("run", DATABASE_URL=database, PORT="0") as run:
        port = int((await run.line_matching(LISTENING, within=10)).group(1))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            health = await client.get("/health")
            ready = await client.get("/health/ready")
        retry = await run.line_matching(re.compile(r"Database unreachable at start \((.+)\)"), 10)
        assert await run.stop() == 0  # SIGTERM while waiting for the database
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "degraded" and body["database"]["reachable"] is False
    assert "Connect call failed" in body["database"]["error"]
    assert ready.status_code == 503 and "Connect call failed" in ready.json()["error"]
    assert "Connect call failed" in retry.group(1)


async def test_processing_starts_once_the_database_answers(
    fresh_pg_url: str, tmp_path: Path
) -> None:
    target = make_url(fresh_pg_url)
    proxy = Proxy(target.host or "127.0.0.1", target.port or 5432)
    proxy.port = free_port()  # refused until the proxy starts
    proxied = target.set(port=proxy.port).update_query_dict({"sslmode": "disable"})
    database = proxied.render_as_string(hide_password=False)
    async with started("run", DATABASE_URL=database, PORT="0", TEST_MARKS_DIR=str(tmp_path)) as run:
        port = int((await run.line_matching(LISTENING, within=10)).group(1))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            assert (await client.get("/health/ready")).status_code == 503
            await proxy.start()
            try:

                async def ready() -> bool:
                    return (await client.get("/health/ready")).status_code == 200

                await eventually(ready, within=30)
                store = open_store(fresh_pg_url)
                try:
                    event = NewEvent("test.ok", {})
                    await store.event_insert_many([event])
                finally:
                    await store.close()

                async def handled() -> bool:
                    return (tmp_path / f"{event.id}.1.done").exists()

                await eventually(handled, within=30)
                health = (await client.get("/health")).json()
                assert await run.stop() == 0
            finally:
                await proxy.cut()
    assert health["status"] == "healthy" and health["database"]["error"] is None


async def test_port_in_use_is_one_error_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = await eventproc(
            "run", DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}", PORT=str(port)
        )
    assert code != 0
    assert err.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: address already in use"
    ]


async def test_migrate_prints_no_alembic_info_lines(fresh_pg_url: str) -> None:
    code, _, err = await eventproc("migrate", DATABASE_URL=fresh_pg_url, LOG_FORMAT="json")
    assert code == 0, err
    logged = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert [line for line in logged if str(line["logger"]).startswith("alembic")] == []
    code, _, err = await eventproc(
        "migrate", DATABASE_URL=fresh_pg_url, LOG_FORMAT="json", LOG_LEVEL="debug"
    )
    assert code == 0, err
    assert any('"logger": "alembic' in line for line in err.splitlines())


async def test_settings_in_the_case_node_users_write_them(tmp_path: Path) -> None:
    code, _, err = await eventproc(
        "migrate",
        DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}",
        LOG_LEVEL="INFO",
        LOG_FORMAT="JSON",
        ORDERING="NONE",
        AGGREGATE_FAILURE="Park",
    )
    assert code == 0, err


async def test_host_and_retry_bounds_are_refused_in_one_line(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'x.db'}"
    code, _, err = await eventproc("run", DATABASE_URL=database, HOST="not a host")
    assert code == 2
    assert err.strip().splitlines() == [
        "error: Invalid configuration: HOST='not a host' is not an IP address or host name"
    ]
    code, _, err = await eventproc("run", DATABASE_URL=database, RETRY_MAX_MS="100")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "RETRY_MAX_MS=100" in err and "RETRY_BASE_MS=1000" in err


# -- eventproc publish: errors name their flag; an unhandled type is published with a warning --


async def test_publish_bad_aggregate_id_names_the_flag(tmp_path: Path) -> None:
    database = tmp_path / "never.db"
    code, out, err = await eventproc(
        "publish", "test.ok", "--aggregate-id", "xyz", DATABASE_URL=f"sqlite:///{database}"
    )
    assert (code, out, err) == (2, "", "error: --aggregate-id: not a UUID: 'xyz'\n")
    assert not database.exists()  # refused before anything was opened


async def test_publish_bad_payload_names_the_flag_and_the_place(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'never.db'}"
    code, _, err = await eventproc("publish", "test.ok", "--payload", '{"a" 1}', DATABASE_URL=url)
    assert code == 2
    assert err == "error: --payload: not valid JSON (line 1 column 6: Expecting ':' delimiter)\n"
    for given, kind in (("[1, 2]", "an array"), ('"text"', "a string"), ("3", "a number")):
        code, _, err = await eventproc("publish", "test.ok", "--payload", given, DATABASE_URL=url)
        assert (code, err) == (2, f"error: --payload: must be a JSON object, not {kind}\n")
    code, _, err = await eventproc(
        "publish", "test.ok", "--payload", "[" * 100_000, DATABASE_URL=url
    )
    assert code == 2 and err.startswith("error: --payload: not valid JSON") and err.count("\n") == 1
    assert not (tmp_path / "never.db").exists()


async def test_publish_out_of_range_values_name_their_flag(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'never.db'}"
    code, _, err = await eventproc("publish", "test.ok", "--priority", "40000", DATABASE_URL=url)
    assert (code, err) == (2, "error: --priority: must be between -32768 and 32767, got 40000\n")
    code, _, err = await eventproc(
        "publish", "test.ok", "--aggregate-type", "x" * 51, DATABASE_URL=url
    )
    assert (code, err) == (2, "error: --aggregate-type: at most 50 characters, got 51\n")


async def test_publish_unhandled_type_warns_naming_the_registry_and_publishes(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    code, out, err = await eventproc(
        "publish", "billing.invoiced", "--payload", '{"n": 1}', DATABASE_URL=url
    )
    assert code == 0, err
    event_id = uuid.UUID(out.strip())
    assert err.count("\n") == 1 and err.startswith("warning: ")
    assert "'billing.invoiced'" in err and "HANDLERS=support.handlers:registry" in err
    store = open_store(url)
    try:
        stored = await store.event_get(event_id)
    finally:
        await store.close()
    assert stored is not None and stored.event_type == "billing.invoiced"
    assert stored.payload == {"n": 1} and not stored.processed

    code, out, err = await eventproc("publish", "test.ok", DATABASE_URL=url)
    assert code == 0 and err == "" and uuid.UUID(out.strip())


@pytest.mark.parametrize("command", ["run", "worker"])
async def test_sigterm_while_starting_stops_cleanly(
    command: str, tmp_path: Path, sqlite_url: str
) -> None:
    """A SIGTERM during a slow start (here: importing the handlers) exits 0, not 143."""

    async def importing() -> bool:
        return (tmp_path / "importing").exists()

    async with started(
        command,
        DATABASE_URL=sqlite_url,
        PORT="0",
        HANDLERS="support.slow_start_handlers:registry",
        TEST_MARKS_DIR=str(tmp_path),
        SLOW_IMPORT_SECONDS="2",
    ) as starting:
        await eventually(importing, within=30)
        assert await starting.stop() == 0
        await starting.line_matching(re.compile(r"SIGTERM received"), within=10)
        await starting.line_matching(re.compile(r"eventproc stopped"), within=10)
