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
    # Handlers take a while and each worker runs at most 5 at once, so one
    # worker alone would need ~3 s: the second one, starting a moment later,
    # gets its share (SQLite claims are too fast now to share no-op events).
    published = [NewEvent("test.slow", {"n": n, "seconds": 0.05}) for n in range(300)]
    await store.event_insert_many(published)
    marks = tmp_path / "marks"
    marks.mkdir()
    settings = {"BATCH_SIZE": "5", "CONCURRENCY": "5"}
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eventproc",
            "worker",
            env=worker_env(url, marks, WORKER_ID=f"w{n}", **settings),
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
    try:
        done = sorted(path.name for path in marks.iterdir() if path.name.endswith(".done"))
        # each once, first try
        assert done == sorted(f"{event.id}.1.done" for event in published)
        rows = [await store.event_get(event.id) for event in published]
        workers_used = {row.metadata["processed_by"] for row in rows if row is not None}
        assert workers_used == {"w0", "w1"}
    finally:
        await store.close()
