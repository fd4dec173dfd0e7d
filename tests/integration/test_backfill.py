"""Backfill (issue 14, point 6) on both backends: a subscription added after events
were processed gets deliveries for the matching past events only."""

import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from eventproc import Event, HandlerContext, Registry
from eventproc.backfill import BackfillReport, backfill
from eventproc.engine import Processor
from eventproc.errors import RegistryError
from eventproc.processor_config import ProcessorConfig
from eventproc.routing import PatternError
from eventproc.store import Store
from eventproc.store.schema import deliveries, events

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SINCE, UNTIL = BASE, BASE + timedelta(hours=1)
NEW_FILTER = {"payload": {"plan": ["pro"]}}
AGGREGATE = uuid.uuid4()


def at(minutes: float) -> datetime:
    return BASE + timedelta(minutes=minutes)


# key -> (type, payload, created_at, aggregate). ``new`` takes a.created and
# c.* with plan "pro"; ``old`` (there from the start) takes a.*.
PAST: dict[str, tuple[str, dict[str, Any], datetime, uuid.UUID | None]] = {
    "before_since": ("a.created", {"plan": "pro"}, at(-1), None),
    "first": ("a.created", {"plan": "pro"}, at(0.5), None),
    "tie_1": ("a.created", {"plan": "pro"}, at(1), None),  # tie_1 and tie_2: one created_at,
    "tie_2": ("a.created", {"plan": "pro"}, at(1), AGGREGATE),  # across a batch boundary
    "free": ("a.created", {"plan": "free"}, at(2), None),  # its filter says no
    "deleted": ("a.deleted", {"plan": "pro"}, at(3), None),  # not its type
    "other": ("b.other", {"plan": "pro"}, at(4), None),  # nobody's type: skipped
    "skipped_then": ("c.made", {"plan": "pro"}, at(5), None),  # skipped then, new takes it
    "after_until": ("a.created", {"plan": "pro"}, at(120), None),
}
FANNED = ("a.created", {"plan": "pro"}, at(6), None)  # processed once new existed
PENDING = ("a.created", {"plan": "pro"}, at(30), None)  # not processed yet
CREATED = {"first", "tie_1", "tie_2", "skipped_then"}


async def publish(store: Store, key: str, spec: tuple[Any, ...], ids: dict[str, uuid.UUID]) -> None:
    """Insert with an explicit created_at: the window's edges are the test's to choose."""
    event_type, payload, created_at, aggregate_id = spec
    ids[key] = uuid.uuid4()
    async with store.begin() as conn:
        await conn.execute(
            insert(events).values(
                id=ids[key],
                event_type=event_type,
                payload=payload,
                created_at=created_at,
                aggregate_id=aggregate_id,
                aggregate_type="thing" if aggregate_id else None,
            )
        )


def registry_of(runs: dict[str, list[uuid.UUID]], *, with_new: bool) -> Registry:
    """``old`` (and ``new``), each recording the events it runs."""
    registry = Registry()

    def recorder(name: str) -> Callable[[Event, HandlerContext], Any]:
        async def record(event: Event, ctx: HandlerContext) -> None:
            runs.setdefault(name, []).append(event.id)

        return record

    registry.register("a.*", recorder("old"), name="old")
    if with_new:
        registry.register(["a.created", "c.*"], recorder("new"), name="new", filter=NEW_FILTER)
    return registry


async def noop(event: Event, ctx: HandlerContext) -> None:
    return None


def config() -> ProcessorConfig:
    return ProcessorConfig(batch_size=20, concurrency=20, poll_interval_ms=60_000)


async def delivery_rows(store: Store) -> list[tuple[Any, ...]]:
    async with store.reader.connect() as conn:
        found = await conn.execute(
            select(deliveries.c.event_id, deliveries.c.handler, deliveries.c.status).order_by(
                deliveries.c.event_id, deliveries.c.handler
            )
        )
        return [tuple(row) for row in found]


async def pending_count(store: Store) -> int:
    async with store.reader.connect() as conn:
        found = await conn.execute(
            select(func.count()).select_from(events).where(events.c.processed == False)  # noqa: E712
        )
        return int(found.scalar_one())


async def history(store: Store) -> dict[str, uuid.UUID]:
    """The past: processed before ``new`` existed, one fanned out after, one still pending."""
    ids: dict[str, uuid.UUID] = {}
    for key, spec in PAST.items():
        await publish(store, key, spec, ids)
    await Processor(store, registry_of({}, with_new=False), config()).run(until_idle=True)
    await publish(store, "fanned", FANNED, ids)
    await Processor(store, registry_of({}, with_new=True), config()).run(until_idle=True)
    await publish(store, "pending", PENDING, ids)
    return ids


async def test_backfill_gives_matching_past_events_the_new_subscriptions_delivery(
    store: Store,
) -> None:
    ids = await history(store)
    registry = registry_of(runs := {}, with_new=True)
    before = await delivery_rows(store)
    assert {row[1] for row in before} == {"old", "new"}  # the fanned-out event's two

    dry = await backfill(store, registry, "new", since=SINCE, until=UNTIL, batch_size=2)
    assert (await delivery_rows(store), await pending_count(store)) == (before, 1)
    expected = BackfillReport(
        "new", SINCE, UNTIL, True, scanned=7, matched=6, already_delivered=1, pending=1
    )
    assert replace(dry, batches=0) == replace(expected, would_create=4)
    assert dry.batches == 4  # a.created: 6 events in pages of 2 (the last full), c.made: 1

    progress: list[BackfillReport] = []
    real = await backfill(
        store,
        registry,
        "new",
        since=SINCE,
        until=UNTIL,
        dry_run=False,
        batch_size=2,
        on_batch=progress.append,
    )
    assert real.created == dry.would_create == real.would_create == 4
    assert replace(real, dry_run=True, created=0) == dry
    assert [report.batches for report in progress] == [1, 2, 3, 4]
    assert progress[-1] == real
    added = {row[0] for row in await delivery_rows(store)} - {row[0] for row in before}
    assert added == {ids[key] for key in CREATED}

    again = await backfill(store, registry, "new", since=SINCE, until=UNTIL, dry_run=False)
    assert (again.created, again.would_create, again.already_delivered) == (0, 0, 5)

    await Processor(store, registry, config()).run(until_idle=True)
    assert sorted(runs["new"]) == sorted(ids[key] for key in (*CREATED, "pending"))
    assert runs["old"] == [ids["pending"]]  # the backfilled events did not run old again
    for key in (*CREATED, "pending"):
        event = await store.event_get(ids[key])
        assert event is not None and event.processed, key
    assert await pending_count(store) == 0


async def test_extra_filter_narrows_exact_types_page_alone_and_dry_runs_write_nothing(
    store: Store,
) -> None:
    await history(store)
    registry = registry_of({}, with_new=True)
    registry.register("a.deleted", noop, name="deletions")
    before = await delivery_rows(store)
    narrowed = await backfill(
        store,
        registry,
        "new",
        since=SINCE,
        until=UNTIL,
        filter={"aggregate_id": [{"exists": True}]},
    )
    assert (narrowed.scanned, narrowed.matched, narrowed.would_create) == (7, 1, 1)
    # Exact types only: no look at the types present; no until: after_until is in.
    exact = await backfill(store, registry, "deletions", since=SINCE)
    assert (exact.scanned, exact.matched, exact.would_create, exact.batches) == (1, 1, 1, 1)
    unbounded = await backfill(store, registry, "new", since=SINCE)
    assert (unbounded.scanned, unbounded.would_create) == (8, 5)
    assert await delivery_rows(store) == before and await pending_count(store) == 1


async def test_events_a_subscription_handled_on_their_own_rows_are_not_backfilled_again(
    store: Store,
) -> None:
    """A single subscription's events carry metadata.handled_by, so a backfill skips them."""
    ids = await history(store)
    single = await store.event_get(ids["first"])  # a.created, before new: only old took it
    assert single is not None and single.metadata["handled_by"] == "old"
    report = await backfill(store, registry_of({}, with_new=True), "old", since=SINCE, until=UNTIL)
    # old's types a.*: first, tie_1, tie_2, free, deleted (on rows) and fanned (a delivery).
    assert (report.matched, report.already_delivered, report.would_create) == (7, 6, 0)


async def test_bad_input_is_refused_before_any_database_work(store: Store) -> None:
    registry = registry_of({}, with_new=True)
    with pytest.raises(
        RegistryError, match=r"no subscription named 'nope' \(the registry has: old, new\)"
    ):
        await backfill(store, registry, "nope", since=SINCE)
    with pytest.raises(PatternError, match="payload"):
        await backfill(store, registry, "new", since=SINCE, filter={"payload": {"plan": "pro"}})
    with pytest.raises(ValueError, match="must be after since"):
        await backfill(store, registry, "new", since=UNTIL, until=SINCE)
    with pytest.raises(ValueError, match="batch_size"):
        await backfill(store, registry, "new", since=SINCE, batch_size=0)
