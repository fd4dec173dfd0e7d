"""Pausing a subscription: its work waits (row events and deliveries), the others' goes on,
what runs finishes, a resume runs everything paused exactly once, a restart keeps the pause."""

import asyncio
import collections
import uuid

import pytest

from eventproc import Event, HandlerContext, NewEvent, Registry
from eventproc.config import Settings
from eventproc.engine import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.runtime import Runtime
from eventproc.store import Store
from eventproc.store.admin import Audit
from support.waiting import eventually

WHO = Audit("tester", "operator", "downstream outage")


def counting_registry(calls: collections.Counter[str]) -> Registry:
    """solo: the one subscription of "s" (runs on the events' rows); fan_a, fan_b: of "f"."""
    registry = Registry()
    for name, event_type in (("solo", "s"), ("fan_a", "f"), ("fan_b", "f")):

        async def handle(event: Event, ctx: HandlerContext, name: str = name) -> None:
            calls[f"{name}:{event.payload['n']}"] += 1

        registry.register(event_type, handle, name=name)
    return registry


def config(ordered: bool) -> ProcessorConfig:
    return ProcessorConfig(ordered=ordered, poll_interval_ms=200, batch_size=20, concurrency=20)


async def pending_deliveries(store: Store, handler: str) -> int:
    async with store.begin() as conn:
        mark = "$1" if store.backend == "postgresql" else "?"
        result = await conn.exec_driver_sql(
            "SELECT count(*) FROM event_deliveries WHERE status = 'pending' AND "
            f"locked_by IS NULL AND handler = {mark}",
            (handler,),
        )
        return int(result.scalar_one())


def publish_both(aggregate: uuid.UUID | None) -> list[NewEvent]:
    return [
        *[NewEvent("s", {"n": n}, aggregate_id=aggregate) for n in range(3)],
        *[NewEvent("f", {"n": n}, aggregate_id=aggregate) for n in range(3)],
    ]


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "aggregate"])
async def test_pause_holds_one_subscription_and_resume_runs_it_exactly_once(
    store: Store, ordered: bool
) -> None:
    calls: collections.Counter[str] = collections.Counter()
    registry = counting_registry(calls)
    assert await store.admin.pause("solo", WHO) and await store.admin.pause("fan_b", WHO)
    await store.event_insert_many(publish_both(uuid.uuid4() if ordered else None))
    await Processor(store, registry, config(ordered)).run(until_idle=True)
    # The others ran; the paused ones' work waits on deliveries, none of it started.
    assert calls == {f"fan_a:{n}": 1 for n in range(3)}
    assert await pending_deliveries(store, "solo") == 3  # row events moved onto deliveries
    assert await pending_deliveries(store, "fan_b") == 3
    assert (await store.stats_snapshot()).backlog == 6  # nothing lost: all still pending

    assert await store.admin.resume("solo", WHO)
    await Processor(store, registry, config(ordered)).run(until_idle=True)
    assert {key for key in calls if key.startswith("solo")} == {f"solo:{n}" for n in range(3)}
    assert not any(key.startswith("fan_b") for key in calls)

    assert await store.admin.resume("fan_b", WHO)
    await Processor(store, registry, config(ordered)).run(until_idle=True)
    expected = {f"{name}:{n}": 1 for name in ("solo", "fan_a", "fan_b") for n in range(3)}
    assert calls == expected  # each exactly once
    assert (await store.stats_snapshot()).backlog == 0


async def test_a_run_already_started_finishes_and_nothing_more_starts(store: Store) -> None:
    registry = Registry()
    started: list[int] = []
    finished: list[int] = []
    gate = asyncio.Event()

    @registry.handler("slow", name="slow")
    async def slow(event: Event, ctx: HandlerContext) -> None:
        started.append(event.payload["n"])
        await gate.wait()
        finished.append(event.payload["n"])

    processor = Processor(store, registry, config(ordered=False))
    task = asyncio.create_task(processor.run())
    try:
        first = NewEvent("slow", {"n": 1})
        await store.event_insert_many([first])
        await eventually(lambda: _true(bool(started)))
        assert await store.admin.pause("slow", WHO)
        await processor.refresh_paused()  # what this process's API call does
        await store.event_insert_many([NewEvent("slow", {"n": 2})])

        async def second_waits() -> bool:
            return await pending_deliveries(store, "slow") == 1

        await eventually(second_waits)  # claimed, routed onto a waiting delivery
        gate.set()
        await eventually(lambda: _processed(store, first.id))  # finished and written back
        assert started == [1]  # the second never started
    finally:
        processor.stop()
        await asyncio.wait_for(task, 30)
    assert started == [1] and finished == [1]


async def _true(value: bool) -> bool:
    return value


async def _processed(store: Store, event_id: uuid.UUID) -> bool:
    event = await store.event_get(event_id)
    return event is not None and event.processed and event.outcome == "succeeded"


async def test_the_pause_survives_a_restart_and_reaches_other_workers(
    store_url: str, store: Store
) -> None:
    calls: collections.Counter[str] = collections.Counter()
    registry = counting_registry(calls)
    # Another process pauses (its API): this worker learns it by reading the table.
    worker = Processor(store, registry, config(ordered=True))
    await worker.refresh_paused()
    assert worker.producer.paused == frozenset()
    assert await store.admin.pause("fan_b", WHO)
    await worker.refresh_paused()  # the heartbeat chore's read, every 2 s
    assert worker.producer.paused == {"fan_b"}

    await store.event_insert_many(publish_both(None))
    settings = Settings(database_url=store_url, poll_interval_ms=200)
    restarted = Runtime(settings, registry=registry)  # a fresh worker: nothing in memory
    try:
        await restarted.prepare(attempts=1)
        await restarted.processor.run(until_idle=True)
        assert not any(key.startswith("fan_b") for key in calls)
        assert {key for key in calls if not key.startswith("fan_b")} == {
            f"{name}:{n}" for name in ("solo", "fan_a") for n in range(3)
        }
        assert await store.admin.resume("fan_b", WHO)
        await worker.refresh_paused()
        assert worker.producer.paused == frozenset()
        await worker.run(until_idle=True)
    finally:
        await restarted.store.close()
    assert calls == {f"{name}:{n}": 1 for name in ("solo", "fan_a", "fan_b") for n in range(3)}


async def test_a_resume_wakes_a_running_worker(store: Store) -> None:
    calls: collections.Counter[str] = collections.Counter()
    registry = counting_registry(calls)
    assert await store.admin.pause("fan_b", WHO)
    processor = Processor(
        store, registry, ProcessorConfig(ordered=False, poll_interval_ms=60_000)
    )  # no poll in the test's time: only the resume's wake-up can start fan_b
    task = asyncio.create_task(processor.run())
    try:
        await store.event_insert_many([NewEvent("f", {"n": 1})])
        await eventually(lambda: _true(calls["fan_a:1"] == 1))

        async def waiting() -> bool:
            return await pending_deliveries(store, "fan_b") == 1

        await eventually(waiting)
        assert calls["fan_b:1"] == 0
        assert await store.admin.resume("fan_b", WHO)
        await processor.refresh_paused()
        await eventually(lambda: _true(calls["fan_b:1"] == 1))
    finally:
        processor.stop()
        await asyncio.wait_for(task, 30)
