"""`eventproc prune`, run as a real subprocess, on both backends."""

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from eventproc.config import load_settings
from eventproc.errors import ConfigError
from eventproc.store import open_store
from eventproc.store.schema import events, leases


def _prune(url: str, *flags: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventproc", "prune", "--database-url", url, *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HANDLERS": "eventproc.registry:Registry", **env},
        check=False,
    )


async def _seed(url: str) -> None:
    store = open_store(url)
    now = datetime.now(UTC)

    def row(days: float, outcome: str | None, processed: bool = True) -> dict[str, Any]:
        at = now - timedelta(days=days)
        return {
            "id": uuid.uuid4(),
            "event_type": "cli.prune",
            "payload": {},
            "processed": processed,
            "outcome": outcome,
            "processed_at": at,
            "created_at": at,
        }

    rows = [row(8, "succeeded"), row(9, "succeeded"), row(10, "skipped"), row(1, "succeeded")]
    rows.append(row(50, None, processed=False))
    try:
        async with store.engine.begin() as conn:
            await conn.execute(leases.delete())
            await conn.execute(insert(events), rows)
    finally:
        await store.close()


async def _count(url: str) -> int:
    store = open_store(url)
    try:
        async with store.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(events))).scalar_one())
    finally:
        await store.close()


async def test_dry_run_then_execute(store_url: str) -> None:
    await _seed(store_url)
    dry = _prune(store_url, "--json")
    assert dry.returncode == 0, dry.stderr
    document = json.loads(dry.stdout)
    assert document["dry_run"] is True and "pruned" not in document
    found = {(item["table"], item["outcome"]): item for item in document["would_go"]}
    assert found[("events", "succeeded")]["rows"] == 2
    assert found[("events", "skipped")]["rows"] == 1
    oldest = datetime.fromisoformat(found[("events", "succeeded")]["oldest"])
    assert datetime.now(UTC) - oldest > timedelta(days=8.9)
    assert await _count(store_url) == 5  # nothing written
    plain = _prune(store_url, "--dry-run")
    assert plain.returncode == 0 and "dry run" in plain.stdout and "events" in plain.stdout
    assert await _count(store_url) == 5

    done = _prune(store_url, "--execute", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["pruned"]["events"] == 3
    assert await _count(store_url) == 2
    # The RETAIN_* settings apply: skipped kept 30 days now, so nothing more goes.
    again = _prune(store_url, "--json", RETAIN_SUCCEEDED_DAYS="0.5")
    items = json.loads(again.stdout)["would_go"]
    assert [i["rows"] for i in items if i["table"] == "events"] == [1]


def test_usage_errors_are_one_line(sqlite_url: str) -> None:
    both = _prune(sqlite_url, "--dry-run", "--execute")
    assert both.returncode == 2 and both.stderr.strip().count("\n") == 0
    assert "not both" in both.stderr
    bad = _prune(sqlite_url, RETAIN_HANDLER_DAYS="nocolon")
    assert bad.returncode == 2 and "RETAIN_HANDLER_DAYS" in bad.stderr
    assert bad.stderr.strip().count("\n") == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("retain_handler_days", "a:3,b"),
        ("retain_handler_days", "a:-1"),
        ("retain_succeeded_days", -1),
        ("retain_audit_days", 0),
        ("prune_archive", "s3://bucket"),
        ("prune_archive", "jsonl:/no/such/dir/a.jsonl"),
        ("prune_interval_seconds", 0),
    ],
)
def test_bad_retention_settings_stop_start_up(name: str, value: object) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(**{name: value})
    assert name.upper() in str(raised.value) and "\n" not in str(raised.value)


def test_retention_settings_build_the_policy(tmp_path: Path) -> None:
    settings = load_settings(
        retain_handler_days=" a:3, b.c:60 ",
        prune_archive=f"jsonl:{tmp_path / 'a.jsonl'}",
        aggregate_failure="block",
    )
    policy = settings.retention_policy()
    assert policy.handler_days == {"a": 3.0, "b.c": 60.0} and policy.archive == "jsonl"
    assert policy.block_on_dead_letters and settings.archive_path == tmp_path / "a.jsonl"
    assert load_settings().prune is False  # the replaced service kept everything


def test_unreachable_database_exits_4() -> None:
    down = _prune("postgresql://postgres@127.0.0.1:1/none")
    assert down.returncode == 4 and down.stderr.startswith("error: database unavailable")
