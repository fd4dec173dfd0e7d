"""`eventproc prune`, run as a real subprocess, on both backends."""

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select

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
    assert _prune(sqlite_url, "--vacuum").returncode == 2
    bad = _prune(sqlite_url, RETAIN_HANDLER_DAYS="nocolon")
    assert bad.returncode == 2 and "RETAIN_HANDLER_DAYS" in bad.stderr
    archive = _prune(sqlite_url, PRUNE_ARCHIVE="jsonl:/no/such/dir/a.jsonl")
    assert archive.returncode == 2 and "PRUNE_ARCHIVE" in archive.stderr


def test_unreachable_database_exits_4() -> None:
    down = _prune("postgresql://postgres@127.0.0.1:1/none")
    assert down.returncode == 4 and down.stderr.startswith("error: database unavailable")
