"""Store states that several contract tests start from."""

import uuid

from sqlalchemy import update

from eventproc.event import Event, NewEvent
from eventproc.store import ClaimPolicy, Store
from eventproc.store.schema import events


async def run_with_head_taken_over(store: Store) -> list[Event]:
    """A run [n=1, n=2] of one aggregate claimed by worker A, whose head B then took over.

    As after an outage: B's claim committed, its revocation of A's run not
    yet, so A still holds the second event while the first is B's.
    """
    aggregate = uuid.uuid4()
    first, second = (NewEvent("t", {"n": n}, aggregate_id=aggregate) for n in (1, 2))
    await store.event_insert_many([first, second])
    run = await store.event_claim_many(
        "A:1", ClaimPolicy(lease_seconds=30, ordered=True, limit=5, follow=True)
    )
    assert [e.payload["n"] for e in run] == [1, 2]
    async with store.begin() as conn:
        await conn.execute(update(events).where(events.c.id == first.id).values(locked_by="B:1"))
    return run
