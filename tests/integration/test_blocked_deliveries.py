"""Blocked aggregates under the delivery model: a block is per (handler, aggregate).

A delivery that keeps failing (or, with AGGREGATE_FAILURE=block, was
dead-lettered) holds back its own handler's later deliveries of the
aggregate, never another handler's; the summary reports it with the handler,
beside the events still blocking on their own rows (handler None).
"""

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import httpx
import pytest

from eventproc import Event, HandlerContext, NewEvent, PermanentError, Registry
from eventproc.config import AggregateFailure, Settings
from eventproc.engine import Processor
from eventproc.http import create_app
from eventproc.http.health import blocked_json
from eventproc.processor_config import ProcessorConfig
from eventproc.retry import RetryPolicy
from eventproc.runtime import Runtime
from eventproc.store import BlockedSummary, ClaimPolicy, Lease, Store, WriteBack
from support.served import serving

Start = Callable[[Processor], Awaitable[None]]
# A failure is retried a minute later: long after the test has looked.
SLOW_RETRY = RetryPolicy(max_retries=5, base_ms=60_000, max_ms=60_000)


def config(**overrides: object) -> ProcessorConfig:
    values: dict[str, object] = {
        "batch_size": 20,
        "concurrency": 20,
        "poll_interval_ms": 100,
        "retry": SLOW_RETRY,
        "ordered": True,
    }
    values.update(overrides)
    return ProcessorConfig(**values)  # type: ignore[arg-type]


def fan_registry(calls: dict[str, list[int]], failing: dict[str, Exception]) -> Registry:
    """Subscriptions ``good`` and ``bad`` of t.fan; those in ``failing`` raise on event n=0."""
    registry = Registry()
    for name in ("good", "bad"):

        async def handle(event: Event, ctx: HandlerContext, name: str = name) -> None:
            n = int(event.payload["n"])
            calls[name].append(n)
            if n == 0 and name in failing:
                raise failing[name]

        registry.register("t.fan", handle, name=name)
    return registry


def aggregate_of(count: int, kind: str = "t.fan") -> tuple[uuid.UUID, list[NewEvent]]:
    aggregate = uuid.uuid4()
    return aggregate, [
        NewEvent(kind, {"n": n}, aggregate_id=aggregate, aggregate_type="intro")
        for n in range(count)
    ]


async def block_seen(store: Store, ready: Callable[[BlockedSummary], bool]) -> BlockedSummary:
    """The first summary ``ready`` accepts (a background processor is getting there)."""
    async with asyncio.timeout(15):
        while True:
            summary = await store.blocked_summary(include_dead_letters=True)
            if ready(summary):
                return summary
            await asyncio.sleep(0.05)


async def retrying_on_its_row(store: Store) -> list[NewEvent]:
    """An aggregate held back as before deliveries: its head retries on the event's own row."""
    _, events = aggregate_of(2, "t.row")
    await store.event_insert_many(events)
    [head] = await store.event_claim_many("w:1", ClaimPolicy(30, True, 1))
    await store.event_write_back([WriteBack.retry(Lease.of(head), 60, "later", 1)])
    return events


async def test_a_failing_subscription_blocks_its_own_deliveries_of_the_aggregate_only(
    store: Store, running: Start
) -> None:
    calls: dict[str, list[int]] = {"good": [], "bad": []}
    registry = fan_registry(calls, {"bad": RuntimeError("analytics is down")})
    aggregate, events = aggregate_of(3)
    await store.event_insert_many(events)
    await running(Processor(store, registry, config()))
    summary = await block_seen(store, lambda s: s.count > 0 and len(calls["good"]) == 3)
    [item] = summary.items
    assert (item.handler, item.aggregate_id, item.event_id) == ("bad", aggregate, events[0].id)
    assert (item.aggregate_type, item.event_type, item.reason) == ("intro", "t.fan", "retrying")
    assert item.retry_at is not None and item.retry_at > summary.database_now
    assert item.waiting == 2  # bad's deliveries of events 1 and 2
    second = await store.event_get(events[1].id)
    assert second is not None and item.waiting_since == second.created_at
    assert sorted(calls["good"]) == [0, 1, 2]  # the healthy handler moved on
    assert calls["bad"] == [0]  # its later deliveries wait behind the retry
    parked = await store.blocked_summary(include_dead_letters=False)
    assert parked.items == summary.items  # a retry blocks in both modes
    assert await store.aggregates_blocked() == [item]
    [shown] = blocked_json(summary)
    assert shown["handler"] == "bad" and shown["blockedBy"] == str(events[0].id)


async def test_block_mode_reports_a_dead_lettered_delivery_until_it_is_discarded(
    store: Store,
) -> None:
    calls: dict[str, list[int]] = {"good": [], "bad": []}
    registry = fan_registry(calls, {"bad": PermanentError("poison")})
    aggregate, events = aggregate_of(3)
    await store.event_insert_many(events)
    blocking = config(park_failed_aggregates=False)
    await Processor(store, registry, blocking).run(until_idle=True)
    assert (sorted(calls["good"]), calls["bad"]) == ([0, 1, 2], [0])
    summary = await store.blocked_summary(include_dead_letters=True)
    [item] = summary.items
    assert (item.handler, item.aggregate_id, item.event_id) == ("bad", aggregate, events[0].id)
    assert (item.reason, item.retry_at, item.waiting) == ("dead_lettered", None, 2)
    assert item.waiting_due == 2  # due but for the block
    assert (await store.blocked_summary(include_dead_letters=False)).items == ()
    [letter] = await store.dead_letter_list()
    assert letter.handler == "bad"
    assert await store.dead_letter_delete([letter.id]) == 1
    assert (await store.blocked_summary(include_dead_letters=True)).items == ()
    await Processor(store, registry, blocking).run(until_idle=True)
    assert calls["bad"] == [0, 1, 2]  # the block the summary showed was the claim's


async def test_a_routed_event_dead_lettered_by_all_is_a_block_per_handler_not_on_its_row(
    store: Store,
) -> None:
    calls: dict[str, list[int]] = {"good": [], "bad": []}
    poison: dict[str, Exception] = {"good": PermanentError("x"), "bad": PermanentError("x")}
    _, events = aggregate_of(3)
    await store.event_insert_many(events)
    await Processor(store, fan_registry(calls, poison), config(park_failed_aggregates=False)).run(
        until_idle=True
    )
    head = await store.event_get(events[0].id)
    assert head is not None and head.outcome == "dead_lettered"  # and routed: not a row head
    summary = await store.blocked_summary(include_dead_letters=True)
    assert [(item.handler, item.event_id, item.waiting) for item in summary.items] == [
        ("bad", events[0].id, 2),
        ("good", events[0].id, 2),
    ]


async def test_blocks_on_rows_and_on_deliveries_are_listed_oldest_first_within_the_bound(
    store: Store, running: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventproc.store import summaries

    on_row = await retrying_on_its_row(store)
    calls: dict[str, list[int]] = {"good": [], "bad": []}
    registry = fan_registry(calls, {"bad": RuntimeError("down")})
    _, older = aggregate_of(2)
    _, newer = aggregate_of(2)
    await store.event_insert_many(older)
    await store.event_insert_many(newer)
    await running(Processor(store, registry, config()))
    summary = await block_seen(store, lambda s: s.count == 3 and len(calls["good"]) == 4)
    assert [(item.event_id, item.handler) for item in summary.items] == [
        (on_row[0].id, None),
        (older[0].id, "bad"),
        (newer[0].id, "bad"),
    ]
    assert summary.items[0].waiting == 1 and not summary.capped
    assert blocked_json(summary)[0]["handler"] is None
    monkeypatch.setattr(summaries, "BLOCKED_SCAN", 2)
    capped = await store.blocked_summary(include_dead_letters=True)
    assert capped.items == summary.items[:2] and capped.capped


async def test_health_shows_the_blocked_handler(store_url: str) -> None:
    calls: dict[str, list[int]] = {"good": [], "bad": []}
    registry = fan_registry(calls, {"bad": PermanentError("poison")})
    settings = Settings(
        database_url=store_url, poll_interval_ms=60_000, aggregate_failure=AggregateFailure.BLOCK
    )
    runtime = Runtime(settings, registry=registry)
    await runtime.prepare(attempts=1)
    try:
        aggregate, events = aggregate_of(3)
        await runtime.store.event_insert_many(events)
        await runtime.processor.run(until_idle=True)
        async with serving(create_app(runtime)) as url, httpx.AsyncClient(base_url=url) as client:
            body = (await client.get("/health")).json()
    finally:
        await runtime.store.close()
    [blocked] = body["blockedAggregates"]
    assert blocked["aggregateId"] == str(aggregate) and blocked["handler"] == "bad"
    assert blocked["blockedBy"] == str(events[0].id) and blocked["waiting"] == 2
    assert blocked["reason"] == "dead_lettered" and body["blockedAggregateCount"] == 1
