"""Publishing, replay (ours and the seed's raw SQL), listing, stats, wake-ups."""

import uuid

from sqlalchemy import text

from eventproc.event import NewEvent
from eventproc.store import (
    ClaimPolicy,
    EventFilter,
    Lease,
    Store,
    WriteBack,
)

POLICY = ClaimPolicy(lease_seconds=30, ordered=False, limit=100)


async def test_insert_is_idempotent_by_id(store: Store) -> None:
    event = NewEvent("t", {"a": [1, 2]}, aggregate_id=uuid.uuid4(), aggregate_type="user")
    assert await store.event_insert_many([event]) == 1
    assert await store.event_insert_many([event]) == 0
    row = await store.event_get(event.id)
    assert row is not None
    assert row.payload == {"a": [1, 2]} and row.aggregate_type == "user"
    assert row.aggregate_id == event.aggregate_id and row.version == 1 and not row.processed


async def test_plain_sql_insert_with_seed_columns_is_claimable(store: Store) -> None:
    event_id = uuid.uuid4()
    async with store.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO events (id, event_type, payload, created_by) "
                "VALUES (:id, 'seed.type', '{\"k\": 1}', 'someone')"
            ),
            {"id": str(event_id)},
        )
    [claimed] = await store.event_claim_many("w:1", POLICY)
    assert claimed.id == event_id and claimed.payload == {"k": 1}
    assert claimed.attempts == 1 and claimed.priority == 0


async def test_replay_gives_fresh_budget(store: Store) -> None:
    event = NewEvent("t", {})
    await store.event_insert_many([event])
    [claimed] = await store.event_claim_many("w:1", POLICY)
    await store.event_write_back([WriteBack.dead_lettered(Lease.of(claimed), "x", 1)])
    assert await store.event_replay([event.id]) == 1
    row = await store.event_get(event.id)
    assert row is not None and not row.processed and row.attempts == 0
    assert row.outcome is None and row.metadata["replayed"] is True
    [letter] = await store.dead_letter_list()
    assert letter.replayed_at is not None
    [again] = await store.event_claim_many("w:2", POLICY)
    assert again.attempts == 1


async def test_seed_raw_sql_replay_resets_budget(store: Store, backend: str) -> None:
    event = NewEvent("t", {}, metadata={"origin": "svc"})
    await store.event_insert_many([event])
    for n in range(2):  # two failed attempts, then a success
        [claimed] = await store.event_claim_many(f"w:{n}", POLICY)
        await store.event_write_back([WriteBack.retry(Lease.of(claimed), 0, "e", n + 1)])
    [claimed] = await store.event_claim_many("w:2", POLICY)
    assert claimed.attempts == 3
    await store.event_write_back([WriteBack.succeeded(Lease.of(claimed))])
    merge = (
        "metadata || '{\"replayed\": true}'::jsonb"
        if backend != "sqlite"
        else "json_patch(metadata, '{\"replayed\": true}')"
    )
    async with store.engine.begin() as conn:
        await conn.execute(
            text(f"UPDATE events SET processed = false, metadata = {merge} WHERE id IN (:id)"),
            {"id": str(event.id)},
        )
    row = await store.event_get(event.id)
    assert row is not None and row.attempts == 0 and row.locked_by is None
    assert row.metadata["origin"] == "svc" and row.metadata["replayed"] is True
    [again] = await store.event_claim_many("w:9", POLICY)
    assert again.attempts == 1


async def test_list_filters(store: Store) -> None:
    await store.event_insert_many([NewEvent("a", {}), NewEvent("a", {}), NewEvent("b", {})])
    assert len(await store.event_list(EventFilter(event_type="a"))) == 2
    assert len(await store.event_list(EventFilter(processed=False, limit=1))) == 1
    assert await store.event_list(EventFilter(processed=True)) == []


async def test_stats_snapshot(store: Store) -> None:
    await store.event_insert_many([NewEvent("t", {}) for _ in range(4)])
    [claimed, *_] = await store.event_claim_many("w:1", ClaimPolicy(30, False, 2))
    await store.event_write_back([WriteBack.dead_lettered(Lease.of(claimed), "x", 1)])
    stats = await store.stats_snapshot()
    assert stats.backlog == 3 and stats.in_flight == 1 and stats.due == 2
    assert stats.dead_letters == 1 and stats.oldest_pending_at is not None


async def test_local_publish_wakes_this_process(store: Store) -> None:
    woken: list[int] = []
    store.add_local_waker(lambda: woken.append(1))
    await store.event_insert_many([NewEvent("t", {})])
    assert woken == [1]


async def test_the_store_names_its_backend(store: Store, backend: str) -> None:
    expected = {"postgres": "postgresql", "pgbouncer": "postgresql", "sqlite": "sqlite"}
    assert store.backend == expected[backend]


async def test_ping_reads_database_clock(store: Store) -> None:
    from datetime import UTC, datetime, timedelta

    now = await store.ping()
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)
