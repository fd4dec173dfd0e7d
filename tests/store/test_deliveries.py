"""The delivery model's named queries, on every backend, called through the driver.

The Store methods over them are still being written, so these tests hold
the statements themselves to one contract: routing a claimed event onto
deliveries, claiming and writing them back (fenced, in order per handler
and aggregate), replaying one delivery or the whole event, backfilling.
"""

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import delete, select

from eventproc.event import NewEvent
from eventproc.store import ClaimPolicy, Store
from eventproc.store.schema import deliveries, events

LEASE = 30.0
UNORDERED = ClaimPolicy(lease_seconds=LEASE, ordered=False, limit=100)


@pytest.fixture(autouse=True)
async def no_deliveries(store: Store) -> AsyncIterator[None]:
    """The shared PostgreSQL database keeps event_deliveries between tests: start empty."""
    async with store.driver.begin() as conn:
        await conn.execute(delete(deliveries))
    yield


async def fetch(store: Store, name: str, args: list[Any]) -> list[Any]:
    return list(await store.driver.fetch(name, args, durable=True))


async def claimed(store: Store, *new: NewEvent) -> list[uuid.UUID]:
    """Publish ``new`` and claim them all on their own rows with token w:1."""
    await store.event_insert_many(list(new))
    got = await store.event_claim_many("w:1", UNORDERED)
    assert {event.id for event in got} == {event.id for event in new}
    return [event.id for event in new]


async def open_(store: Store, plans: list[tuple[uuid.UUID, str, bool]]) -> list[Any]:
    """delivery_open for (event, handler, run now) plans, all fenced on token w:1."""
    return await fetch(
        store,
        "delivery_open",
        [
            [plan[0] for plan in plans],
            ["w:1"] * len(plans),
            [plan[1] for plan in plans],
            [plan[2] for plan in plans],
            [0] * len(plans),
            LEASE,
            [True] * len(plans),  # at a claim: the claim's attempt on the row is given back
        ],
    )


def results(*items: tuple[uuid.UUID, str, str, str], in_order: bool = False) -> list[Any]:
    """delivery_write_back's arguments for (event, handler, token, kind) results."""
    failing = [kind != "succeeded" for *_, kind in items]
    return [
        [item[0] for item in items],
        [item[1] for item in items],
        [item[2] for item in items],
        [item[3] for item in items],
        [0.0] * len(items),
        ["boom" if fails else None for fails in failing],
        [1] * len(items),
        ["Traceback" if fails else None for fails in failing],
        ["fp" if fails else None for fails in failing],
        "test",
        in_order,
        [],
        [],
    ]


async def delivery_rows(store: Store, event_id: uuid.UUID) -> dict[str, Any]:
    async with store.driver.begin() as conn:
        rows = await conn.execute(select(deliveries).where(deliveries.c.event_id == event_id))
        return {row.handler: row for row in rows}


async def event_row(store: Store, event_id: uuid.UUID) -> Any:
    async with store.driver.begin() as conn:
        return (await conn.execute(select(events).where(events.c.id == event_id))).one()


def uid(value: Any) -> uuid.UUID:
    return uuid.UUID(str(value))


def handlers_of(value: Any) -> set[str]:
    """The 18th column of an ordered claim: a JSON array text (SQLite) or an array."""
    return set(json.loads(value) if isinstance(value, str) else value)


async def fanned_out(store: Store) -> uuid.UUID:
    """An event routed to a (leased by w:1) and b (waiting)."""
    [event_id] = await claimed(store, NewEvent("t", {"n": 1}))
    await open_(store, [(event_id, "a", True), (event_id, "b", False)])
    return event_id


async def test_open_moves_the_event_onto_its_deliveries(store: Store) -> None:
    [event_id] = await claimed(store, NewEvent("t", {"n": 1}))
    [row] = await open_(store, [(event_id, "a", True), (event_id, "b", False)])
    assert len(row) == 18 and row[17] == "a" and row[13] == "w:1" and row[11] == 1
    rows = await delivery_rows(store, event_id)
    assert rows["a"].locked_by == "w:1" and rows["a"].attempts == 1
    assert rows["b"].locked_by is None and rows["b"].attempts == 0
    assert {row.status for row in rows.values()} == {"pending"}
    event = await event_row(store, event_id)
    assert event.routed_at is not None and event.deliveries_open == 2
    assert event.locked_by is None and event.locked_until is None and not event.processed
    assert await open_(store, [(event_id, "c", True)]) == []  # the event's lease is gone
    assert set(await delivery_rows(store, event_id)) == {"a", "b"}


async def test_delivery_claim_takes_the_waiting_one(store: Store) -> None:
    event_id = await fanned_out(store)
    [row] = await fetch(store, "delivery_claim", ["w:2", LEASE, 10, 100])
    assert (uid(row[0]), row[17], row[13], row[11]) == (event_id, "b", "w:2", 1)
    assert row[4] is not None and json.loads(row[4]) == {"n": 1}
    assert await fetch(store, "delivery_claim", ["w:3", LEASE, 10, 100]) == []


async def test_write_back_closes_the_event_as_partial(store: Store) -> None:
    event_id = await fanned_out(store)
    await fetch(store, "delivery_claim", ["w:2", LEASE, 10, 100])
    stale = results((event_id, "b", "w:9", "dead_lettered"))
    assert await fetch(store, "delivery_write_back", stale) == []
    batch = results((event_id, "a", "w:1", "succeeded"), (event_id, "b", "w:2", "dead_lettered"))
    written = await fetch(store, "delivery_write_back", batch)
    assert sorted(handler for _, handler in written) == ["a", "b"]
    event = await event_row(store, event_id)
    assert event.processed and event.outcome == "partial" and event.deliveries_open == 0
    assert event.processed_at is not None and event.metadata["processed_by"] == "test"
    assert event.metadata["last_error_handler"] == "b" and event.metadata["dead_lettered"]
    rows = await delivery_rows(store, event_id)
    assert (rows["a"].outcome, rows["b"].outcome) == ("succeeded", "dead_lettered")
    assert rows["b"].last_error == "boom" and rows["b"].locked_by is None
    [letter] = await store.dead_letter_list()
    assert letter.event_id == event_id and letter.handler == "b"


async def test_one_finished_delivery_leaves_the_event_pending(store: Store) -> None:
    event_id = await fanned_out(store)
    assert await fetch(store, "delivery_write_back", results((event_id, "a", "w:1", "succeeded")))
    event = await event_row(store, event_id)
    assert not event.processed and event.deliveries_open == 1 and event.outcome == "succeeded"


async def test_ordered_claim_waits_per_handler_and_aggregate(store: Store) -> None:
    aggregate = uuid.uuid4()
    first, later = (
        NewEvent("t", {}, aggregate_id=aggregate),
        NewEvent("t", {}, aggregate_id=aggregate),
    )
    await claimed(store, first, later)
    await open_(store, [(first.id, "h", False), (later.id, "h", False), (later.id, "g", False)])
    rows = await fetch(store, "delivery_claim_ordered", ["w:2", LEASE, 10, 100])
    got = {(uid(row[0]), row[17]) for row in rows}
    assert got == {(first.id, "h"), (later.id, "g")}


async def test_in_order_write_back_refuses_a_success_ahead_of_its_handler(store: Store) -> None:
    aggregate = uuid.uuid4()
    first, later = (
        NewEvent("t", {}, aggregate_id=aggregate),
        NewEvent("t", {}, aggregate_id=aggregate),
    )
    await claimed(store, first, later)
    await open_(store, [(first.id, "h", False), (later.id, "h", True), (later.id, "g", True)])
    ahead = results((later.id, "h", "w:1", "succeeded"), in_order=True)
    assert await fetch(store, "delivery_write_back", ahead) == []
    other = results((later.id, "g", "w:1", "succeeded"), in_order=True)
    assert len(await fetch(store, "delivery_write_back", other)) == 1
    not_in_order = results((later.id, "h", "w:1", "succeeded"))
    assert len(await fetch(store, "delivery_write_back", not_in_order)) == 1


async def test_in_order_write_back_refuses_behind_a_dead_letter_of_the_same_batch(
    store: Store,
) -> None:
    aggregate = uuid.uuid4()
    first, later = (
        NewEvent("t", {}, aggregate_id=aggregate),
        NewEvent("t", {}, aggregate_id=aggregate),
    )
    await claimed(store, first, later)
    await open_(store, [(first.id, "h", True), (later.id, "h", True)])
    batch = results(
        (first.id, "h", "w:1", "dead_lettered"), (later.id, "h", "w:1", "succeeded"), in_order=True
    )
    written = await fetch(store, "delivery_write_back", batch)
    assert [uid(row[0]) for row in written] == [first.id]
    both = results(  # the first is done now (its success is fenced out): the later may go
        (first.id, "h", "w:1", "succeeded"), (later.id, "h", "w:1", "succeeded"), in_order=True
    )
    assert len(await fetch(store, "delivery_write_back", both)) == 1


async def test_blocking_claim_waits_behind_a_dead_lettered_delivery(store: Store) -> None:
    aggregate = uuid.uuid4()
    first, later = (
        NewEvent("t", {}, aggregate_id=aggregate),
        NewEvent("t", {}, aggregate_id=aggregate),
    )
    await claimed(store, first, later)
    await open_(store, [(first.id, "h", True), (later.id, "h", False)])
    await fetch(store, "delivery_write_back", results((first.id, "h", "w:1", "dead_lettered")))
    assert await fetch(store, "delivery_claim_ordered_blocking", ["w:2", LEASE, 10, 100]) == []
    [row] = await fetch(store, "delivery_claim_ordered", ["w:2", LEASE, 10, 100])
    assert (uid(row[0]), row[17]) == (later.id, "h")


async def test_event_claim_names_the_handlers_it_must_wait_for(store: Store) -> None:
    aggregate = uuid.uuid4()
    [first_id] = await claimed(store, NewEvent("t", {}, aggregate_id=aggregate))
    await open_(store, [(first_id, "h", False)])
    later = NewEvent("t", {}, aggregate_id=aggregate)
    await store.event_insert_many([later])
    [row] = await fetch(store, "event_claim_ordered", ["w:2", LEASE, 10, 100])
    assert uid(row[0]) == later.id and handlers_of(row[17]) == {"h"}


async def test_replay_reopens_one_delivery_only(store: Store) -> None:
    event_id = await fanned_out(store)
    await fetch(store, "delivery_claim", ["w:2", LEASE, 10, 100])
    batch = results((event_id, "a", "w:1", "succeeded"), (event_id, "b", "w:2", "dead_lettered"))
    await fetch(store, "delivery_write_back", batch)
    assert len(await fetch(store, "delivery_replay", [event_id, "b"])) == 1
    rows = await delivery_rows(store, event_id)
    assert (rows["b"].status, rows["b"].attempts, rows["b"].outcome) == ("pending", 0, None)
    assert (rows["a"].status, rows["a"].outcome) == ("done", "succeeded")
    event = await event_row(store, event_id)
    assert not event.processed and event.outcome == "succeeded" and event.deliveries_open == 1
    assert event.routed_at is not None and event.metadata["replayed_handler"] == "b"
    [letter] = await store.dead_letter_list()
    assert letter.replayed_at is not None
    assert await fetch(store, "delivery_replay", [event_id, "b"]) == []  # pending already


async def test_raw_replay_of_a_routed_event_deletes_its_deliveries(store: Store) -> None:
    event_id = await fanned_out(store)
    await fetch(store, "delivery_claim", ["w:2", LEASE, 10, 100])
    batch = results((event_id, "a", "w:1", "succeeded"), (event_id, "b", "w:2", "succeeded"))
    await fetch(store, "delivery_write_back", batch)
    async with store.driver.begin() as conn:  # the seed's replay, spelled as it spells it
        await conn.exec_driver_sql(f"UPDATE events SET processed = false WHERE id = '{event_id}'")
    assert await delivery_rows(store, event_id) == {}
    event = await event_row(store, event_id)
    assert event.routed_at is None and event.deliveries_open is None and not event.processed
    [again] = await store.event_claim_many("w:3", UNORDERED)
    assert again.id == event_id


async def test_add_backfills_handled_events_only(store: Store) -> None:
    [done_id] = await claimed(store, NewEvent("t", {}))
    await fetch(
        store,
        "event_write_back",
        [[done_id], ["w:1"], ["succeeded"], "test", False, *([[]] * 13), [None]],
    )
    assert (await event_row(store, done_id)).processed
    pending = NewEvent("t", {})
    await store.event_insert_many([pending])
    added = await fetch(store, "delivery_add", [[done_id, pending.id], "late"])
    assert [uid(row[0]) for row in added] == [done_id]
    assert await fetch(store, "delivery_add", [[done_id], "late"]) == []
    event = await event_row(store, done_id)
    assert not event.processed and event.deliveries_open == 1 and event.outcome == "succeeded"
    assert set(await delivery_rows(store, done_id)) == {"late"}
    assert await delivery_rows(store, pending.id) == {}


async def test_release_renew_and_hold_are_fenced(store: Store) -> None:
    event_id = await fanned_out(store)
    leases = [[event_id], ["a"], ["w:1"]]
    assert len(await fetch(store, "delivery_renew", [*leases, 60.0])) == 1
    assert await fetch(store, "delivery_renew", [[event_id], ["a"], ["w:9"], 60.0]) == []
    assert len(await fetch(store, "delivery_hold", [event_id, "a", "w:1"])) == 1
    assert len(await fetch(store, "delivery_release", leases)) == 1
    rows = await delivery_rows(store, event_id)
    assert rows["a"].locked_by is None and rows["a"].attempts == 0


async def test_discard_marks_the_dead_delivery_discarded(store: Store) -> None:
    event_id = await fanned_out(store)
    await fetch(store, "delivery_write_back", results((event_id, "a", "w:1", "dead_lettered")))
    [letter] = await store.dead_letter_list()
    assert len(await fetch(store, "dead_letter_discard", [[letter.id]])) == 1
    assert (await delivery_rows(store, event_id))["a"].outcome == "discarded"
