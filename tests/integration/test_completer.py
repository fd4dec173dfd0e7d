"""The completer writes every buffered result before it stops, with no processor behind it."""

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import pytest

from eventproc.engine.completer import Completer
from eventproc.engine.slots import Slots
from eventproc.event import NewEvent
from eventproc.metrics import Metrics
from eventproc.processor_config import ProcessorConfig
from eventproc.stats import Stats
from eventproc.store import ClaimPolicy, EventFilter, Kind, Lease, Store, WriteBack


class CountingWrites:
    """The real store; records each event_write_back call."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: list[list[WriteBack]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def event_write_back(self, batch: Sequence[WriteBack], *, in_order: bool = False) -> int:
        self.calls.append(list(batch))
        return await self._store.event_write_back(batch, in_order=in_order)


async def test_close_flushes_what_is_buffered_then_returns(store: Store) -> None:
    await store.event_insert_many([NewEvent("t", {}) for _ in range(3)])
    claimed = await store.event_claim_many("w:1", ClaimPolicy(30, False, 10))
    stats = Stats()
    completer = Completer(store, stats, Metrics())
    completer.add(WriteBack.succeeded(Lease.of(claimed[0])))
    running = asyncio.create_task(completer.run())
    await asyncio.sleep(0)  # the first flush starts
    completer.add(WriteBack.succeeded(Lease.of(claimed[1])))
    completer.add(WriteBack.succeeded(Lease.of(claimed[2])))
    completer.close()
    await asyncio.wait_for(running, 10)
    assert stats.success_count == 3
    assert (await store.stats_snapshot()).backlog == 0


async def test_an_unexpected_error_keeps_the_results_for_the_next_try(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.event_insert_many([NewEvent("t", {}) for _ in range(2)])
    claimed = await store.event_claim_many("w:1", ClaimPolicy(30, False, 10))
    original = store.event_write_back
    calls = 0

    async def broken_once(*args: Any, **kwargs: Any) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("a bug, not the database")
        return await original(*args, **kwargs)

    monkeypatch.setattr(store, "event_write_back", broken_once)
    stats = Stats()
    completer = Completer(store, stats, Metrics())
    running = asyncio.create_task(completer.run())
    for event in claimed:
        completer.add(WriteBack.succeeded(Lease.of(event)))
    await asyncio.wait_for(completer.wait_written(), 10)
    completer.close()
    await asyncio.wait_for(running, 10)
    assert calls == 2 and stats.success_count == 2
    assert (await store.stats_snapshot()).backlog == 0


async def test_a_mixed_batch_is_one_write_back_published_for_the_producer(
    store: Store,
) -> None:
    events = [NewEvent("t", {"n": n}) for n in range(4)]
    await store.event_insert_many(events)
    claimed = {e.id: e for e in await store.event_claim_many("w:1", ClaimPolicy(30, False, 10))}
    ok, retried, later, dead = (Lease.of(claimed[event.id]) for event in events)
    counting = CountingWrites(store)
    stats = Stats()
    slots = Slots(ProcessorConfig())
    completer = Completer(counting, stats, Metrics(), slots=slots)  # type: ignore[arg-type]
    completer.add(WriteBack.succeeded(ok))
    completer.add(WriteBack.retry(retried, 0.5, "boom", 1))
    completer.add(WriteBack.rescheduled(later, 2.0, "not yet", 1))
    completer.add(WriteBack.dead_lettered(dead, "gave up", 1))
    before = time.monotonic()
    running = asyncio.create_task(completer.run())
    flushed = await asyncio.wait_for(completer.flushes.get(), 10)
    completer.close()
    await asyncio.wait_for(running, 10)

    assert [[item.kind for item in call] for call in counting.calls] == [
        [Kind.SUCCEEDED, Kind.RETRY, Kind.RESCHEDULED, Kind.DEAD_LETTERED]
    ]
    assert flushed.retry_delays == (0.5, 2.0) and flushed.at >= before
    assert completer.flushes.empty() and slots.wakeup.is_set()  # the producer would wake
    assert (stats.success_count, stats.error_count, stats.dead_letter_count) == (1, 1, 1)
    rows = {row.id: row for row in await store.event_list(EventFilter())}
    assert rows[ok.event_id].processed
    assert not rows[retried.event_id].processed and rows[retried.event_id].locked_by is None
    assert not rows[later.event_id].processed and rows[later.event_id].locked_by is None
    assert [letter.event_id for letter in await store.dead_letter_list()] == [dead.event_id]
