"""Many subscriptions per event: one delivery each, with its own retries, dead letter and order."""

import asyncio
import uuid

import pytest

from eventproc import Event, HandlerContext, NewEvent, PermanentError, Registry
from eventproc.engine import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.retry import RetryPolicy
from eventproc.store import Store


def config(**overrides: object) -> ProcessorConfig:
    values: dict[str, object] = {
        "batch_size": 20,
        "concurrency": 20,
        "poll_interval_ms": 200,
        "retry": RetryPolicy(max_retries=3, base_ms=10, max_ms=50),
        "ordered": False,
    }
    values.update(overrides)
    return ProcessorConfig(**values)  # type: ignore[arg-type]


async def rows(store: Store, sql: str, *params: object) -> list[tuple[object, ...]]:
    async with store.begin() as conn:
        result = await conn.exec_driver_sql(sql, params)
        return [tuple(row) for row in result.all()]


async def deliveries_of(store: Store, event_id: uuid.UUID) -> dict[str, tuple[object, ...]]:
    found = await rows(
        store,
        "SELECT handler, status, outcome, attempts FROM event_deliveries WHERE event_id = "
        + ("$1" if store.backend == "postgresql" else "?"),
        event_id if store.backend == "postgresql" else str(event_id),
    )
    return {str(row[0]): row[1:] for row in found}


@pytest.mark.through_pgbouncer
async def test_each_subscription_gets_the_event_and_the_event_closes_when_all_are_done(
    store: Store,
) -> None:
    registry = Registry()
    seen: dict[str, list[int]] = {"credits": [], "notify": [], "analytics": []}

    for name in seen:

        async def handle(event: Event, ctx: HandlerContext, name: str = name) -> None:
            seen[name].append(event.payload["n"])

        registry.register("intro.completed", handle, name=name)

    events = [NewEvent("intro.completed", {"n": n}) for n in range(30)]
    await store.event_insert_many(events)
    await Processor(store, registry, config()).run(until_idle=True)
    for name in seen:
        assert sorted(seen[name]) == list(range(30)), name
    first = await store.event_get(events[0].id)
    assert first is not None and first.processed and first.outcome == "succeeded"
    assert await deliveries_of(store, events[0].id) == {
        name: ("done", "succeeded", 1) for name in seen
    }
    assert (await store.stats_snapshot()).backlog == 0


async def test_a_failing_subscription_retries_alone_and_dead_letters_under_its_name(
    store: Store,
) -> None:
    registry = Registry()
    calls: dict[str, int] = {"good": 0, "bad": 0}

    @registry.handler("t.fan", name="good")
    async def good(event: Event, ctx: HandlerContext) -> None:
        calls["good"] += 1

    @registry.handler("t.fan", name="bad")
    async def bad(event: Event, ctx: HandlerContext) -> None:
        calls["bad"] += 1
        raise RuntimeError("analytics is down")

    event = NewEvent("t.fan", {})
    await store.event_insert_many([event])
    await Processor(store, registry, config()).run(until_idle=True)
    assert calls == {"good": 1, "bad": 3}  # MAX_RETRIES attempts, the good one once
    done = await store.event_get(event.id)
    assert done is not None and done.processed and done.outcome == "partial"
    assert done.metadata["retry_count"] == 3
    assert "analytics is down" in done.metadata["last_error"]
    assert done.metadata["last_error_handler"] == "bad"
    letters = await store.dead_letter_list()
    assert [(letter.event_id, letter.handler) for letter in letters] == [(event.id, "bad")]
    assert await deliveries_of(store, event.id) == {
        "good": ("done", "succeeded", 1),
        "bad": ("done", "dead_lettered", 3),
    }


async def test_a_single_subscription_runs_on_the_event_row_and_moves_to_a_delivery_on_failure(
    store: Store,
) -> None:
    registry = Registry()
    attempts: list[int] = []

    @registry.handler("t.one", name="only")
    async def only(event: Event, ctx: HandlerContext) -> None:
        attempts.append(ctx.attempt)
        if event.payload["fail"] and len(attempts) < 3:
            raise RuntimeError("flaky")

    ok, flaky = NewEvent("t.one", {"fail": False}), NewEvent("t.one", {"fail": True})
    await store.event_insert_many([ok])
    await Processor(store, registry, config()).run(until_idle=True)
    assert await deliveries_of(store, ok.id) == {}  # no delivery row: the fast path
    attempts.clear()
    await store.event_insert_many([flaky])
    await Processor(store, registry, config()).run(until_idle=True)
    assert attempts == [1, 2, 3]
    assert await deliveries_of(store, flaky.id) == {"only": ("done", "succeeded", 3)}
    done = await store.event_get(flaky.id)
    assert done is not None and done.processed and done.outcome == "succeeded"


async def test_no_matching_subscription_is_skipped(store: Store) -> None:
    registry = Registry()

    @registry.handler("t.x", name="x", filter={"payload": {"keep": [True]}})
    async def x(event: Event, ctx: HandlerContext) -> None:
        raise AssertionError("filtered out")

    event = NewEvent("t.x", {"keep": False})
    await store.event_insert_many([event])
    await Processor(store, registry, config()).run(until_idle=True)
    done = await store.event_get(event.id)
    assert done is not None and done.processed and done.outcome == "skipped"
    assert done.metadata["skipped_reason"] == "no subscription takes this event"
    assert "handled_by" not in done.metadata


async def test_ordering_is_per_handler_and_aggregate(store: Store) -> None:
    """A handler stuck on an aggregate's first event holds back only its own later ones."""
    registry = Registry()
    order: dict[str, list[int]] = {"fast": [], "stuck": []}
    release = asyncio.Event()

    @registry.handler("t.o", name="fast")
    async def fast(event: Event, ctx: HandlerContext) -> None:
        order["fast"].append(event.payload["n"])

    @registry.handler("t.o", name="stuck")
    async def stuck(event: Event, ctx: HandlerContext) -> None:
        if event.payload["n"] == 0 and ctx.attempt < 3:
            raise RuntimeError("not yet")
        order["stuck"].append(event.payload["n"])
        if event.payload["n"] == 0:
            release.set()

    aggregate = uuid.uuid4()
    events = [NewEvent("t.o", {"n": n}, aggregate_id=aggregate) for n in range(6)]
    await store.event_insert_many(events)
    await Processor(store, registry, config(ordered=True)).run(until_idle=True)
    assert order["fast"] == list(range(6))
    assert order["stuck"] == list(range(6))
    assert release.is_set()


async def test_replaying_one_delivery_leaves_the_others_alone(store: Store) -> None:
    registry = Registry()
    calls: dict[str, int] = {"a": 0, "b": 0}

    for name in calls:

        async def handle(event: Event, ctx: HandlerContext, name: str = name) -> None:
            calls[name] += 1
            if name == "b" and calls[name] == 1:
                raise PermanentError("bad once")

        registry.register("t.r", handle, name=name)

    event = NewEvent("t.r", {})
    await store.event_insert_many([event])
    await Processor(store, registry, config()).run(until_idle=True)
    assert calls == {"a": 1, "b": 1}
    assert (await store.event_get(event.id)).outcome == "partial"  # type: ignore[union-attr]
    assert await store.delivery_replay(event.id, "b")
    pending = await store.event_get(event.id)
    assert pending is not None and not pending.processed
    await Processor(store, registry, config()).run(until_idle=True)
    assert calls == {"a": 1, "b": 2}
    done = await store.event_get(event.id)
    assert done is not None and done.processed and done.outcome == "succeeded"
    assert [letter.replayed_at is not None for letter in await store.dead_letter_list()] == [True]


@pytest.mark.parametrize("same_batch", [True, False])
async def test_a_runs_failure_is_not_written_after_its_earlier_success_was_refused(
    store: Store, same_batch: bool
) -> None:
    """A stalled run [a, b]: a was taken over, so b's failure must not be recorded before a ran.

    (The stale-run revocation normally clears b's lease; here it is put back,
    as when the revocation skipped b's row because it was locked.)
    """
    from eventproc.store.protocol import ClaimPolicy, Lease, WriteBack

    aggregate = uuid.uuid4()
    first, second = (NewEvent("t.run", {"n": n}, aggregate_id=aggregate) for n in range(2))
    await store.event_insert_many([first, second])
    policy = ClaimPolicy(lease_seconds=0.2, ordered=True, limit=2, follow=True)
    stalled = await store.event_claim_many("stalled", policy)
    assert [event.id for event in stalled] == [first.id, second.id]
    await asyncio.sleep(0.3)
    taken = await store.event_claim_many("taker", ClaimPolicy(lease_seconds=30, limit=1))
    assert [event.id for event in taken] == [first.id]
    placeholder = "$1" if store.backend == "postgresql" else "?"
    async with store.begin() as conn:
        await conn.exec_driver_sql(
            "UPDATE events SET locked_by = 'stalled', locked_until = "
            + (
                "now() + interval '30 seconds'"
                if store.backend == "postgresql"
                else "strftime('%Y-%m-%d %H:%M:%f', 'now', '+30 seconds')"
            )
            + f" WHERE id = {placeholder}",
            (second.id if store.backend == "postgresql" else str(second.id),),
        )
    done = WriteBack.succeeded(Lease(first.id, "stalled"), "h")
    failed = WriteBack.retry(Lease(second.id, "stalled"), 0.0, "boom", 1, "h")
    if same_batch:
        assert await store.event_write_back([done, failed], in_order=True) == 0
    else:
        assert await store.event_write_back([done], in_order=True) == 0
        assert await store.event_write_back([failed], in_order=True) == 0
    assert await deliveries_of(store, second.id) == {}  # not moved onto a delivery
    row = await store.event_get(second.id)
    assert row is not None and row.locked_by == "stalled" and "last_error" not in row.metadata
