"""The completer writes every buffered result before it stops."""

import asyncio

from eventproc.completer import Completer
from eventproc.event import NewEvent
from eventproc.metrics import Metrics
from eventproc.stats import Stats
from eventproc.store import ClaimPolicy, Completion, Lease, SqlStore


async def test_close_flushes_what_is_buffered_then_returns(store: SqlStore) -> None:
    await store.event_insert_many([NewEvent("t", {}) for _ in range(3)])
    claimed = await store.event_claim_many("w:1", ClaimPolicy(30, False, 10))
    stats = Stats()
    completer = Completer(store, stats, Metrics())
    completer.add(Completion(Lease.of(claimed[0])))
    running = asyncio.create_task(completer.run())
    await asyncio.sleep(0)  # the first flush starts
    completer.add(Completion(Lease.of(claimed[1])))
    completer.add(Completion(Lease.of(claimed[2])))
    completer.close()
    await asyncio.wait_for(running, 10)
    assert stats.success_count == 3
    assert (await store.stats_snapshot()).backlog == 0
