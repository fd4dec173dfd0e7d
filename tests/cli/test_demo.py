"""`eventproc demo`, run as a real subprocess: what it writes where, its port, its output."""

import asyncio
import contextlib
import os
import pty
import re
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select

from eventproc.demo import DEMO_CREATED_BY, foreign_publishers
from eventproc.event import NewEvent
from eventproc.store import open_store
from eventproc.store.census import Publisher
from eventproc.store.schema import dead_letters, events
from support.databases import _dsn

DEMO = "eventproc-demo.db"


def demo_env(**values: str) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "HANDLERS", "PORT", "LOG_LEVEL", "COLUMNS")
    }
    environment.update(values)
    return environment


async def demo(*args: str, cwd: Path, within: float = 120, **values: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventproc",
        "demo",
        *args,
        cwd=cwd,
        env=demo_env(**values),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), within)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def count_events(url: str) -> int:
    store = open_store(url)
    try:
        async with store.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(events))).scalar_one())
    finally:
        await store.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_demo_once_ends_every_event_as_designed(tmp_path: Path) -> None:
    code, text, err = await demo("--once", "--events", "500", cwd=tmp_path, within=280)
    assert code == 0, text + err[-3000:]
    assert "Every event ended as designed" in text
    total = re.search(r"total\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)", text)
    assert total is not None, text
    published, succeeded, skipped, dead, pending = (int(group) for group in total.groups())
    assert published == 500 and pending == 0
    assert succeeded + skipped + dead == 500 and dead > 0 and skipped > 0

    # The summary's numbers match the database, and every sample event is marked as the demo's.
    store = open_store(f"sqlite:///{tmp_path / DEMO}")
    async with store.engine.connect() as conn:
        letters = (await conn.execute(select(func.count()).select_from(dead_letters))).scalar()
        left = (
            await conn.execute(select(func.count()).where(events.c.processed == False))  # noqa: E712
        ).scalar()
        dead_rows = (
            await conn.execute(select(func.count()).where(events.c.outcome == "dead_lettered"))
        ).scalar()
        ours = (
            await conn.execute(select(func.count()).where(events.c.created_by == DEMO_CREATED_BY))
        ).scalar()
    await store.close()
    assert letters == dead == dead_rows
    assert left == 0
    assert ours == 500


@pytest.mark.slow
async def test_demo_uses_its_own_file_whatever_database_url_and_dotenv_say(
    tmp_path: Path,
) -> None:
    (tmp_path / ".env").write_text(f"DATABASE_URL=sqlite:///{tmp_path / 'from-dotenv.db'}\n")
    code, out, err = await demo(
        "--once",
        "--events",
        "20",
        cwd=tmp_path,
        DATABASE_URL=f"sqlite:///{tmp_path / 'from-environment.db'}",
    )
    assert code == 0, out + err[-2000:]
    assert not (tmp_path / "from-dotenv.db").exists()
    assert not (tmp_path / "from-environment.db").exists()
    assert await count_events(f"sqlite:///{tmp_path / DEMO}") >= 20
    assert str(tmp_path / DEMO) in out


@pytest.mark.slow
async def test_demo_on_a_named_sqlite_file_refuses_other_publishers_events(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'named.db'}"
    # The demo's own earlier runs (their follow-up events included) do not count as foreign.
    for _ in range(2):
        code, out, err = await demo("--once", "--events", "12", "--database-url", url, cwd=tmp_path)
        assert code == 0, out + err[-2000:]
    before = await count_events(url)

    store = open_store(url)
    await store.event_insert_many([NewEvent("billing.invoiced", {"n": 1}, created_by="billing")])
    await store.close()
    code, out, err = await demo("--once", "--events", "12", "--database-url", url, cwd=tmp_path)
    assert code == 2, out + err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "1 event the demo did not publish" in err and "'billing': 1" in err
    assert "--force" in err
    assert await count_events(url) == before + 1  # nothing written

    code, out, err = await demo(
        "--once", "--events", "12", "--database-url", url, "--force", cwd=tmp_path
    )
    assert code == 0, out + err[-2000:]
    assert "--force given" in out
    assert await count_events(url) > before + 12


@pytest.mark.slow
async def test_demo_leaves_a_seed_postgres_database_untouched(
    fresh_pg_url: str, tmp_path: Path
) -> None:
    conn = await asyncpg.connect(_dsn(fresh_pg_url))
    try:
        await conn.execute(
            """
            CREATE TABLE events (
              id UUID PRIMARY KEY, event_type VARCHAR(100) NOT NULL, aggregate_id UUID,
              aggregate_type VARCHAR(50), payload JSONB NOT NULL, metadata JSONB,
              processed BOOLEAN DEFAULT FALSE, version INTEGER DEFAULT 1,
              created_at TIMESTAMPTZ DEFAULT now(), created_by VARCHAR(100));
            INSERT INTO events (id, event_type, payload, created_by)
            SELECT gen_random_uuid(), 'order.placed', '{}', 'orders'
            FROM generate_series(1, 1003);
            """
        )
        code, out, err = await demo(
            "--once", "--events", "12", "--database-url", fresh_pg_url, cwd=tmp_path
        )
        assert code == 2, out + err
        assert "1003 events the demo did not publish" in err and "'orders': 1003" in err
        assert err.count("\n") == 1
        tables = {
            row["tablename"]
            for row in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname='public'")
        }
        assert tables == {"events"}  # not migrated, no sample users
        columns = await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'events'"
        )
        assert columns == 10
        assert await conn.fetchval("SELECT count(*) FROM events WHERE processed") == 0
    finally:
        await conn.close()


def test_follow_ups_count_as_the_demos_only_after_its_own_events() -> None:
    now = datetime.now(UTC)
    demo_rows = Publisher(DEMO_CREATED_BY, 40, now)
    later = Publisher("event_processor", 7, now + timedelta(seconds=1))
    earlier = Publisher("event_processor", 7, now - timedelta(days=1))
    other = Publisher(None, 1, now + timedelta(seconds=2))
    assert foreign_publishers([demo_rows, later], "event_processor") == []
    assert foreign_publishers([demo_rows, earlier], "event_processor") == [earlier]
    assert foreign_publishers([later], "event_processor") == [later]  # no demo events at all
    assert foreign_publishers([demo_rows, other], "event_processor") == [other]


async def test_demo_help_names_its_file_its_port_and_plain_flags(tmp_path: Path) -> None:
    code, out, _ = await demo("--help", cwd=tmp_path, COLUMNS="120")
    assert code == 0
    text = " ".join(out.split())
    assert "./eventproc-demo.db" in text and "DATABASE_URL is not read" in text
    assert "else ./eventproc.db" not in text
    assert "8080" in text
    for flag in ("--once", "--force"):
        line = next(line for line in out.splitlines() if f"{flag} " in line)
        assert "<bool>" not in line, line


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def read_until(stream: asyncio.StreamReader, pattern: str, seen: list[str]) -> re.Match[str]:
    while True:
        line = (await asyncio.wait_for(stream.readline(), 60)).decode()
        assert line, "output ended before " + pattern + ":\n" + "".join(seen)
        seen.append(line)
        found = re.search(pattern, line)
        if found:
            return found


@pytest.mark.slow
async def test_live_demo_takes_a_free_port_and_prints_plain_lines_off_a_terminal(
    tmp_path: Path,
) -> None:
    with listening_socket() as taken:
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eventproc",
            "demo",
            "--events",
            "30",
            "--rate",
            "60",
            cwd=tmp_path,
            env=demo_env(PORT=str(port)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        seen: list[str] = []
        try:
            await read_until(process.stdout, rf"Port {port} is taken", seen)
            url = (await read_until(process.stdout, r"Health: (http://127\.0\.0\.1:\d+)/", seen))[1]
            assert not url.endswith(f":{port}")
            async with httpx.AsyncClient() as client:
                assert (await client.get(f"{url}/health")).status_code == 200
            await read_until(process.stdout, r"^demo: published \d+, handled \d+", seen)
            process.send_signal(signal.SIGINT)
            rest, _ = await asyncio.wait_for(process.communicate(), 60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    out = "".join(seen) + rest.decode()
    assert process.returncode == 0, out
    assert "\x1b[" not in out  # no cursor movement, no colours: plain lines
    assert "?" not in out
    row = re.search(r"the demo\s*│\s*(\d+)\s*│", out)
    assert row is not None and int(row[1]) == 30, out
    assert "open dead letters in the database:" in out


@pytest.mark.slow
async def test_live_demo_on_a_terminal_prints_log_lines_above_its_table(tmp_path: Path) -> None:
    """Logs go through the live view (the table's terminal), not around it."""
    screen, screen_end = pty.openpty()
    logs, logs_end = pty.openpty()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventproc",
        "demo",
        "--events",
        "40",
        "--rate",
        "80",
        "--port",
        "0",
        cwd=tmp_path,
        env=demo_env(TERM="xterm", COLUMNS="120", LINES="40"),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=screen_end,
        stderr=logs_end,
    )
    os.close(screen_end)
    os.close(logs_end)
    shown = {screen: b"", logs: b""}
    logged = asyncio.Event()
    loop = asyncio.get_running_loop()

    def drain(fd: int) -> None:
        try:
            shown[fd] += os.read(fd, 65536)
        except OSError:
            loop.remove_reader(fd)
        if b"No handler registered" in shown[screen]:
            logged.set()

    for fd in shown:
        loop.add_reader(fd, drain, fd)
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(logged.wait(), 60)
        process.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(process.wait(), 60)
        await asyncio.sleep(0.2)
    finally:
        for fd in shown:
            loop.remove_reader(fd)
            os.close(fd)
        if process.returncode is None:
            process.kill()
            await process.wait()
    # What the demo printed, to tell a crash from a late start when this fails.
    tails = (
        shown[screen][-3000:].decode(errors="replace"),
        shown[logs][-3000:].decode(errors="replace"),
    )
    assert code == 0, tails
    assert b"No handler registered" in shown[screen], tails
    assert b"No handler registered" not in shown[logs]
    assert shown[screen].count(b"\x1b[1A") > 5  # the table is redrawn in place
    assert b"this run's events (read from the database)" in shown[screen]


def test_demo_database_is_ignored_by_git() -> None:
    checkout = Path(__file__).resolve().parents[2]
    for name in (DEMO, f"{DEMO}-wal", f"{DEMO}-shm"):
        result = subprocess.run(
            ["git", "check-ignore", "--no-index", "-q", name], cwd=checkout, check=False
        )
        assert result.returncode == 0, name
