"""A worker killed mid-operation: another worker carries the operation on from its cursor.

Real `eventproc worker` processes (the operations lease shortened to 2 s in
the launcher, so the second worker takes over soon) on both backends; the
handler appends "<event id> <attempt>" to a file on every run. A batch's
replays and the progress they make commit together, so nothing is replayed
twice: the operation's counts end at its total, and each event ran once
before it and then on one fresh budget (attempts from 1, or from 2 when the
killed worker had claimed it).
"""

import asyncio
import os
import signal
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import eventproc
from eventproc.event import NewEvent
from eventproc.store import Store, open_store
from eventproc.store.admin import Audit
from eventproc.store.admin.operations import Operation
from support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

EVENTS = 30
RATE = 5  # batches of 5, one a second: about 6 s for the whole operation

HANDLERS = """
import os
from pathlib import Path

from eventproc import Event, HandlerContext, Registry

registry = Registry()


@registry.handler("r.op", name="recorded")
async def recorded(event: Event, ctx: HandlerContext) -> None:
    with Path(os.environ["RUNS_FILE"]).open("a") as runs:
        runs.write(f"{event.id} {ctx.attempt}\\n")
"""

LAUNCHER = """
import sys

from eventproc.admin import operations

operations.LEASE_SECONDS = 2.0  # a killed worker's operation is free again soon

from eventproc.cli import main

sys.argv = ["eventproc", "worker"]
main()
"""


SOURCE = Path(eventproc.__file__).resolve().parents[1]  # this checkout's, for the children
TESTS = Path(__file__).resolve().parents[1]


async def start_worker(folder: Path, database_url: str, name: str) -> asyncio.subprocess.Process:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "HANDLERS", "PORT", "WORKER_ID")
    }
    env.update(
        DATABASE_URL=database_url,
        HANDLERS="restart_handlers",
        PYTHONPATH=os.pathsep.join([str(folder), str(SOURCE), str(TESTS)]),
        RUNS_FILE=str(folder / "runs.txt"),
        WORKER_ID=name,
        POLL_INTERVAL_MS="100",
        LEASE_SECONDS="2",
        LOG_FORMAT="json",
    )
    with (folder / f"{name}.log").open("w") as log:  # the child keeps its own copy
        return await asyncio.create_subprocess_exec(
            sys.executable,
            str(folder / "launch.py"),
            env=env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )


async def all_processed(store: Store, ids: list[uuid.UUID]) -> bool:
    for event_id in ids:
        event = await store.event_get(event_id)
        if event is None or not event.processed:
            return False
    return True


async def current(store: Store, op_id: uuid.UUID) -> Operation:
    found = await store.admin.operations.get(op_id)
    assert found is not None
    return found


async def test_a_killed_workers_operation_is_finished_by_another_applying_nothing_twice(
    store_url: str, tmp_path: Path
) -> None:
    (tmp_path / "restart_handlers.py").write_text(textwrap.dedent(HANDLERS))
    (tmp_path / "launch.py").write_text(textwrap.dedent(LAUNCHER))
    store = open_store(store_url)
    published = [NewEvent("r.op", {"n": n}) for n in range(EVENTS)]
    ids = [event.id for event in published]
    await store.event_insert_many(published)
    first = await start_worker(tmp_path, store_url, "worker-a")
    second = None
    try:
        await eventually(lambda: all_processed(store, ids), within=60)
        rows = store.admin.operations
        who = Audit("operator#restart", "operator", "restart test")
        planned = await rows.plan(
            "replay",
            {"event_ids": [str(i) for i in ids]},
            max_items=EVENTS,
            rate_per_second=RATE,
            who=who,
        )
        op_id = planned.operation.id
        await rows.execute(op_id, planned.token, who)

        async def under_way() -> bool:
            found = await current(store, op_id)
            return found.done_count >= 2 * RATE and found.locked_by == "worker-a"

        await eventually(under_way, within=60)
        first.send_signal(signal.SIGKILL)
        await first.wait()
        killed = await current(store, op_id)
        assert killed.status == "running" and killed.done_count < EVENTS  # truly mid-way
        second = await start_worker(tmp_path, store_url, "worker-b")

        async def finished() -> bool:
            return (await current(store, op_id)).status == "done"

        await eventually(finished, within=60)
        ended = await current(store, op_id)
        assert ended.total == ended.done_count == ended.changed_count == EVENTS
        await eventually(lambda: all_processed(store, ids), within=60)
    finally:
        for worker in (first, second):
            if worker is not None and worker.returncode is None:
                worker.terminate()
                await asyncio.wait_for(worker.wait(), 30)
    try:
        runs: dict[str, list[int]] = {str(i): [] for i in ids}
        for line in (tmp_path / "runs.txt").read_text().splitlines():
            event_id, attempt = line.split()
            runs[event_id].append(int(attempt))
        for event_id in ids:
            before, *after = runs[str(event_id)]
            assert before == 1 and after, runs[str(event_id)]
            # One fresh budget: the attempts after it only go up (a run cut short by the
            # kill is tried again as the next attempt; a second replay would start at 1).
            assert after == sorted(set(after)), runs[str(event_id)]
            event = await store.event_get(event_id)
            assert event is not None and event.attempts == after[-1]
            assert event.metadata["replay"] == {"by": who.actor, "operation_id": str(op_id)}
        entries = await store.admin.audit_page(limit=50)
        actions = [entry.action for entry in entries if entry.operation_id == op_id]
        assert actions == ["operation.done", "operation.execute", "operation.plan"]  # newest first
    finally:
        await store.close()
