"""The `eventproc` command, run as a real subprocess."""

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import httpx

from support.waiting import eventually

TESTS = Path(__file__).resolve().parents[1]


def env(**values: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HANDLERS")}
    base.update(PYTHONPATH=str(TESTS), HANDLERS="support.handlers:registry", **values)
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
