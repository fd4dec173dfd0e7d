"""SQLite: another process's publish wakes an idle processor without waiting for the poll."""

import asyncio

from eventproc import Event, HandlerContext, NewEvent, Registry
from eventproc.engine import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.store import open_store


async def test_other_connection_commit_wakes_sqlite_processor(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    await store.migrate()
    registry = Registry()
    done = asyncio.Event()

    @registry.handler("t.ping")
    async def ping(event: Event, ctx: HandlerContext) -> None:
        done.set()

    processor = Processor(store, registry, ProcessorConfig(poll_interval_ms=3_600_000))
    task = asyncio.create_task(processor.run())
    await asyncio.sleep(0.3)
    other = open_store(sqlite_url)  # another engine: no in-process wake-up
    await other.event_insert_many([NewEvent("t.ping", {})])
    await other.close()
    await asyncio.wait_for(done.wait(), 5)
    processor.stop()
    await task
    await store.close()
