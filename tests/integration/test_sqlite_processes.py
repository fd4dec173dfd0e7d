"""Several processes on one SQLite file: slower, but no event twice and none lost."""

import asyncio
import sys
from pathlib import Path

import pytest

from eventproc.event import NewEvent
from eventproc.store import open_store
from support.processes import worker_env
from support.waiting import eventually


@pytest.mark.slow
async def test_two_worker_processes_share_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    store = open_store(url)
    await store.migrate()
    published = [NewEvent("test.ok", {"n": n}) for n in range(300)]
    await store.event_insert_many(published)
    marks = tmp_path / "marks"
    marks.mkdir()
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eventproc",
            "worker",
            env=worker_env(url, marks, WORKER_ID=f"w{n}", BATCH_SIZE="10"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        for n in range(2)
    ]
    try:

        async def drained() -> bool:
            return (await store.stats_snapshot()).backlog == 0

        await eventually(drained, within=60)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            assert await asyncio.wait_for(worker.wait(), 30) == 0
    done = sorted(path.name for path in marks.iterdir())
    assert done == sorted(f"{event.id}.1.done" for event in published)  # each once, first try
    rows = [await store.event_get(event.id) for event in published]
    workers_used = {row.metadata["processed_by"] for row in rows if row is not None}
    assert workers_used == {"w0", "w1"}
    await store.close()
