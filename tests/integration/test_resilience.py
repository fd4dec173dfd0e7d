"""Faults: a worker killed mid-handler, the database going away, shutdown with work running."""

import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy.engine import make_url

from eventproc import Event, HandlerContext, NewEvent, Registry
from eventproc.engine import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.retry import RetryPolicy
from eventproc.store import Store, open_store
from support.processes import worker_env
from support.proxy import Proxy
from support.waiting import eventually


async def test_worker_killed_mid_handler_is_picked_up_after_lease(
    pg_store: Store, pg_url: str, tmp_path: Path
) -> None:
    from support import handlers

    handlers.MARKS = tmp_path
    event = NewEvent("test.hang_first", {})
    await pg_store.event_insert_many([event])
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventproc",
        "worker",
        env=worker_env(pg_url, tmp_path, LEASE_SECONDS="1"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        started = tmp_path / f"{event.id}.1.started"

        async def worker_started() -> bool:
            return started.exists()

        await eventually(worker_started, within=30)
        worker.send_signal(signal.SIGKILL)
        await asyncio.wait_for(worker.wait(), 10)
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    killed_at = time.monotonic()
    processor = Processor(
        pg_store, handlers.registry, ProcessorConfig(poll_interval_ms=100, lease_seconds=5)
    )
    task = asyncio.create_task(processor.run())
    done = tmp_path / f"{event.id}.2.done"

    async def taken_over() -> bool:
        return done.exists()

    await eventually(taken_over, within=20)
    assert time.monotonic() - killed_at < 10
    processor.stop()
    await task
    row = await pg_store.event_get(event.id)
    assert row is not None and row.outcome == "succeeded" and row.attempts == 2


async def test_survives_the_database_going_away(pg_store: Store, pg_url: str) -> None:
    url = make_url(pg_url)
    proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = open_store(
        url.set(port=proxy.port).render_as_string(hide_password=False), worker_name="p"
    )
    registry = Registry()
    handled: list[int] = []

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        handled.append(event.payload["n"])

    processor = Processor(proxied, registry, ProcessorConfig(poll_interval_ms=100))
    task = asyncio.create_task(processor.run())
    await pg_store.event_insert_many([NewEvent("t.ok", {"n": 0})])

    async def handled_count(n: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return len(handled) >= n

        return check

    await eventually(await handled_count(1))
    await proxy.cut()
    await pg_store.event_insert_many([NewEvent("t.ok", {"n": n}) for n in range(1, 51)])

    async def noticed() -> bool:
        return not processor.database_ok

    await eventually(noticed)
    await asyncio.sleep(1.0)
    assert not task.done()  # still alive, backing off
    await proxy.start()  # the database is back on the same address
    await eventually(await handled_count(51), within=45)
    processor.stop()
    await task
    await proxied.close()
    await proxy.cut()
    assert sorted(handled) == list(range(51))
    assert (await pg_store.stats_snapshot()).backlog == 0


async def test_shutdown_finishes_quick_handlers_and_releases_slow_ones(store: Store) -> None:
    registry = Registry()

    @registry.handler("t.quick")
    async def quick(event: Event, ctx: HandlerContext) -> None:
        await asyncio.sleep(0.05)

    @registry.handler("t.slow")
    async def slow(event: Event, ctx: HandlerContext) -> None:
        await asyncio.sleep(30)

    quick_event, slow_event = NewEvent("t.quick", {}), NewEvent("t.slow", {})
    await store.event_insert_many([quick_event, slow_event])
    processor = Processor(
        store,
        registry,
        ProcessorConfig(shutdown_grace_seconds=0.5, retry=RetryPolicy(3, 10, 20)),
    )
    task = asyncio.create_task(processor.run())
    await asyncio.wait_for(processor.signals.claimed.wait(), 5)
    processor.stop()
    started = time.monotonic()
    await asyncio.wait_for(task, 10)
    assert time.monotonic() - started < 3
    done = await store.event_get(quick_event.id)
    released = await store.event_get(slow_event.id)
    assert done is not None and done.outcome == "succeeded"
    assert released is not None and not released.processed
    assert released.locked_by is None and released.attempts == 0
