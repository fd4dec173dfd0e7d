"""The completer writes every buffered result before it stops."""

import asyncio
from typing import Any

import pytest

from eventproc.completer import Completer
from eventproc.event import NewEvent
from eventproc.metrics import Metrics
from eventproc.stats import Stats
from eventproc.store import ClaimPolicy, Lease, SqlStore, WriteBack


async def test_close_flushes_what_is_buffered_then_returns(store: SqlStore) -> None:
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
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
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
