"""retry, dead-lettering, release, renewal: all fenced on the claim token."""

import asyncio
import uuid

import pytest

from eventproc.event import NewEvent, Outcome
from eventproc.store import ClaimPolicy, Lease, Store, WriteBack
from support.runs import run_with_head_taken_over

POLICY = ClaimPolicy(lease_seconds=30, ordered=False, limit=100)


async def claim_one(store: Store, event: NewEvent, token: str = "w:1"):  # type: ignore[no-untyped-def]
    await store.event_insert_many([event])
    [claimed] = await store.event_claim_many(token, POLICY)
    return claimed


async def test_complete_marks_processed_and_merges_metadata(store: Store) -> None:
    claimed = await claim_one(store, NewEvent("t", {}, metadata={"trace": "abc"}))
    assert await store.event_write_back([WriteBack.succeeded(Lease.of(claimed))]) == 1
    row = await store.event_get(claimed.id)
    assert row is not None
    assert row.processed and row.outcome == Outcome.SUCCEEDED
    assert row.processed_at is not None and row.locked_by is None
    assert row.metadata["trace"] == "abc"
    assert row.metadata["processed_by"] == "test"
    assert "processed_at" in row.metadata


async def test_complete_with_wrong_token_changes_nothing(store: Store) -> None:
    claimed = await claim_one(store, NewEvent("t", {}))
    assert await store.event_write_back([WriteBack.succeeded(Lease(claimed.id, "w:other"))]) == 0
    row = await store.event_get(claimed.id)
    assert row is not None and not row.processed and row.locked_by == "w:1"


async def test_skipped_outcome_is_recorded(store: Store) -> None:
    claimed = await claim_one(store, NewEvent("t", {}))
    await store.event_write_back([WriteBack.skipped(Lease.of(claimed))])
    row = await store.event_get(claimed.id)
    assert row is not None and row.processed and row.outcome == "skipped"


async def test_retry_schedules_and_records_error(store: Store) -> None:
    claimed = await claim_one(store, NewEvent("t", {}, metadata={"keep": 1}))
    await store.event_write_back([WriteBack.retry(Lease.of(claimed), 0.2, "boom", 1)])
    row = await store.event_get(claimed.id)
    assert row is not None and not row.processed and row.locked_by is None
    assert row.next_attempt_at is not None
    assert row.metadata["retry_count"] == 1 and row.metadata["last_error"] == "boom"
    assert row.metadata["keep"] == 1 and "last_error_at" in row.metadata
    assert await store.event_claim_many("w:2", POLICY) == []  # not due yet
    await asyncio.sleep(0.3)
    [again] = await store.event_claim_many("w:2", POLICY)
    assert again.id == claimed.id and again.attempts == 2


async def test_uncounted_retry_gives_the_attempt_back(store: Store) -> None:
    claimed = await claim_one(store, NewEvent("t", {}))
    await store.event_write_back([WriteBack.rescheduled(Lease.of(claimed), 0, "later", 1)])
    row = await store.event_get(claimed.id)
    assert row is not None and row.attempts == 0 and "retry_count" not in row.metadata


async def test_dead_letter_inserts_row_and_closes_event_together(store: Store) -> None:
    claimed = await claim_one(store, NewEvent("t", {"x": 1}))
    stale = WriteBack.dead_lettered(Lease(claimed.id, "w:stale"), "nope", 5)
    assert await store.event_write_back([stale]) == 0
    assert await store.dead_letter_list() == []
    burial = WriteBack.dead_lettered(
        Lease.of(claimed), "it broke", 5, detail="Traceback ...", handler="mod.fn"
    )
    assert await store.event_write_back([burial]) == 1
    row = await store.event_get(claimed.id)
    assert row is not None and row.processed and row.outcome == "dead_lettered"
    [letter] = await store.dead_letter_list()
    assert letter.event_id == claimed.id and letter.payload == {"x": 1}
    assert letter.error_message == "it broke" and letter.retry_count == 5
    assert letter.error_detail == "Traceback ..." and letter.handler == "mod.fn"
    assert letter.original_created_at == claimed.created_at


async def claim_many(store: Store, count: int) -> list:  # type: ignore[type-arg]
    await store.event_insert_many([NewEvent("t", {"n": n}) for n in range(count)])
    claimed = await store.event_claim_many("w:1", POLICY)
    return sorted(claimed, key=lambda event: event.payload["n"])


async def test_a_batch_of_retries_is_written_together_and_fenced(store: Store) -> None:
    a, b, c, d = await claim_many(store, 4)
    failures = [
        WriteBack.retry(Lease.of(a), 60, "boom a", 1),
        WriteBack.rescheduled(Lease.of(b), 60, "later", 1),
        WriteBack.retry(Lease.of(c), 60, "x" * 5000, 1),
        WriteBack.retry(Lease(d.id, "w:stale"), 60, "fenced out", 1),
    ]
    assert await store.event_write_back(failures) == 3
    rows = {event.id: await store.event_get(event.id) for event in (a, b, c, d)}
    assert rows[a.id] is not None and rows[a.id].metadata["last_error"] == "boom a"
    assert rows[b.id] is not None and rows[b.id].attempts == 0
    assert "retry_count" not in rows[b.id].metadata
    assert rows[c.id] is not None and len(rows[c.id].metadata["last_error"]) == 2000
    assert rows[d.id] is not None and rows[d.id].locked_by == "w:1"  # untouched
    for event in (a, b, c):
        row = rows[event.id]
        assert row is not None and row.locked_by is None and row.next_attempt_at is not None


async def test_a_batch_of_dead_letters_is_written_together_and_fenced(store: Store) -> None:
    a, b, c = await claim_many(store, 3)
    burials = [
        WriteBack.dead_lettered(Lease.of(a), "broke a", 2, handler="h.a", fingerprint="broke <x>"),
        WriteBack.dead_lettered(
            Lease.of(b), "broke b", 3, detail="Traceback b", fingerprint="broke <x>"
        ),
        WriteBack.dead_lettered(Lease(c.id, "w:stale"), "fenced out", 1),
    ]
    assert await store.event_write_back(burials) == 2
    letters = {letter.event_id: letter for letter in await store.dead_letter_list()}
    assert set(letters) == {a.id, b.id}
    assert letters[a.id].handler == "h.a" and letters[a.id].retry_count == 2
    assert letters[b.id].error_detail == "Traceback b" and letters[b.id].payload == {"n": 1}
    assert {letter.error_fingerprint for letter in letters.values()} == {"broke <x>"}
    for event, count in ((a, 2), (b, 3)):
        row = await store.event_get(event.id)
        assert row is not None and row.outcome == "dead_lettered"
        assert row.metadata["dead_lettered"] is True and row.metadata["retry_count"] == count
    row = await store.event_get(c.id)
    assert row is not None and not row.processed and row.locked_by == "w:1"


async def test_a_stale_and_a_current_dead_letter_of_one_event_make_one_letter(
    store: Store,
) -> None:
    """Found by the chaos run through PgBouncer: a lease taken over while both claims'
    handlings failed for good, and both results in one write-back."""
    event = NewEvent("t", {})
    await store.event_insert_many([event])
    short = ClaimPolicy(lease_seconds=0.05, ordered=False, limit=1)
    [first] = await store.event_claim_many("w:1", short)
    await asyncio.sleep(0.2)  # the lease runs out; another claim takes it over
    [second] = await store.event_claim_many("w:2", POLICY)
    burials = [
        WriteBack.dead_lettered(Lease.of(first), "stale", 1),
        WriteBack.dead_lettered(Lease.of(second), "current", 2),
    ]
    await store.event_write_back(burials)
    [letter] = await store.dead_letter_list()
    assert letter.error_message == "current" and letter.retry_count == 2


async def test_release_returns_event_without_spending_attempt(store: Store) -> None:
    claimed = await claim_one(store, NewEvent("t", {}))
    assert await store.event_release_many([Lease.of(claimed)]) == 1
    [again] = await store.event_claim_many("w:2", POLICY)
    assert again.attempts == 1


async def test_renew_extends_only_held_leases(store: Store) -> None:
    claimed = await claim_one(store, NewEvent("t", {}))
    renewed = await store.event_renew_leases(
        [Lease.of(claimed), Lease(uuid.uuid4(), "w:1")], lease_seconds=120
    )
    assert renewed == {claimed.id}
    row = await store.event_get(claimed.id)
    assert row is not None and row.locked_until is not None and claimed.locked_until is not None
    assert row.locked_until > claimed.locked_until


async def test_transaction_commits_handler_writes_with_completion(store: Store) -> None:
    claimed = await claim_one(store, NewEvent("t", {}))
    follow_up = NewEvent("follow", {})
    async with store.event_transaction(Lease.of(claimed)) as conn:
        await store.event_insert_many([follow_up], conn)
    row = await store.event_get(claimed.id)
    assert row is not None and row.processed
    assert await store.event_get(follow_up.id) is not None


async def test_transaction_rolls_back_on_error(store: Store) -> None:

    claimed = await claim_one(store, NewEvent("t", {}))
    follow_up = NewEvent("follow", {})
    with pytest.raises(RuntimeError):
        async with store.event_transaction(Lease.of(claimed)) as conn:
            await store.event_insert_many([follow_up], conn)
            raise RuntimeError("handler failed")
    row = await store.event_get(claimed.id)
    assert row is not None and not row.processed
    assert await store.event_get(follow_up.id) is None


async def test_transaction_refuses_a_lost_lease(store: Store) -> None:

    from eventproc.errors import LeaseLost

    claimed = await claim_one(store, NewEvent("t", {}))
    with pytest.raises(LeaseLost):
        async with store.event_transaction(Lease(claimed.id, "w:stale")):
            raise AssertionError("the handler must not run")


async def test_in_order_completion_waits_for_a_predecessor_taken_over(store: Store) -> None:
    # A run [first, second] handled by worker A; while its results waited,
    # worker B took first over. A's late write-back must not mark second done
    # ahead of first's new handling.
    run = await run_with_head_taken_over(store)
    late = [WriteBack.succeeded(Lease.of(event)) for event in run]
    assert await store.event_write_back(late, in_order=True) == 0
    second_now = await store.event_get(run[1].id)
    assert second_now is not None and not second_now.processed
    # Without the ordering rule (ORDERING=none) the same write-back lands.
    assert await store.event_write_back(late) == 1


async def test_in_order_completion_of_a_whole_run_in_one_call(store: Store) -> None:
    aggregate = uuid.uuid4()
    events = [NewEvent("t", {"n": n}, aggregate_id=aggregate) for n in range(3)]
    await store.event_insert_many(events)
    run = await store.event_claim_many("A:1", ClaimPolicy(30, ordered=True, limit=5, follow=True))
    assert len(run) == 3
    # The successors' statement runs first (one statement per outcome): the
    # head counts as done because this same call completes it.
    completions = [WriteBack.succeeded(Lease.of(event)) for event in run[1:]] + [
        WriteBack.skipped(Lease.of(run[0]))
    ]
    assert await store.event_write_back(completions, in_order=True) == 3


async def test_an_in_order_transaction_behind_a_predecessor_taken_over_rolls_back(
    store: Store,
) -> None:
    # As above, but the second event's handler is transactional: its writes
    # must not commit ahead of the first event's new handling.
    from eventproc.errors import LeaseLost

    run = await run_with_head_taken_over(store)
    effect = NewEvent("t.effect", {})
    with pytest.raises(LeaseLost, match="earlier event of its aggregate"):
        async with store.event_transaction(Lease.of(run[1]), in_order=True) as conn:
            await store.event_insert_many([effect], conn)
    assert await store.event_get(effect.id) is None  # the handler's write rolled back
    second_now = await store.event_get(run[1].id)
    assert second_now is not None and not second_now.processed
    # Without the ordering rule (ORDERING=none) the same transaction commits.
    async with store.event_transaction(Lease.of(run[1])) as conn:
        await store.event_insert_many([effect], conn)
    assert await store.event_get(effect.id) is not None
