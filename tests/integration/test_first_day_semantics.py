"""Issue 11, data and semantics: what a team moving off the replaced service relies on.

Every test runs on SQLite and PostgreSQL; rows are written with plain SQL
where the replaced service's publishers and operators would.
"""

import logging
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from eventproc import Event, HandlerContext, NewEvent, PermanentError, Registry
from eventproc.config import load_settings
from eventproc.engine import Processor
from eventproc.errors import Conflict
from eventproc.processor_config import ProcessorConfig
from eventproc.retry import RetryPolicy
from eventproc.store import Store, WriteBack
from eventproc.store.protocol import ClaimPolicy, Lease

# The replaced service's replay SQL, and its SQLite spelling.
SEED_REPLAY = {
    "postgresql": (
        "UPDATE events SET processed = false, "
        "metadata = metadata || '{\"replayed\": true}'::jsonb WHERE id IN (:id)"
    ),
    "sqlite": (
        "UPDATE events SET processed = false, "
        "metadata = json_patch(metadata, '{\"replayed\": true}') WHERE id IN (:id)"
    ),
}


def backend_of(store: Store) -> str:
    return store.backend


def sql_id(store: Store, event_id: uuid.UUID) -> str:
    """A uuid as hand-written SQL gives it (both backends read the dashed form)."""
    return str(event_id)


async def execute(store: Store, sql: str, **params: Any) -> int:
    async with store.engine.begin() as conn:
        return (await conn.execute(text(sql), params)).rowcount


def config(**overrides: Any) -> ProcessorConfig:
    values: dict[str, Any] = {
        "poll_interval_ms": 50,
        "lease_seconds": 5,
        "retry": RetryPolicy(max_retries=2, base_ms=0, max_ms=0),
    }
    values.update(overrides)
    return ProcessorConfig(**values)


def flaky_registry(bad: set[int]) -> Registry:
    """``t.flaky`` fails while its payload's ``n`` is in ``bad`` (ids in the message)."""
    registry = Registry()

    @registry.handler("t.flaky")
    async def flaky(event: Event, ctx: HandlerContext) -> None:
        if event.payload["n"] in bad:
            raise LookupError(f"User {event.payload['user']} not found")

    return registry


@pytest.mark.through_pgbouncer
async def test_seed_replay_closes_the_dead_letter_and_keeps_its_history(
    store: Store,
) -> None:
    bad = {1}
    registry = flaky_registry(bad)
    event = NewEvent("t.flaky", {"n": 1, "user": str(uuid.uuid4())})
    await store.event_insert_many([event])
    await Processor(store, registry, config()).run(until_idle=True)
    assert (await store.stats_snapshot()).dead_letters == 1

    bad.clear()
    replayed = await execute(store, SEED_REPLAY[backend_of(store)], id=sql_id(store, event.id))
    assert replayed == 1
    [letter] = await store.dead_letter_list()
    assert letter.replayed_at is not None
    assert (await store.stats_snapshot()).dead_letters == 0  # only open ones count

    await Processor(store, registry, config()).run(until_idle=True)
    done = await store.event_get(event.id)
    assert done is not None and done.outcome == "succeeded"
    metadata = done.metadata
    assert metadata["replayed"] is True
    for stale in ("dead_lettered", "retry_count", "last_error", "last_error_at"):
        assert stale not in metadata
    [previous] = metadata["previous_failures"]
    assert previous["dead_lettered"] is True and previous["retry_count"] == 2
    assert previous["outcome"] == "dead_lettered"
    assert previous["last_error"].startswith("LookupError: User ")


@pytest.mark.through_pgbouncer
async def test_replaying_a_still_bad_event_leaves_one_open_dead_letter(store: Store) -> None:
    registry = flaky_registry({1})
    event = NewEvent("t.flaky", {"n": 1, "user": "u"})
    await store.event_insert_many([event])
    for _ in range(3):
        await Processor(store, registry, config()).run(until_idle=True)
        await store.event_replay([event.id])
    await Processor(store, registry, config()).run(until_idle=True)
    letters = await store.dead_letter_list()
    assert len(letters) == 4
    assert sum(1 for letter in letters if letter.replayed_at is None) == 1
    assert (await store.stats_snapshot()).dead_letters == 1
    current = await store.event_get(event.id)
    assert current is not None and current.metadata["dead_lettered"] is True
    assert len(current.metadata["previous_failures"]) == 3


async def test_previous_failures_are_bounded(store: Store) -> None:
    registry = flaky_registry({1})
    event = NewEvent("t.flaky", {"n": 1, "user": "u"})
    await store.event_insert_many([event])
    for round_ in range(12):
        await Processor(store, registry, config(retry=RetryPolicy(1, 0, 0))).run(until_idle=True)
        await execute(store, SEED_REPLAY[backend_of(store)], id=sql_id(store, event.id))
        current = await store.event_get(event.id)
        assert current is not None
        assert len(current.metadata["previous_failures"]) == min(round_ + 1, 10)


async def test_dead_letters_carry_a_fingerprint_and_a_plain_message(store: Store) -> None:
    registry = flaky_registry({1, 2})
    users = [str(uuid.uuid4()), str(uuid.uuid4())]
    await store.event_insert_many(
        [NewEvent("t.flaky", {"n": n, "user": user}) for n, user in zip((1, 2), users, strict=True)]
    )
    await Processor(store, registry, config()).run(until_idle=True)
    letters = await store.dead_letter_list()
    assert sorted(letter.error_message for letter in letters) == sorted(
        f"LookupError: User {user} not found" for user in users
    )
    assert {letter.error_fingerprint for letter in letters} == {
        "LookupError: User <uuid> not found"
    }
    assert {letter.retry_count for letter in letters} == {2}
    async with store.engine.connect() as conn:
        groups = (
            await conn.execute(
                text(
                    "SELECT error_fingerprint, count(*) FROM event_dead_letters "
                    "GROUP BY error_fingerprint"
                )
            )
        ).all()
    assert [tuple(group) for group in groups] == [("LookupError: User <uuid> not found", 2)]


async def test_a_row_inserted_with_processed_null_is_pending(store: Store) -> None:
    registry = Registry()
    seen: list[uuid.UUID] = []

    @registry.handler("t.null")
    async def handle(event: Event, ctx: HandlerContext) -> None:
        seen.append(event.id)

    ids = [uuid.uuid4(), uuid.uuid4()]
    for event_id in ids:
        await execute(
            store,
            "INSERT INTO events (id, event_type, payload, processed) "
            "VALUES (:id, 't.null', '{}', NULL)",
            id=sql_id(store, event_id),
        )
    async with store.engine.connect() as conn:
        pending = (
            await conn.execute(text("SELECT count(*) FROM events WHERE processed = false"))
        ).scalar_one()
    assert pending == 2
    # A manual trigger claims it (it has no aggregate to wait behind).
    claimed = await store.event_claim_one(ids[0], "w:1", ClaimPolicy(lease_seconds=5))
    assert claimed.id == ids[0] and not claimed.processed
    await Processor(store, registry, config()).run(until_idle=True)
    assert seen == [ids[1]]


async def test_setting_processed_to_null_is_a_replay(store: Store) -> None:
    registry = flaky_registry(set())
    event = NewEvent("t.flaky", {"n": 0, "user": "u"})
    await store.event_insert_many([event])
    await Processor(store, registry, config()).run(until_idle=True)
    await execute(
        store, "UPDATE events SET processed = NULL WHERE id = :id", id=sql_id(store, event.id)
    )
    current = await store.event_get(event.id)
    assert current is not None and current.processed is False and current.outcome is None


async def test_manual_claim_conflicts_say_what_is_in_the_way(store: Store) -> None:
    aggregate = uuid.uuid4()
    head = NewEvent("t.flaky", {"n": 1, "user": "u"}, aggregate_id=aggregate)
    later = NewEvent("t.flaky", {"n": 0, "user": "u"}, aggregate_id=aggregate)
    await store.event_insert_many([head, later])
    policy = ClaimPolicy(lease_seconds=5)
    [first] = await store.event_claim_many("w:0", ClaimPolicy(lease_seconds=5, limit=1))
    assert first.id == head.id
    await store.event_write_back([WriteBack.retry(Lease.of(first), 600, "LookupError: boom", 1)])
    with pytest.raises(Conflict) as raised:
        await store.event_claim_one(later.id, "w:1", policy)
    message = str(raised.value)
    assert str(head.id) in message and "waiting for a retry at" in message
    # A manual trigger runs a retrying event now instead of waiting for its backoff.
    claimed = await store.event_claim_one(head.id, "w:1", policy)
    assert claimed.id == head.id and claimed.attempts == 2
    with pytest.raises(Conflict) as raised:
        await store.event_claim_one(later.id, "w:2", policy)
    assert "running on w:1" in str(raised.value)


async def test_park_is_the_default_and_block_is_reported(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from eventproc.runtime import Runtime

    settings = load_settings(database_url=store_url)
    assert settings.aggregate_failure.value == "park"
    assert settings.processor_config().park_failed_aggregates

    blocking = load_settings(
        database_url=store_url,
        aggregate_failure="block",
        blocked_aggregate_max_age_seconds=0,
        max_retries=1,
    )
    registry = Registry()

    @registry.handler("t.poison")
    async def poison(event: Event, ctx: HandlerContext) -> None:
        if event.payload["n"] == 0:
            raise PermanentError("poison")

    runtime = Runtime(blocking, registry=registry)
    try:
        await runtime.prepare()
        aggregate = uuid.uuid4()
        await runtime.store.event_insert_many(
            [NewEvent("t.poison", {"n": n}, aggregate_id=aggregate) for n in range(3)]
        )
        with caplog.at_level(logging.WARNING, logger="eventproc.dispatch"):
            await runtime.processor.run(until_idle=True)
        warnings = [r for r in caplog.records if getattr(r, "action", "") == "aggregate_blocked"]
        assert len(warnings) == 1 and str(aggregate) in warnings[0].getMessage()

        stats = await runtime.store_stats()
        assert stats is not None, runtime.processor.last_error
        assert stats.backlog == 2 and stats.due == 0
        assert runtime.blocked is not None and runtime.blocked.count == 1
        assert runtime.metrics.registry.get_sample_value("eventproc_blocked_aggregates") == 1
        status, reasons = runtime.health_status(stats)
        assert status == "degraded" and "1 aggregate(s) blocked" in reasons[0]
        from eventproc.http.health import blocked_json

        [shown] = blocked_json(runtime.blocked)
        assert shown["aggregateId"] == str(aggregate) and shown["waiting"] == 2
    finally:
        await runtime.store.close()


async def test_our_own_database_trouble_does_not_spend_the_budget(pg_store: Store) -> None:
    registry = Registry()
    attempts: list[int] = []

    @registry.handler("t.tx", transactional=True)
    async def killed_once(event: Event, ctx: HandlerContext) -> None:
        attempts.append(event.attempts)
        if len(attempts) == 1:  # the event's own connection dies under the handler
            assert ctx.connection is not None
            await ctx.connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

    event = NewEvent("t.tx", {})
    await pg_store.event_insert_many([event])
    # One counted failure would dead-letter it.
    from eventproc.metrics import Metrics

    metrics = Metrics()
    processor = Processor(pg_store, registry, config(retry=RetryPolicy(1, 0, 0)), metrics=metrics)
    await processor.run(until_idle=True)
    counts = metrics.event_counts
    assert counts.outcomes[("t.tx", "store_unavailable")] == 1
    assert sum(counts.durations[("t.tx", "store_unavailable")].counts) == 1  # timed, same label
    done = await pg_store.event_get(event.id)
    assert done is not None and done.outcome == "succeeded"
    assert attempts == [1, 1]  # the attempt was given back
    assert "retry_count" not in done.metadata and "last_error" not in done.metadata
    assert await pg_store.dead_letter_list() == []


async def test_metrics_series_stay_bounded_and_every_attempt_is_timed(store: Store) -> None:
    from prometheus_client import generate_latest

    from eventproc.metrics import Metrics

    registry = flaky_registry({1})
    metrics = Metrics()
    unknown = [NewEvent(f"t.unknown.{uuid.uuid4().hex}", {}) for _ in range(200)]
    failing = [NewEvent("t.flaky", {"n": 1, "user": "u"}) for _ in range(5)]
    await store.event_insert_many([*unknown, *failing, NewEvent("t.flaky", {"n": 0, "user": "u"})])
    await Processor(store, registry, config(), metrics=metrics).run(until_idle=True)
    text_ = generate_latest(metrics.registry).decode()
    series = [line for line in text_.splitlines() if line.startswith("eventproc_events_total{")]
    assert 'eventproc_events_total{event_type="_OTHER",outcome="skipped"} 200.0' in series
    assert not any("t.unknown." in line for line in text_.splitlines())
    assert len(series) == 4  # _OTHER skipped; t.flaky succeeded, retried, dead_lettered
    counts = {
        line.split("{", 1)[1].split("}", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text_.splitlines()
        if line.startswith("eventproc_handler_duration_seconds_count{")
    }
    assert counts == {
        'event_type="t.flaky",outcome="succeeded"': 1.0,
        'event_type="t.flaky",outcome="retried"': 5.0,
        'event_type="t.flaky",outcome="dead_lettered"': 5.0,
    }


async def test_a_sqlite_file_of_the_previous_release_is_upgraded(sqlite_url: str) -> None:
    from eventproc.store import open_store

    store = open_store(sqlite_url)
    await store.migrate()
    # Back to the previous release's shape: no fingerprint column, replay trigger v1.
    await execute(store, "DROP INDEX event_dead_letters_open_idx")
    await execute(store, "DROP INDEX event_dead_letters_group_idx")
    await execute(store, "ALTER TABLE event_dead_letters DROP COLUMN error_fingerprint")
    await execute(store, "DROP TRIGGER eventproc_replay_v3")
    await execute(store, "DROP TRIGGER eventproc_null_processed_v1")
    await execute(
        store,
        "CREATE TRIGGER eventproc_replay_v1 AFTER UPDATE OF processed ON events "
        "FOR EACH ROW WHEN OLD.processed = 1 AND NEW.processed = 0 "
        "BEGIN UPDATE events SET attempts = 0 WHERE id = NEW.id; END",
    )
    await store.migrate()
    async with store.engine.connect() as conn:
        columns = {
            row[1] for row in await conn.execute(text("PRAGMA table_info(event_dead_letters)"))
        }
        triggers = {
            row[0]
            for row in await conn.execute(
                text("SELECT name FROM sqlite_master WHERE type = 'trigger'")
            )
        }
    assert "error_fingerprint" in columns
    assert triggers == {"eventproc_replay_v3", "eventproc_null_processed_v1"}
    await store.close()


async def test_adopting_a_seed_table_makes_its_null_rows_pending(fresh_pg_url: str) -> None:
    import asyncpg

    from eventproc.store import open_store
    from support.databases import _dsn
    from support.seed import create_seed_tables

    conn = await asyncpg.connect(_dsn(fresh_pg_url))
    try:
        await create_seed_tables(conn)
        await conn.execute(
            "INSERT INTO events (id, event_type, payload, processed) "
            "VALUES (gen_random_uuid(), 't.null', '{}', NULL)"
        )
        store = open_store(fresh_pg_url)
        try:
            await store.migrate()
        finally:
            await store.close()
        assert await conn.fetchval("SELECT count(*) FROM events WHERE processed = false") == 1
        assert await conn.fetchval("SELECT count(*) FROM events WHERE processed IS NULL") == 0
    finally:
        await conn.close()


async def test_old_dead_letters_do_not_crowd_out_a_blocked_aggregate(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eventproc.store import summaries

    monkeypatch.setattr(summaries, "BLOCKED_SCAN", 2)
    registry = Registry()

    @registry.handler("t.poison")
    async def poison(event: Event, ctx: HandlerContext) -> None:
        if event.payload["n"] == 0:
            raise PermanentError("poison")

    # Three aggregates whose only event was dead-lettered long ago: nothing waits.
    await store.event_insert_many(
        [NewEvent("t.poison", {"n": 0}, aggregate_id=uuid.uuid4()) for _ in range(3)]
    )
    blocking = config(park_failed_aggregates=False)
    await Processor(store, registry, blocking).run(until_idle=True)
    blocked = uuid.uuid4()
    await store.event_insert_many(
        [NewEvent("t.poison", {"n": n}, aggregate_id=blocked) for n in range(2)]
    )
    await Processor(store, registry, blocking).run(until_idle=True)
    summary = await store.blocked_summary(include_dead_letters=True)
    assert [item.aggregate_id for item in summary.items] == [blocked]
    assert summary.items[0].waiting == 1 and not summary.capped
