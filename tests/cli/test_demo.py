"""`eventproc demo --once` on a fresh SQLite file: every event ends as designed."""

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from eventproc.store import open_store
from eventproc.store.schema import dead_letters, events


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_demo_once_ends_every_event_as_designed(tmp_path: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HANDLERS")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventproc",
        "demo",
        "--once",
        "--events",
        "500",
        cwd=tmp_path,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 280)
    text = out.decode()
    assert process.returncode == 0, text + err.decode()[-3000:]
    assert "Every event ended as designed" in text
    total = re.search(r"total\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)\s*│\s*(\d+)", text)
    assert total is not None, text
    published, succeeded, skipped, dead, pending = (int(group) for group in total.groups())
    assert published == 500 and pending == 0
    assert succeeded + skipped + dead == 500 and dead > 0 and skipped > 0

    # The summary's numbers match the database.
    store = open_store(f"sqlite:///{tmp_path / 'eventproc-demo.db'}")
    async with store.engine.connect() as conn:
        letters = (await conn.execute(select(func.count()).select_from(dead_letters))).scalar()
        left = (
            await conn.execute(select(func.count()).where(events.c.processed == False))  # noqa: E712
        ).scalar()
        dead_rows = (
            await conn.execute(select(func.count()).where(events.c.outcome == "dead_lettered"))
        ).scalar()
    await store.close()
    assert letters == dead == dead_rows
    assert left == 0
