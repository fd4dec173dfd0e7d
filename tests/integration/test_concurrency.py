"""Several processors on one database: no event twice at once, none lost; leases."""

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import pytest

from eventproc import Event, HandlerContext, NewEvent, Registry
from eventproc.engine import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.store import Store, open_store
from support.waiting import eventually


@pytest.mark.through_pgbouncer
async def test_two_processors_share_work_without_overlap(store_url: str) -> None:
    registry = Registry()
    running: set[uuid.UUID] = set()
    handled: list[uuid.UUID] = []
    overlaps: list[uuid.UUID] = []

    @registry.handler("t.work")
    async def work(event: Event, ctx: HandlerContext) -> None:
        if event.id in running:
            overlaps.append(event.id)
        running.add(event.id)
        await asyncio.sleep(0.001)
        running.discard(event.id)
        handled.append(event.id)

    stores = [open_store(store_url, worker_name=f"w{n}") for n in range(2)]
    published = [NewEvent("t.work", {"n": n}) for n in range(600)]
    await stores[0].event_insert_many(published)
    processors = [
        Processor(s, registry, ProcessorConfig(batch_size=10, concurrency=10), worker_id=f"w{n}")
        for n, s in enumerate(stores)
    ]
    await asyncio.gather(*(p.run(until_idle=True) for p in processors))
    try:
        assert overlaps == []
        assert sorted(handled) == sorted(e.id for e in published)  # each exactly once
        assert all(p.stats.success_count > 0 for p in processors)
        assert (await stores[0].stats_snapshot()).backlog == 0
    finally:
        for s in stores:
            await s.close()


async def test_long_handler_keeps_its_lease(pg_store: Store, pg_url: str) -> None:
    registry = Registry()
    starts: list[str] = []

    @registry.handler("t.long")
    async def long(event: Event, ctx: HandlerContext) -> None:
        starts.append(ctx.worker_id)
        await asyncio.sleep(3.5)  # > 2 leases: only renewals keep it

    other_store = open_store(pg_url, worker_name="b")
    config = ProcessorConfig(lease_seconds=1.5, poll_interval_ms=50)
    first = Processor(pg_store, registry, config, worker_id="a")
    second = Processor(other_store, registry, config, worker_id="b")
    event = NewEvent("t.long", {})
    await pg_store.event_insert_many([event])
    tasks = [asyncio.create_task(first.run())]
    await asyncio.wait_for(first.signals.claimed.wait(), 5)
    tasks.append(asyncio.create_task(second.run()))
    await asyncio.wait_for(first.signals.flushed.wait(), 10)
    first.stop()
    second.stop()
    await asyncio.gather(*tasks)
    await other_store.close()
    row = await pg_store.event_get(event.id)
    assert row is not None and row.outcome == "succeeded" and row.attempts == 1
    assert starts == ["a"]  # the second processor never took it over


async def test_notify_wakes_an_idle_processor_at_once(
    pg_store: Store, pg_url: str, running: Callable[[Processor], Awaitable[None]]
) -> None:
    registry = Registry()
    done = asyncio.Event()

    @registry.handler("t.ping")
    async def ping(event: Event, ctx: HandlerContext) -> None:
        done.set()

    # A poll interval of an hour: only NOTIFY can wake it.
    processor = Processor(pg_store, registry, ProcessorConfig(poll_interval_ms=3_600_000))
    await running(processor)
    await asyncio.sleep(0.3)  # let the listener connect
    publisher = open_store(pg_url)  # another engine: no in-process wake-up
    await publisher.event_insert_many([NewEvent("t.ping", {})])
    await publisher.close()
    await asyncio.wait_for(done.wait(), 5)


async def test_seed_raw_sql_replay_wakes_and_reprocesses(
    pg_store: Store, pg_url: str, running: Callable[[Processor], Awaitable[None]]
) -> None:
    import asyncpg

    registry = Registry()
    runs: list[int] = []

    @registry.handler("t.replay")
    async def replay(event: Event, ctx: HandlerContext) -> None:
        runs.append(ctx.attempt)

    processor = Processor(pg_store, registry, ProcessorConfig(poll_interval_ms=3_600_000))
    event = NewEvent("t.replay", {})
    await pg_store.event_insert_many([event])
    await running(processor)
    await asyncio.wait_for(processor.signals.flushed.wait(), 5)
    await asyncio.sleep(0.3)
    processor.signals.flushed.clear()
    conn = await asyncpg.connect(pg_url)
    await conn.execute(
        "UPDATE events SET processed = false, "
        "metadata = metadata || '{\"replayed\": true}'::jsonb WHERE id IN ($1)",
        event.id,
    )
    await conn.close()
    await asyncio.wait_for(processor.signals.flushed.wait(), 5)
    assert runs == [1, 1]  # a fresh budget: attempt 1 again


async def test_listener_reconnects_after_its_connection_is_killed(
    pg_store: Store, pg_url: str, running: Callable[[Processor], Awaitable[None]]
) -> None:
    import asyncpg

    registry = Registry()
    done = asyncio.Event()

    @registry.handler("t.ping")
    async def ping(event: Event, ctx: HandlerContext) -> None:
        done.set()

    processor = Processor(pg_store, registry, ProcessorConfig(poll_interval_ms=3_600_000))
    await running(processor)
    admin = await asyncpg.connect(pg_url)

    async def listener_killed() -> bool:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
        )
        return bool(killed)

    await eventually(listener_killed)
    await asyncio.sleep(1.0)  # the listener reconnects after its backoff
    await admin.execute(
        "INSERT INTO events (id, event_type, payload) VALUES ($1, 't.ping', '{}')", uuid.uuid4()
    )
    await admin.close()
    await asyncio.wait_for(done.wait(), 20)


async def test_listen_false_runs_on_polling_alone(pg_store: Store, pg_url: str) -> None:
    import asyncpg

    registry = Registry()
    done = asyncio.Event()

    @registry.handler("t.ping")
    async def ping(event: Event, ctx: HandlerContext) -> None:
        done.set()

    processor = Processor(pg_store, registry, ProcessorConfig(listen=False, poll_interval_ms=100))
    task = asyncio.create_task(processor.run())
    await asyncio.sleep(0.3)
    admin = await asyncpg.connect(pg_url)
    listeners = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
    )
    await admin.execute(
        "INSERT INTO events (id, event_type, payload) VALUES (gen_random_uuid(), 't.ping', '{}')"
    )
    await admin.close()
    await asyncio.wait_for(done.wait(), 5)
    processor.stop()
    await task
    assert listeners == 0


async def test_listener_accepts_libpq_sslmode_in_the_url(pg_store: Store, pg_url: str) -> None:
    registry = Registry()
    done = asyncio.Event()

    @registry.handler("t.ping")
    async def ping(event: Event, ctx: HandlerContext) -> None:
        done.set()

    store = open_store(f"{pg_url}?sslmode=disable")
    processor = Processor(store, registry, ProcessorConfig(poll_interval_ms=3_600_000))
    task = asyncio.create_task(processor.run())
    await asyncio.sleep(0.5)
    await pg_store.event_insert_many([NewEvent("t.ping", {})])  # another engine: NOTIFY only
    await asyncio.wait_for(done.wait(), 5)
    processor.stop()
    await task
    await store.close()
