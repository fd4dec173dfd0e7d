"""Claiming: order, leases, attempts, aggregate gate, skip-locked concurrency."""

import asyncio
import uuid

import pytest

from eventproc.errors import StoreUnavailable
from eventproc.event import NewEvent
from eventproc.store import ClaimPolicy, Lease, Store, WriteBack, runs


def policy(limit: int = 100, *, ordered: bool = True, lease: float = 30) -> ClaimPolicy:
    return ClaimPolicy(lease_seconds=lease, ordered=ordered, limit=limit)


async def test_claim_takes_lease_and_counts_attempt(store: Store) -> None:
    [event_id] = [e.id for e in [NewEvent("t", {"n": 1})]]
    await store.event_insert_many([NewEvent("t", {"n": 1}, id=event_id)])
    [claimed] = await store.event_claim_many("w:1", policy())
    assert claimed.id == event_id
    assert claimed.locked_by == "w:1"
    assert claimed.attempts == 1
    assert claimed.locked_until is not None and claimed.created_at is not None
    assert claimed.locked_until > claimed.created_at
    assert await store.event_claim_many("w:2", policy()) == []


async def test_claim_orders_by_priority_then_fifo(store: Store) -> None:
    events = [NewEvent("t", {"n": n}) for n in range(5)]
    urgent = NewEvent("t", {"n": "urgent"}, priority=5)
    await store.event_insert_many(events)
    await store.event_insert_many([urgent])
    claimed = await store.event_claim_many("w:1", policy(limit=3, ordered=False))
    assert [e.payload["n"] for e in claimed] == ["urgent", 0, 1]


async def test_claim_respects_limit(store: Store) -> None:
    await store.event_insert_many([NewEvent("t", {}) for _ in range(30)])
    assert len(await store.event_claim_many("w:1", policy(limit=20))) == 20
    assert len(await store.event_claim_many("w:2", policy(limit=20))) == 10


async def test_expired_lease_is_claimable_again(store: Store) -> None:
    await store.event_insert_many([NewEvent("t", {})])
    [first] = await store.event_claim_many("w:1", policy(lease=0.05))
    await asyncio.sleep(0.1)
    [second] = await store.event_claim_many("w:2", policy())
    assert second.id == first.id
    assert second.attempts == 2
    # The first claimer lost its lease: its write-back is fenced out.
    assert await store.event_write_back([WriteBack.succeeded(Lease.of(first))]) == 0
    assert await store.event_write_back([WriteBack.succeeded(Lease.of(second))]) == 1


async def test_aggregate_gate_releases_one_event_at_a_time(store: Store) -> None:
    aggregate = uuid.uuid4()
    chain = [NewEvent("t", {"n": n}, aggregate_id=aggregate) for n in range(3)]
    free = NewEvent("t", {"n": "free"})
    await store.event_insert_many([*chain, free])
    claimed = await store.event_claim_many("w:1", policy())
    assert {e.payload["n"] for e in claimed} == {0, "free"}
    assert await store.event_claim_many("w:2", policy()) == []
    head = next(e for e in claimed if e.payload["n"] == 0)
    await store.event_write_back([WriteBack.succeeded(Lease.of(head))])
    [following] = await store.event_claim_many("w:2", policy())
    assert following.payload["n"] == 1


async def test_aggregate_order_holds_within_one_publish_batch(store: Store) -> None:
    aggregate = uuid.uuid4()
    await store.event_insert_many(
        [NewEvent("t", {"n": n}, aggregate_id=aggregate) for n in range(50)]
    )
    seen = []
    for round_ in range(50):
        [event] = await store.event_claim_many(f"w:{round_}", policy())
        seen.append(event.payload["n"])
        await store.event_write_back([WriteBack.succeeded(Lease.of(event))])
    assert seen == list(range(50))


async def test_unordered_claim_ignores_aggregates(store: Store) -> None:
    aggregate = uuid.uuid4()
    await store.event_insert_many([NewEvent("t", {}, aggregate_id=aggregate) for _ in range(3)])
    assert len(await store.event_claim_many("w:1", policy(ordered=False))) == 3


async def test_concurrent_claimers_never_share_an_event(store: Store) -> None:
    await store.event_insert_many([NewEvent("t", {"n": n}) for n in range(300)])

    async def claimer(name: str) -> list[uuid.UUID]:
        got: list[uuid.UUID] = []
        for round_ in range(40):
            batch = await store.event_claim_many(f"{name}:{round_}", policy(limit=7))
            got.extend(e.id for e in batch)
        return got

    results = await asyncio.gather(*(claimer(f"w{i}") for i in range(4)))
    every = [event_id for ids in results for event_id in ids]
    assert len(every) == len(set(every)) == 300


async def test_claim_one_reports_why_it_cannot(store: Store) -> None:
    import pytest

    from eventproc.errors import Conflict, NotFound

    aggregate = uuid.uuid4()
    first, second = (NewEvent("t", {}, aggregate_id=aggregate) for _ in range(2))
    await store.event_insert_many([first, second])
    with pytest.raises(NotFound):
        await store.event_claim_one(uuid.uuid4(), "w:1", policy())
    with pytest.raises(Conflict, match="waiting behind"):
        await store.event_claim_one(second.id, "w:1", policy())
    claimed = await store.event_claim_one(first.id, "w:1", policy())
    assert claimed.locked_by == "w:1"
    with pytest.raises(Conflict, match="being processed"):
        await store.event_claim_one(first.id, "w:2", policy())
    await store.event_write_back([WriteBack.succeeded(Lease.of(claimed))])
    with pytest.raises(Conflict, match="already processed"):
        await store.event_claim_one(first.id, "w:2", policy())


async def test_dead_lettered_event_blocks_its_aggregate_until_discarded(
    store: Store,
) -> None:
    from eventproc.store import WriteBack

    aggregate = uuid.uuid4()
    first, second = (NewEvent("t", {"n": n}, aggregate_id=aggregate) for n in range(2))
    await store.event_insert_many([first, second])
    [head] = await store.event_claim_many("w:1", policy())
    await store.event_write_back([WriteBack.dead_lettered(Lease.of(head), "poison", 5)])
    assert await store.event_claim_many("w:2", policy()) == []  # block (default)
    [blocked] = await store.aggregates_blocked()
    assert blocked.aggregate_id == aggregate and blocked.event_id == first.id
    assert blocked.reason == "dead_lettered" and blocked.waiting == 1
    assert await store.aggregates_blocked(include_dead_letters=False) == []
    [letter] = await store.dead_letter_list()
    assert await store.dead_letter_delete([letter.id]) == 1
    discarded = await store.event_get(first.id)
    assert discarded is not None and discarded.outcome == "discarded"
    [following] = await store.event_claim_many("w:4", policy())
    assert following.id == second.id


async def test_park_policy_lets_the_aggregate_move_on(store: Store) -> None:
    from eventproc.store import WriteBack

    aggregate = uuid.uuid4()
    first, second = (NewEvent("t", {"n": n}, aggregate_id=aggregate) for n in range(2))
    await store.event_insert_many([first, second])
    parked = ClaimPolicy(lease_seconds=30, ordered=True, limit=10, block_on_dead_letters=False)
    [head] = await store.event_claim_many("w:1", parked)
    await store.event_write_back([WriteBack.dead_lettered(Lease.of(head), "poison", 5)])
    [following] = await store.event_claim_many("w:2", parked)
    assert following.id == second.id


async def test_retrying_event_is_reported_as_blocking(store: Store) -> None:

    aggregate = uuid.uuid4()
    first, second = (NewEvent("t", {"n": n}, aggregate_id=aggregate) for n in range(2))
    await store.event_insert_many([first, second])
    [head] = await store.event_claim_many("w:1", policy())
    await store.event_write_back([WriteBack.retry(Lease.of(head), 60, "later", 1)])
    assert await store.event_claim_many("w:2", policy()) == []
    [blocked] = await store.aggregates_blocked()
    assert blocked.reason == "retrying" and blocked.retry_at is not None


async def test_taking_over_a_head_revokes_the_stalled_run(store: Store) -> None:
    aggregate = uuid.uuid4()
    await store.event_insert_many(
        [NewEvent("t", {"n": n}, aggregate_id=aggregate) for n in range(4)]
    )
    follow = ClaimPolicy(lease_seconds=0.05, ordered=True, limit=4, follow=True)
    run = await store.event_claim_many("stalled:1", follow)
    assert [e.payload["n"] for e in run] == [0, 1, 2, 3]  # head and its followers
    await asyncio.sleep(0.1)  # the stalled worker's leases expire together
    [head] = await store.event_claim_many("w:2", ClaimPolicy(30, True, 1))  # no room to follow
    assert head.id == run[0].id and head.attempts == 2
    # The stalled worker can no longer keep (or complete) the rest of its run.
    assert await store.event_renew_leases([Lease.of(e) for e in run[1:]], 30) == set()
    assert await store.event_write_back([WriteBack.succeeded(Lease.of(run[1]))]) == 0


async def test_claimed_events_carry_their_metadata_or_an_empty_dict(store: Store) -> None:
    await store.event_insert_many(
        [NewEvent("t", {"n": 1}), NewEvent("t", {"n": 2}, metadata={"source": "crm"})]
    )
    claimed = await store.event_claim_many("w:1", policy(ordered=False))
    assert {e.payload["n"]: e.metadata for e in claimed} == {1: {}, 2: {"source": "crm"}}


async def test_a_claim_whose_run_work_fails_gives_its_events_back(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    aggregate = uuid.uuid4()
    await store.event_insert_many(
        [NewEvent("t", {"n": n}, aggregate_id=aggregate) for n in range(3)]
    )

    async def broken(*args: object) -> None:
        raise StoreUnavailable("injected: lost the connection while adding followers")

    monkeypatch.setattr(runs, "extend_runs", broken)
    with pytest.raises(StoreUnavailable):
        await store.event_claim_many("w:1", ClaimPolicy(30, ordered=True, limit=10, follow=True))
    monkeypatch.undo()
    # The head's claim had committed; it was released, not left leased.
    [head] = await store.event_claim_many("w:2", policy(limit=1))
    assert head.payload["n"] == 0 and head.attempts == 1


async def test_a_run_follows_a_head_whose_predecessor_waits_on_its_delivery(
    store: Store,
) -> None:
    """The run behind a head skips routed events, as the claim's gate does.

    With the aggregate's first event retrying on its delivery, the next one
    on its row is a head; its followers must come with it (to wait behind
    that delivery in one move), not one event per claim.
    """
    aggregate = uuid.uuid4()
    await store.event_insert_many(
        [NewEvent("t", {"n": n}, aggregate_id=aggregate) for n in range(30)]
    )
    [first] = await store.event_claim_many("w:1", policy(limit=1))
    retry = WriteBack.retry(Lease.of(first), 60, "downstream is down", 1, handler="h")
    assert await store.event_write_back([retry]) == 1
    follow = ClaimPolicy(lease_seconds=30, ordered=True, limit=20, follow=True)
    run = await store.event_claim_many("w:2", follow)
    assert [e.payload["n"] for e in run] == list(range(1, 21))
    assert all(e.blocked == {"h"} for e in run)  # each waits behind n=0
