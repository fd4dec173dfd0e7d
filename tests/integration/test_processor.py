"""The processor on both backends: outcomes, retries, dead letters, ordering."""

import asyncio
import contextvars
import itertools
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from pydantic import BaseModel

from eventproc import Event, HandlerContext, NewEvent, PermanentError, Registry, RetryLater
from eventproc.engine import Processor
from eventproc.errors import StoreError, StoreUnavailable
from eventproc.processor_config import ProcessorConfig
from eventproc.retry import RetryPolicy
from eventproc.store import EventFilter, Store
from eventproc.store.protocol import ClaimPolicy, Lease, WriteBack


def config(**overrides: object) -> ProcessorConfig:
    values: dict[str, object] = {
        "batch_size": 20,
        "concurrency": 20,
        "poll_interval_ms": 60_000,
        "retry": RetryPolicy(max_retries=4, base_ms=20, max_ms=1000),
    }
    values.update(overrides)
    return ProcessorConfig(**values)  # type: ignore[arg-type]


@pytest.mark.through_pgbouncer
async def test_processes_all_events_and_counts_them(store: Store) -> None:
    registry = Registry()
    seen: list[int] = []

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        seen.append(event.payload["n"])

    await store.event_insert_many([NewEvent("t.ok", {"n": n}) for n in range(250)])
    processor = Processor(store, registry, config())
    await processor.run(until_idle=True)
    assert sorted(seen) == list(range(250))
    assert processor.stats.success_count == 250 == processor.stats.total_processed
    assert (await store.stats_snapshot()).backlog == 0


@pytest.mark.through_pgbouncer
async def test_failing_handler_retries_with_growing_delays_then_dead_letters_once(
    store: Store,
) -> None:
    registry = Registry()
    attempts: list[float] = []

    @registry.handler("t.fail")
    async def fail(event: Event, ctx: HandlerContext) -> None:
        attempts.append(time.monotonic())
        raise ValueError(f"broken on attempt {ctx.attempt}")

    event = NewEvent("t.fail", {"x": 1})
    await store.event_insert_many([event])
    processor = Processor(store, registry, config(retry=RetryPolicy(4, base_ms=50, max_ms=1000)))
    await processor.run(until_idle=True)

    assert len(attempts) == 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    # Attempt n waits at least half its ceiling (50 ms * 2**(n-1)): 25, 50, 100 ms.
    assert all(gap >= 0.025 * 2**n for n, gap in enumerate(gaps)), gaps
    assert gaps[2] > gaps[0], gaps
    row = await store.event_get(event.id)
    assert row is not None and row.processed and row.outcome == "dead_lettered"
    assert row.metadata["retry_count"] == 4
    assert "broken on attempt 4" in row.metadata["last_error"]
    [letter] = await store.dead_letter_list()
    assert letter.event_id == event.id and letter.retry_count == 4
    assert "ValueError: broken on attempt 4" in letter.error_message
    assert letter.error_detail is not None and "Traceback" in letter.error_detail
    assert processor.stats.error_count == 3 and processor.stats.dead_letter_count == 1


@pytest.mark.through_pgbouncer
async def test_permanent_error_dead_letters_at_once(store: Store) -> None:
    registry = Registry()

    @registry.handler("t.perm")
    async def perm(event: Event, ctx: HandlerContext) -> None:
        raise PermanentError("cannot ever work")

    event = NewEvent("t.perm", {})
    await store.event_insert_many([event])
    await Processor(store, registry, config()).run(until_idle=True)
    [letter] = await store.dead_letter_list()
    assert letter.error_message == "cannot ever work" and letter.retry_count == 1


class Payload(BaseModel):
    user_id: uuid.UUID
    count: int


async def test_invalid_payload_dead_letters_naming_fields(store: Store) -> None:
    registry = Registry()
    ran: list[Payload] = []

    @registry.handler("t.model", payload=Payload)
    async def typed(event: Event, ctx: HandlerContext) -> None:
        ran.append(ctx.payload)

    good = NewEvent("t.model", {"user_id": str(uuid.uuid4()), "count": 2})
    bad = NewEvent("t.model", {"user_id": "nope"})
    await store.event_insert_many([good, bad])
    await Processor(store, registry, config()).run(until_idle=True)
    assert len(ran) == 1 and isinstance(ran[0], Payload) and ran[0].count == 2
    [letter] = await store.dead_letter_list()
    assert letter.event_id == bad.id
    assert "user_id" in letter.error_message and "count" in letter.error_message


async def test_unknown_type_is_skipped_with_warning(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    event = NewEvent("nobody.handles.this", {})
    await store.event_insert_many([event])
    with caplog.at_level(logging.WARNING):
        await Processor(store, Registry(), config()).run(until_idle=True)
    row = await store.event_get(event.id)
    assert row is not None and row.processed and row.outcome == "skipped"
    assert "No handler registered for event type: nobody.handles.this" in caplog.text


@pytest.mark.through_pgbouncer
async def test_retry_later_does_not_spend_the_budget(store: Store) -> None:
    registry = Registry()
    calls: list[int] = []

    @registry.handler("t.later")
    async def later(event: Event, ctx: HandlerContext) -> None:
        calls.append(ctx.attempt)
        if len(calls) < 6:
            raise RetryLater(0.01, "not yet")

    event = NewEvent("t.later", {})
    await store.event_insert_many([event])
    await Processor(store, registry, config(retry=RetryPolicy(2, 10, 20))).run(until_idle=True)
    assert calls == [1, 1, 1, 1, 1, 1]
    row = await store.event_get(event.id)
    assert row is not None and row.outcome == "succeeded"


async def test_handler_timeout_counts_as_failure(store: Store) -> None:
    registry = Registry()

    @registry.handler("t.hang", timeout_seconds=0.05)
    async def hang(event: Event, ctx: HandlerContext) -> None:
        await asyncio.sleep(10)

    await store.event_insert_many([NewEvent("t.hang", {})])
    await Processor(store, registry, config(retry=RetryPolicy(2, 10, 20))).run(until_idle=True)
    [letter] = await store.dead_letter_list()
    assert "timed out after 0.05s" in letter.error_message


async def test_a_handler_returning_any_awaitable_runs_under_its_timeout(store: Store) -> None:
    registry = Registry()

    def never(event: Event, ctx: HandlerContext) -> "asyncio.Future[None]":
        return asyncio.get_running_loop().create_future()  # not a coroutine; never resolves

    def at_once(event: Event, ctx: HandlerContext) -> "asyncio.Future[None]":
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    registry.handler("t.never", timeout_seconds=0.05)(never)
    registry.handler("t.now")(at_once)
    await store.event_insert_many([NewEvent("t.never", {}), NewEvent("t.now", {})])
    processor = Processor(store, registry, config(retry=RetryPolicy(1, 10, 20)))
    await asyncio.wait_for(processor.run(until_idle=True), 10)
    [letter] = await store.dead_letter_list()
    assert letter.event_type == "t.never" and "timed out after 0.05s" in letter.error_message
    assert processor.stats.success_count == 1


async def test_a_handler_that_starts_quickly_then_waits_still_times_out(store: Store) -> None:
    registry = Registry()

    @registry.handler("t.late", timeout_seconds=0.1)
    async def late(event: Event, ctx: HandlerContext) -> None:
        time.sleep(0.06)  # noqa: ASYNC251 - work that does not wait counts against the timeout
        await asyncio.sleep(10)

    await store.event_insert_many([NewEvent("t.late", {})])
    processor = Processor(store, registry, config(retry=RetryPolicy(1, 10, 20)))
    began = time.monotonic()
    await asyncio.wait_for(processor.run(until_idle=True), 10)
    [letter] = await store.dead_letter_list()
    assert "timed out after 0.1s" in letter.error_message
    assert time.monotonic() - began < 5


@pytest.mark.through_pgbouncer
async def test_transactional_handler_commits_effects_with_outcome(store: Store) -> None:
    registry = Registry()

    @registry.handler("t.tx", transactional=True)
    async def tx(event: Event, ctx: HandlerContext) -> None:
        await ctx.publish(
            NewEvent("t.followup", {}, id=uuid.uuid5(event.id, "followup"), created_by="tx")
        )
        if event.payload.get("fail"):
            raise RuntimeError("after publishing")

    ok, failing = NewEvent("t.tx", {}), NewEvent("t.tx", {"fail": True})
    await store.event_insert_many([ok, failing])
    await Processor(store, registry, config(retry=RetryPolicy(2, 10, 20))).run(until_idle=True)
    assert await store.event_get(uuid.uuid5(ok.id, "followup")) is not None
    assert await store.event_get(uuid.uuid5(failing.id, "followup")) is None
    # Replaying the succeeded one publishes nothing twice.
    await store.event_replay([ok.id])
    await Processor(store, registry, config()).run(until_idle=True)
    followups = await store.event_list(EventFilter(event_type="t.followup"))
    assert len(followups) == 1


@pytest.mark.through_pgbouncer
async def test_aggregate_events_run_one_at_a_time_in_order(store: Store) -> None:
    registry = Registry()
    running: set[uuid.UUID] = set()
    order: dict[uuid.UUID, list[int]] = {}
    overlaps = 0

    @registry.handler("t.agg")
    async def agg(event: Event, ctx: HandlerContext) -> None:
        nonlocal overlaps
        assert event.aggregate_id is not None
        if event.aggregate_id in running:
            overlaps += 1
        running.add(event.aggregate_id)
        await asyncio.sleep(0.001)
        order.setdefault(event.aggregate_id, []).append(event.payload["n"])
        running.discard(event.aggregate_id)

    aggregates = [uuid.uuid4() for _ in range(5)]
    batch = [NewEvent("t.agg", {"n": n}, aggregate_id=a) for n in range(20) for a in aggregates]
    await store.event_insert_many(batch)
    await Processor(store, registry, config()).run(until_idle=True)
    assert overlaps == 0
    assert all(seq == list(range(20)) for seq in order.values())
    assert len(order) == 5


async def test_failed_event_blocks_its_aggregate_until_it_succeeds(store: Store) -> None:
    registry = Registry()
    order: list[int] = []

    @registry.handler("t.flaky")
    async def flaky(event: Event, ctx: HandlerContext) -> None:
        if event.payload["n"] == 0 and ctx.attempt < 3:
            raise RuntimeError("transient")
        order.append(event.payload["n"])

    aggregate = uuid.uuid4()
    await store.event_insert_many(
        [NewEvent("t.flaky", {"n": n}, aggregate_id=aggregate) for n in range(3)]
    )
    await Processor(store, registry, config()).run(until_idle=True)
    assert order == [0, 1, 2]


async def test_event_claimed_over_budget_is_dead_lettered_without_running(
    store: Store,
) -> None:
    from eventproc.store import ClaimPolicy

    registry = Registry()
    ran: list[int] = []

    @registry.handler("t.killer")
    async def killer(event: Event, ctx: HandlerContext) -> None:
        ran.append(ctx.attempt)

    event = NewEvent("t.killer", {})
    await store.event_insert_many([event])
    for n in range(4):  # four claims whose workers "died": leases just expire
        await store.event_claim_many(f"dead:{n}", ClaimPolicy(0.01, True, 1))
        await asyncio.sleep(0.03)
    await Processor(store, registry, config()).run(until_idle=True)
    assert ran == []
    [letter] = await store.dead_letter_list()
    assert "claimed 5 times without finishing" in letter.error_message


async def test_polling_disabled_processes_only_on_request(store: Store) -> None:
    registry = Registry()
    seen: list[int] = []

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        seen.append(1)

    processor = Processor(
        store, registry, config(polling_enabled=False, poll_interval_ms=10, batch_size=5)
    )
    task = asyncio.create_task(processor.run())
    await store.event_insert_many([NewEvent("t.ok", {}) for _ in range(8)])
    await asyncio.sleep(0.3)
    assert seen == []
    assert await processor.process_batch() == 5
    processor.signals.flushed.clear()
    await asyncio.wait_for(processor.signals.flushed.wait(), 5)
    assert len(seen) == 5
    processor.stop()
    await task


async def test_park_moves_on_block_waits(store: Store) -> None:
    registry = Registry()
    handled: list[int] = []

    @registry.handler("t.poison")
    async def poison(event: Event, ctx: HandlerContext) -> None:
        if event.payload["n"] == 0:
            raise PermanentError("poison")
        handled.append(event.payload["n"])

    aggregate = uuid.uuid4()
    events = [NewEvent("t.poison", {"n": n}, aggregate_id=aggregate) for n in range(3)]
    await store.event_insert_many(events)
    await Processor(store, registry, config(park_failed_aggregates=False)).run(until_idle=True)
    assert handled == []  # block: the later events wait for an operator
    waiting = await store.event_get(events[1].id)
    assert waiting is not None and not waiting.processed and waiting.attempts == 0

    await Processor(store, registry, config(park_failed_aggregates=True)).run(until_idle=True)
    assert handled == [1, 2]


@pytest.mark.through_pgbouncer
async def test_burst_on_one_aggregate_drains_in_runs_and_in_order(store: Store) -> None:
    registry = Registry()
    order: list[int] = []

    @registry.handler("t.burst")
    async def burst(event: Event, ctx: HandlerContext) -> None:
        if event.payload["n"] == 150 and ctx.attempt == 1:
            raise RuntimeError("one hiccup in the middle of a run")
        order.append(event.payload["n"])

    aggregate = uuid.uuid4()
    await store.event_insert_many(
        [NewEvent("t.burst", {"n": n}, aggregate_id=aggregate) for n in range(400)]
    )
    processor = Processor(store, registry, config(batch_size=20))
    claims = 0
    claim = store.event_claim_many

    async def counting(*args: object, **kwargs: object) -> list[Event]:
        nonlocal claims
        claims += 1
        return await claim(*args, **kwargs)  # type: ignore[arg-type]

    store.event_claim_many = counting  # type: ignore[method-assign]
    await processor.run(until_idle=True)
    assert order == list(range(400))
    assert claims < 100  # runs of up to 20, not one event per claim
    stats = await store.stats_snapshot()
    assert stats.backlog == 0


@pytest.mark.through_pgbouncer
async def test_transactional_event_in_a_run_commits_after_its_predecessor(
    store: Store,
) -> None:
    """Ordering is per (handler, aggregate): each sees its own earlier events done."""
    from sqlalchemy import select

    from eventproc.store.schema import events as events_table

    registry = Registry()
    seen_processed: list[bool] = []

    @registry.handler("t.tx", transactional=True)
    async def tx(event: Event, ctx: HandlerContext) -> None:
        if event.payload["previous"] is None:
            return
        previous = uuid.UUID(event.payload["previous"])
        row = (
            await ctx.connection.execute(
                select(events_table.c.processed).where(events_table.c.id == previous)
            )
        ).one()
        seen_processed.append(bool(row.processed))

    aggregate = uuid.uuid4()
    chain: list[NewEvent] = []
    for _ in range(6):
        previous = str(chain[-1].id) if chain else None
        chain.append(NewEvent("t.tx", {"previous": previous}, aggregate_id=aggregate))
    await store.event_insert_many(chain)
    await Processor(store, registry, config(batch_size=20)).run(until_idle=True)
    assert seen_processed == [True] * 5


@dataclass
class ClaimWatch:
    most: int = 0  # claims seen in flight together
    total: int = 0
    carried: int = 0  # completions written back by claims
    failed_carrying: int = 0  # completions a failed claim had taken
    injected: int = 0  # claims failed with fail_first_with


def watch_claims(
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
    *,
    fail_second_of_a_pair: bool = False,
    fail_first_carrying: bool = False,
    fail_first_with: StoreError | None = None,
) -> ClaimWatch:
    """Wrap the store's claim and count what goes through it (and fail one, if asked)."""
    original = store.event_claim_many
    watch = ClaimWatch()
    active = 0
    failed = False

    async def claim(
        token: str, policy: ClaimPolicy, *, completing: Sequence[WriteBack] = ()
    ) -> list[Event]:
        nonlocal active, failed
        assert policy.limit >= 1, policy  # never LIMIT 0 (or "no limit" on SQLite)
        active += 1
        watch.total += 1
        watch.most = max(watch.most, active)
        try:
            if fail_first_with is not None and not failed:
                failed = True
                watch.injected += 1
                raise fail_first_with
            if fail_second_of_a_pair and active > 1 and not failed:
                failed = True
                raise StoreUnavailable("injected: connection lost during a claim")
            if fail_first_carrying and completing and not failed:
                failed = True
                watch.failed_carrying += len(completing)
                raise StoreUnavailable("injected: connection lost during a carrying claim")
            claimed = await original(token, policy, completing=completing)
            watch.carried += len(completing)
            return claimed
        finally:
            active -= 1

    monkeypatch.setattr(store, "event_claim_many", claim)
    return watch


async def test_claims_at_once_1_keeps_one_claim_out(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry()

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        await asyncio.sleep(0.001)

    claims = watch_claims(store, monkeypatch)
    await store.event_insert_many([NewEvent("t.ok", {"n": n}) for n in range(100)])
    processor = Processor(
        store, registry, config(batch_size=5, concurrency=20, ordered=False, claims_at_once=1)
    )
    await processor.run(until_idle=True)
    assert processor.stats.success_count == 100
    assert claims.most == 1


@pytest.mark.through_pgbouncer
async def test_a_deep_backlog_is_claimed_by_several_claims_at_once(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry()
    seen: list[int] = []
    running = busiest = 0

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        nonlocal running, busiest
        running += 1
        busiest = max(busiest, running)
        seen.append(event.payload["n"])
        try:
            if event.payload["n"] % 3:  # some finish without waiting, most wait
                await asyncio.sleep(0.001)
        finally:
            running -= 1

    claims = watch_claims(store, monkeypatch)
    await store.event_insert_many([NewEvent("t.ok", {"n": n}) for n in range(300)])
    processor = Processor(
        store, registry, config(batch_size=5, concurrency=20, ordered=False, claims_at_once=3)
    )
    await processor.run(until_idle=True)
    assert sorted(seen) == list(range(300))  # each once
    assert 2 <= claims.most <= 3
    assert busiest <= 20  # never more handlers at once than CONCURRENCY, whatever was claimed


async def test_quick_handlers_let_the_next_claim_go_out_before_the_batch_is_handled(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Handlers that never wait: one batch beyond CONCURRENCY may be claimed,
    # so two full claims are out together even with CONCURRENCY = BATCH_SIZE.
    registry = Registry()
    handled = 0

    @registry.handler("t.quick")
    async def quick(event: Event, ctx: HandlerContext) -> None:
        nonlocal handled
        handled += 1

    claims = watch_claims(store, monkeypatch)
    await store.event_insert_many([NewEvent("t.quick", {"n": n}) for n in range(200)])
    processor = Processor(
        store, registry, config(batch_size=10, concurrency=10, ordered=False, claims_at_once=2)
    )
    await asyncio.wait_for(processor.run(until_idle=True), 20)
    assert handled == 200
    assert claims.most == 2


async def test_events_claimed_beyond_concurrency_wait_for_a_slot(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry()
    running = busiest = 0
    gate = asyncio.Event()

    @registry.handler("t.wait")
    async def wait(event: Event, ctx: HandlerContext) -> None:
        nonlocal running, busiest
        running += 1
        busiest = max(busiest, running)
        try:
            await gate.wait()
        finally:
            running -= 1

    claims = watch_claims(store, monkeypatch)
    await store.event_insert_many([NewEvent("t.wait", {"n": n}) for n in range(30)])
    processor = Processor(
        store, registry, config(batch_size=5, concurrency=5, ordered=False, claims_at_once=2)
    )
    draining = asyncio.create_task(processor.run(until_idle=True))
    await asyncio.sleep(0.5)
    assert busiest == 5 and processor.in_flight <= 10
    gate.set()
    await asyncio.wait_for(draining, 20)
    assert busiest == 5 and processor.stats.success_count == 30
    assert claims.total >= 6


async def test_a_claim_that_fails_beside_another_loses_none_of_the_others_events(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry()
    seen: list[int] = []

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        seen.append(event.payload["n"])
        await asyncio.sleep(0.001)

    claims = watch_claims(store, monkeypatch, fail_second_of_a_pair=True)
    await store.event_insert_many([NewEvent("t.ok", {"n": n}) for n in range(100)])
    processor = Processor(
        store, registry, config(batch_size=5, concurrency=20, ordered=False, claims_at_once=3)
    )
    await asyncio.wait_for(processor.run(until_idle=True), 20)
    assert claims.most >= 2
    # Events the sibling claim took were handled, not left leased until expiry.
    assert sorted(seen) == list(range(100))
    assert (await store.stats_snapshot()).backlog == 0


async def test_successes_waiting_when_a_claim_goes_out_ride_with_it(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy worker writes its successes back with its next claim, not on their own.

    How many ride depends on timing (a claim sent ahead of the handlers
    finds none); what is certain is that a claim takes what is waiting.
    """
    registry = Registry()

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        return None

    claims = watch_claims(store, monkeypatch)
    new = [NewEvent("t.ok", {"n": n}) for n in range(20)]
    await store.event_insert_many(new)
    processor = Processor(store, registry, config(batch_size=10, concurrency=10, ordered=False))
    handled = await store.event_claim_many("w:1", ClaimPolicy(30, ordered=False, limit=10))
    for event in handled:  # handled by this worker, waiting in its completer
        processor.completer.add(WriteBack.succeeded(Lease.of(event)))
    assert processor.completer.pending == 10
    assert await processor.producer.claim_once() == 10
    assert claims.carried == 10 and processor.completer.pending == 0
    for event in handled:
        row = await store.event_get(event.id)
        assert row is not None and row.outcome == "succeeded"
    await asyncio.wait_for(processor.run(until_idle=True), 20)
    assert processor.stats.success_count == 20
    rows = [await store.event_get(event.id) for event in new]
    assert all(row is not None and row.outcome == "succeeded" for row in rows)


async def test_successes_a_failed_claim_carried_are_written_later(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry()
    seen: list[int] = []

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        seen.append(event.payload["n"])

    claims = watch_claims(store, monkeypatch, fail_first_carrying=True)
    await store.event_insert_many([NewEvent("t.ok", {"n": n}) for n in range(100)])
    processor = Processor(store, registry, config(batch_size=10, concurrency=20, ordered=False))
    await asyncio.wait_for(processor.run(until_idle=True), 20)
    assert claims.failed_carrying > 0
    assert sorted(seen) == list(range(100))  # none handled twice: the results were kept
    assert processor.stats.success_count == 100
    assert (await store.stats_snapshot()).backlog == 0


async def test_cancelling_run_stops_its_claimers(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry()

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        await asyncio.sleep(0.002)

    claims = watch_claims(store, monkeypatch)
    await store.event_insert_many([NewEvent("t.ok", {"n": n}) for n in range(3000)])
    processor = Processor(
        store, registry, config(batch_size=5, concurrency=20, ordered=False, claims_at_once=3)
    )
    task = asyncio.create_task(processor.run())
    await processor.signals.claimed.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=30)
    assert task in done and task.cancelled()
    after_cancel = claims.total
    await asyncio.sleep(0.3)
    assert claims.total == after_cancel  # nothing kept claiming behind a cancelled run
    assert (await store.stats_snapshot()).backlog > 0  # it was cancelled mid-backlog


async def test_the_in_flight_gauge_reads_running_handlers_at_scrape_time(store: Store) -> None:
    registry = Registry()
    started = asyncio.Semaphore(0)
    release = asyncio.Event()

    @registry.handler("t.block")
    async def block(event: Event, ctx: HandlerContext) -> None:
        started.release()
        await release.wait()

    await store.event_insert_many([NewEvent("t.block", {"n": n}) for n in range(3)])
    processor = Processor(store, registry, config())
    scrape = processor.metrics.registry.get_sample_value
    assert scrape("eventproc_in_flight") == 0
    running = asyncio.create_task(processor.run(until_idle=True))
    for _ in range(3):
        await asyncio.wait_for(started.acquire(), 10)
    assert scrape("eventproc_in_flight") == 3
    release.set()
    await asyncio.wait_for(running, 10)
    assert scrape("eventproc_in_flight") == 0


async def test_handlers_that_wait_run_side_by_side(store: Store) -> None:
    # Each handler waits until all ten are waiting at once: this finishes
    # only if a handler that waits hands the queue on to another runner.
    registry = Registry()
    waiting = 0
    all_in = asyncio.Event()

    @registry.handler("t.gather")
    async def gather(event: Event, ctx: HandlerContext) -> None:
        nonlocal waiting
        waiting += 1
        if waiting == 10:
            all_in.set()
        await all_in.wait()

    await store.event_insert_many([NewEvent("t.gather", {"n": n}) for n in range(10)])
    processor = Processor(store, registry, config(batch_size=10, concurrency=10, ordered=False))
    await asyncio.wait_for(processor.run(until_idle=True), 10)
    assert processor.stats.success_count == 10


CURRENT_EVENT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_event", default=None
)


async def test_each_handler_runs_in_a_context_of_its_own(store: Store) -> None:
    registry = Registry()
    seen: list[str | None] = []

    @registry.handler("t.ctx")
    async def remember(event: Event, ctx: HandlerContext) -> None:
        seen.append(CURRENT_EVENT.get())
        CURRENT_EVENT.set(str(event.id))
        if event.payload["n"] % 2:
            await asyncio.sleep(0)  # and after a wait, too
            seen.append(CURRENT_EVENT.get() if CURRENT_EVENT.get() != str(event.id) else None)

    await store.event_insert_many([NewEvent("t.ctx", {"n": n}) for n in range(20)])
    await Processor(store, registry, config(ordered=False)).run(until_idle=True)
    assert seen == [None] * 30


async def test_a_handler_timing_out_leaves_the_others_alone(store: Store) -> None:
    registry = Registry()

    @registry.handler("t.mixed", timeout_seconds=0.2)
    async def mixed(event: Event, ctx: HandlerContext) -> None:
        if event.payload["slow"]:
            await asyncio.sleep(5)

    new = [NewEvent("t.mixed", {"slow": n % 3 == 0}) for n in range(12)]
    await store.event_insert_many(new)
    processor = Processor(
        store, registry, config(ordered=False, retry=RetryPolicy(1, base_ms=10, max_ms=10))
    )
    await asyncio.wait_for(processor.run(until_idle=True), 20)
    outcomes: dict[bool, set[str | None]] = {}
    for event in new:
        row = await store.event_get(event.id)
        assert row is not None
        outcomes[event.payload["slow"]] = outcomes.get(event.payload["slow"], set()) | {row.outcome}
    assert outcomes == {True: {"dead_lettered"}, False: {"succeeded"}}


async def test_a_handler_cancelled_from_outside_does_not_strand_the_queue(
    store: Store,
) -> None:
    registry = Registry()
    handled: list[int] = []

    @registry.handler("t.mixed")
    async def mixed(event: Event, ctx: HandlerContext) -> None:
        if event.payload["n"] == 0:
            doomed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.05, doomed.cancel)
            await doomed  # raises CancelledError, though nobody cancelled the processor
        handled.append(event.payload["n"])

    await store.event_insert_many([NewEvent("t.mixed", {"n": n}) for n in range(5)])
    processor = Processor(store, registry, config(batch_size=5, concurrency=1, ordered=False))
    await asyncio.wait_for(processor.run(until_idle=True), 10)
    assert sorted(handled) == [1, 2, 3, 4]
    assert processor.stats.success_count == 4


async def test_a_claim_that_loses_a_deadlock_is_retried_without_an_outage(
    store: Store, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from eventproc.errors import StoreConflict

    registry = Registry()

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        return None

    claims = watch_claims(
        store, monkeypatch, fail_first_with=StoreConflict("injected: deadlock detected (40P01)")
    )
    await store.event_insert_many([NewEvent("t.ok", {"n": n}) for n in range(10)])
    processor = Processor(store, registry, config(ordered=False))
    with caplog.at_level(logging.INFO, logger="eventproc.processor"):
        await asyncio.wait_for(processor.run(until_idle=True), 10)
    assert claims.injected == 1 and processor.stats.success_count == 10
    messages = [record.getMessage() for record in caplog.records]
    assert not any("unreachable" in message for message in messages)  # not an outage
    assert any("lost a lock race" in message for message in messages)
