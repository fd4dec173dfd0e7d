"""A real PostgreSQL restart (a cluster of the test's own) under a running processor."""

import asyncio
from collections.abc import Iterator

import pytest

from eventproc import Event, HandlerContext, NewEvent, Registry
from eventproc.engine import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.store import open_store
from support.cluster import Cluster
from support.waiting import eventually


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    cluster.init()
    cluster.start()
    yield cluster
    cluster.destroy()


@pytest.mark.slow
async def test_processor_survives_a_database_restart(cluster: Cluster) -> None:
    store = open_store(cluster.url, worker_name="restart")
    await store.migrate()
    publisher = open_store(cluster.url)
    registry = Registry()
    handled: list[int] = []

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        handled.append(event.payload["n"])

    processor = Processor(store, registry, ProcessorConfig(poll_interval_ms=200))
    task = asyncio.create_task(processor.run())
    await publisher.event_insert_many([NewEvent("t.ok", {"n": 0})])

    async def count_is(n: int) -> bool:
        return len(handled) >= n

    await eventually(lambda: count_is(1))
    await asyncio.to_thread(cluster.stop)

    async def noticed() -> bool:
        return not processor.database_ok

    await eventually(noticed)
    assert not task.done()
    await asyncio.to_thread(cluster.start)
    await publisher.event_insert_many([NewEvent("t.ok", {"n": n}) for n in range(1, 21)])
    await eventually(lambda: count_is(21), within=45)
    processor.stop()
    await task
    assert sorted(handled) == list(range(21))
    assert (await publisher.stats_snapshot()).backlog == 0
    await publisher.close()
    await store.close()
