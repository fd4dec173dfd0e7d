"""`eventproc backfill`, run as a real subprocess on an embedded database."""

import json
import os
import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from eventproc import Event, HandlerContext, Registry
from eventproc.engine import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.store import open_store
from eventproc.store.schema import deliveries, events

TESTS = Path(__file__).resolve().parents[1]

HANDLERS = """
from eventproc import Event, HandlerContext, Registry

registry = Registry()


async def noop(event: Event, ctx: HandlerContext) -> None:
    return None


registry.register("a.*", noop, name="old")
registry.register("a.created", noop, name="new", filter={"payload": {"plan": ["pro"]}})
"""

SINCE, UNTIL = "2026-03-01T12:00:00Z", "2026-03-01T13:00:00"  # a naive time is UTC
PAST = (
    (datetime(2026, 3, 1, 11, 0, tzinfo=UTC), "pro"),  # before --since
    (datetime(2026, 3, 1, 12, 10, tzinfo=UTC), "pro"),
    (datetime(2026, 3, 1, 12, 20, tzinfo=UTC), "free"),  # its filter says no
    (datetime(2026, 3, 1, 12, 30, tzinfo=UTC), "pro"),
)


def eventproc(folder: Path, database: Path, *args: str) -> subprocess.CompletedProcess[str]:
    scrubbed = ("DATABASE_URL", "HANDLERS", "LOG_LEVEL")
    env = {key: value for key, value in os.environ.items() if key not in scrubbed}
    env.update(
        PYTHONPATH=os.pathsep.join([str(folder), str(TESTS)]),
        HANDLERS="backfill_handlers",
        DATABASE_URL=f"sqlite:///{database}",
    )
    return subprocess.run(
        [sys.executable, "-m", "eventproc", "backfill", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "backfill_handlers.py").write_text(textwrap.dedent(HANDLERS))
    return tmp_path


async def noop(event: Event, ctx: HandlerContext) -> None:
    return None


@pytest.fixture
async def database(tmp_path: Path) -> Path:
    """Events processed while only ``old`` existed."""
    path = tmp_path / "past.db"
    store = open_store(f"sqlite:///{path}")
    await store.migrate()
    async with store.begin() as conn:
        for created_at, plan in PAST:
            await conn.execute(
                insert(events).values(
                    id=uuid.uuid4(),
                    event_type="a.created",
                    payload={"plan": plan},
                    created_at=created_at,
                )
            )
    registry = Registry()
    registry.register("a.*", noop, name="old")
    config = ProcessorConfig(poll_interval_ms=60_000, listen=False)
    await Processor(store, registry, config).run(until_idle=True)
    await store.close()
    return path


async def delivery_count(path: Path) -> int:
    store = open_store(f"sqlite:///{path}")
    try:
        async with store.reader.connect() as conn:
            found = await conn.execute(select(func.count()).select_from(deliveries))
            return int(found.scalar_one())
    finally:
        await store.close()


async def test_dry_run_counts_and_writes_nothing_then_execute_creates_them(
    folder: Path, database: Path
) -> None:
    dry = eventproc(folder, database, "new", "--since", SINCE, "--until", UNTIL)
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert (
        lines[0] == 'backfill of new (types [\'a.created\'], filter {"payload": {"plan": ["pro"]}})'
    )
    assert (
        lines[1] == "events created from 2026-03-01T12:00:00Z to 2026-03-01T13:00:00Z, in 1 batch"
    )
    counts = {line[:20].strip(): int(line[20:30]) for line in lines[2:7]}
    assert counts == {
        "scanned": 3,
        "matched": 2,
        "already delivered": 0,
        "pending": 0,
        "would create": 2,
    }
    assert lines[-1] == "nothing written; add --execute to create them"
    assert await delivery_count(database) == 0

    real = eventproc(folder, database, "new", "--since", SINCE, "--execute", "--batch-size", "1")
    assert real.returncode == 0, real.stderr
    progress = [line for line in real.stdout.splitlines() if line.startswith("batch ")]
    assert progress == [
        "batch 1: 1 scanned, 1 created (1 scanned, 1 created so far)",
        "batch 2: 1 scanned, 0 created (2 scanned, 1 created so far)",
        "batch 3: 1 scanned, 1 created (3 scanned, 2 created so far)",
    ]
    assert real.stdout.splitlines()[-1] == "created 2 deliveries"
    assert await delivery_count(database) == 2

    again = eventproc(folder, database, "new", "--since", SINCE, "--execute", "--json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["created"], report["already_delivered"], report["dry_run"]) == (0, 2, False)
    assert report["since"] == SINCE and report["until"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("nope", "--since", SINCE),
            "error: no subscription named 'nope' (the registry has: old, new)",
        ),
        (("new", "--since", "yesterday"), "error: --since: not an ISO 8601 time: 'yesterday'"),
        (("new", "--since", UNTIL, "--until", SINCE), "error: --until: must be after --since"),
        (("new", "--since", SINCE, "--filter", "{"), "error: --filter: not valid JSON"),
        (
            ("new", "--since", SINCE, "--filter", '{"payload": {"plan": "pro"}}'),
            "error: --filter: payload.plan: ",
        ),
        (("new", "--since", SINCE, "--batch-size", "0"), "error: --batch-size: must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_database_work(
    folder: Path, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    database = tmp_path / "never-created.db"
    done = eventproc(folder, database, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith(message)
    assert done.stdout == "" and not database.exists()
