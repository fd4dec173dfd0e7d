"""A claim that carries the previous batch's successes back: one statement for both."""

import asyncio
import uuid

from eventproc.event import NewEvent
from eventproc.store import ClaimPolicy, Lease, Store, WriteBack
from support.runs import run_with_head_taken_over


def policy(limit: int = 10, *, ordered: bool = False, lease: float = 30) -> ClaimPolicy:
    return ClaimPolicy(lease_seconds=lease, ordered=ordered, limit=limit, follow=False)


async def test_a_claim_completes_what_it_carries_and_claims_the_rest(store: Store) -> None:
    new = [NewEvent("t", {"n": n}, metadata={"n": n}) for n in range(4)]
    await store.event_insert_many(new)
    first = await store.event_claim_many("w:1", policy(limit=2))
    carried = [
        WriteBack.succeeded(Lease.of(first[0])),
        WriteBack.skipped(Lease.of(first[1])),
    ]
    second = await store.event_claim_many("w:2", policy(), completing=carried)
    assert sorted(e.payload["n"] for e in second) == [2, 3]
    for event, outcome in ((first[0], "succeeded"), (first[1], "skipped")):
        row = await store.event_get(event.id)
        assert row is not None and row.processed and row.outcome == outcome
        assert row.locked_by is None and row.metadata["processed_by"] == "test"
        assert row.metadata["n"] == event.payload["n"]


async def test_carried_completions_are_fenced_on_their_token(store: Store) -> None:
    await store.event_insert_many([NewEvent("t", {})])
    [claimed] = await store.event_claim_many("w:1", policy())
    stale = WriteBack.succeeded(Lease(claimed.id, "w:stale"))
    assert await store.event_claim_many("w:2", policy(), completing=[stale]) == []
    row = await store.event_get(claimed.id)
    assert row is not None and not row.processed and row.locked_by == "w:1"


async def test_an_event_the_claim_completes_is_not_claimed_again(store: Store) -> None:
    # Its lease ran out while the result waited: it looks available to the
    # claim, but the same statement completes it.
    await store.event_insert_many([NewEvent("t", {})])
    [claimed] = await store.event_claim_many("w:1", policy(lease=0.05))
    await asyncio.sleep(0.1)
    again = await store.event_claim_many(
        "w:2", policy(), completing=[WriteBack.succeeded(Lease.of(claimed))]
    )
    assert again == []
    row = await store.event_get(claimed.id)
    assert row is not None and row.processed and row.attempts == 1


async def test_a_carried_completion_frees_the_next_event_of_its_aggregate(store: Store) -> None:
    aggregate = uuid.uuid4()
    chain = [NewEvent("t", {"n": n}, aggregate_id=aggregate) for n in range(3)]
    await store.event_insert_many(chain)
    [head] = await store.event_claim_many("w:1", policy(ordered=True))
    assert head.payload["n"] == 0
    assert await store.event_claim_many("w:1", policy(ordered=True)) == []
    [following] = await store.event_claim_many(
        "w:2", policy(ordered=True), completing=[WriteBack.succeeded(Lease.of(head))]
    )
    assert following.payload["n"] == 1


async def test_an_ordered_claim_does_not_complete_past_a_head_taken_over(store: Store) -> None:
    run = await run_with_head_taken_over(store)
    late = [WriteBack.succeeded(Lease.of(run[1]))]
    assert await store.event_claim_many("A:2", policy(ordered=True), completing=late) == []
    row = await store.event_get(run[1].id)
    assert row is not None and not row.processed
