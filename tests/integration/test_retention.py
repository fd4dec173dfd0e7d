"""Retention on both backends: each guard, the clocks, archives, dry runs, the lease, space,
and the pruner giving way to its process's claims."""

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from sqlalchemy import delete, func, insert, select

from eventproc import Event, HandlerContext, Registry
from eventproc.admin import pruner as pruner_module
from eventproc.admin.pruner import Pruner
from eventproc.config import Settings
from eventproc.event import NewEvent
from eventproc.runtime import Runtime
from eventproc.store import Store, open_store, retention
from eventproc.store.retention import RetentionPolicy
from eventproc.store.rows import aware
from eventproc.store.schema import (
    admin_actions,
    attempts,
    dead_letters,
    deliveries,
    events,
    events_archive,
    leases,
)

POLICY = RetentionPolicy()  # 7 / 7 / 30 / 30 days, attempts 30, audit 365


@pytest.fixture
async def st(store: Store) -> AsyncIterator[Store]:
    async with store.engine.begin() as conn:
        await conn.execute(delete(leases))
        await conn.execute(delete(events_archive))
    yield store


async def finished(
    store: Store,
    days_ago: float,
    outcome: str | None = "succeeded",
    *,
    processed: bool = True,
    aggregate: uuid.UUID | None = None,
    metadata: dict[str, Any] | None = None,
) -> uuid.UUID:
    """An event that finished ``days_ago`` days ago with ``outcome``."""
    new = NewEvent("retention.test", {"n": 1}, aggregate_id=aggregate, metadata=metadata)
    await store.event_insert_many([new])
    at = datetime.now(UTC) - timedelta(days=days_ago)
    async with store.engine.begin() as conn:
        await conn.execute(
            events.update()
            .where(events.c.id == new.id)
            .values(processed=processed, outcome=outcome, processed_at=at, created_at=at)
        )
    return new.id


async def add_delivery(
    store: Store, event_id: uuid.UUID, handler: str, status: str = "done", outcome: Any = None
) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(deliveries).values(
                event_id=event_id,
                handler=handler,
                event_type="retention.test",
                event_created_at=datetime.now(UTC),
                status=status,
                outcome=outcome or ("succeeded" if status == "done" else None),
            )
        )


async def add_dead_letter(
    store: Store, event_id: uuid.UUID, days_ago: float, *, replayed: bool = False
) -> None:
    at = datetime.now(UTC) - timedelta(days=days_ago)
    async with store.engine.begin() as conn:
        await conn.execute(
            insert(dead_letters).values(
                id=uuid.uuid4(),
                event_id=event_id,
                event_type="retention.test",
                payload={},
                error_message="boom",
                retry_count=5,
                original_created_at=at,
                created_at=at,
                replayed_at=at if replayed else None,
            )
        )


async def ids_left(store: Store, table: Any = events) -> set[Any]:
    column = table.c.event_id if table is not events else table.c.id
    async with store.engine.connect() as conn:
        return {row[0] for row in await conn.execute(select(column))}


async def prune(store: Store, policy: RetentionPolicy = POLICY, **kw: Any) -> dict[str, int]:
    result = await Pruner(store.driver, policy, **kw).run_pass()
    assert result is not None
    return result


async def test_outcome_clocks_and_unfinished_events(st: Store) -> None:
    old_ok = await finished(st, 8)
    young_ok = await finished(st, 6)
    old_skip = await finished(st, 8, "skipped")
    dead_young = await finished(st, 8, "dead_lettered")
    dead_old = await finished(st, 31, "dead_lettered")
    discarded_old = await finished(st, 31, "discarded")
    seed_era = await finished(st, 8, None)  # processed before eventproc adopted the table
    pending_old = await finished(st, 100, None, processed=False)
    async with st.engine.begin() as conn:
        await conn.execute(
            insert(attempts).values(event_id=old_ok, attempt=1, outcome="retry", error="x")
        )
    pruned = await prune(st)
    assert await ids_left(st) == {young_ok, dead_young, pending_old}
    assert pruned["events"] == 5 and pruned["event_attempts"] == 1
    assert {old_ok, old_skip, dead_old, discarded_old, seed_era}.isdisjoint(await ids_left(st))
    assert await ids_left(st, attempts) == set()


async def test_unfinished_delivery_keeps_its_event(st: Store) -> None:
    routed = await finished(st, 10)
    await add_delivery(st, routed, "a")
    await add_delivery(st, routed, "b", status="pending")
    done = await finished(st, 10)
    await add_delivery(st, done, "a")
    await prune(st)
    assert await ids_left(st) == {routed}
    assert await ids_left(st, deliveries) == {routed}  # the pruned event's went with it


async def test_aggregate_ordering_keeps_blocking_dead_letters(st: Store) -> None:
    aggregate, other = uuid.uuid4(), uuid.uuid4()
    head = await finished(st, 40, "dead_lettered", aggregate=aggregate)
    await add_dead_letter(st, head, 40)
    partial = await finished(st, 40, "partial", aggregate=other)
    await add_delivery(st, partial, "a")
    await add_delivery(st, partial, "b", outcome="dead_lettered")
    loose = await finished(st, 40, "dead_lettered")  # no aggregate: nothing waits on it
    blocking = replace(POLICY, block_on_dead_letters=True)
    await prune(st, blocking)
    assert await ids_left(st) == {head, partial}
    assert await ids_left(st, dead_letters) == {head}
    await prune(st)  # AGGREGATE_FAILURE=park: a dead letter holds nothing back
    assert await ids_left(st) == set()
    assert loose not in await ids_left(st, dead_letters)


async def test_open_dead_letter_keeps_its_event_by_its_own_clock(st: Store) -> None:
    policy = replace(POLICY, partial_days=5)
    kept = await finished(st, 10, "partial")
    await add_dead_letter(st, kept, 10)  # open, 10 of its 30 days
    gone = await finished(st, 10, "partial")
    await add_dead_letter(st, gone, 10, replayed=True)
    history = await finished(st, 1)  # replayed long ago, succeeded since: its letter is history
    await add_dead_letter(st, history, 40, replayed=True)
    young_history = await finished(st, 1)
    await add_dead_letter(st, young_history, 10, replayed=True)
    pruned = await prune(st, policy)
    assert await ids_left(st) == {kept, history, young_history}
    assert await ids_left(st, dead_letters) == {kept, young_history}
    assert pruned["event_dead_letters"] == 2


async def test_per_handler_override(st: Store) -> None:
    policy = replace(POLICY, handler_days={"slow": 60.0, "fast": 1.0})
    fast_only = await finished(st, 3)
    await add_delivery(st, fast_only, "fast")
    both = await finished(st, 10)
    await add_delivery(st, both, "fast")
    await add_delivery(st, both, "slow")
    other = await finished(st, 3)  # handler without an override: the outcome's 7 days
    await add_delivery(st, other, "plain")
    on_row_fast = await finished(st, 3, metadata={"handled_by": "fast"})
    on_row_slow = await finished(st, 10, metadata={"handled_by": "slow"})
    await prune(st, policy)
    assert await ids_left(st) == {both, other, on_row_slow}
    assert fast_only not in await ids_left(st) and on_row_fast not in await ids_left(st)


async def test_attempt_and_audit_clocks(st: Store) -> None:
    event = await finished(st, 1)
    now = datetime.now(UTC)
    async with st.engine.begin() as conn:
        for days in (31, 29):
            await conn.execute(
                insert(attempts).values(
                    event_id=event,
                    attempt=1,
                    outcome="retry",
                    finished_at=now - timedelta(days=days),
                )
            )
        for days in (400, 300):
            await conn.execute(
                insert(admin_actions).values(
                    at=now - timedelta(days=days),
                    actor="ops",
                    role="admin",
                    action="x",
                    result="ok",
                )
            )
    pruned = await prune(st)
    assert pruned["event_attempts"] == 1 and pruned["admin_actions"] == 1
    async with st.engine.connect() as conn:
        left = (await conn.execute(select(attempts.c.finished_at))).scalars().all()
        audit_left = (await conn.execute(select(func.count()).select_from(admin_actions))).scalar()
    assert len(left) == 1 and audit_left == 1
    assert await ids_left(st) == {event}


async def test_archive_table_keeps_every_column(st: Store) -> None:
    gone = await finished(st, 8, metadata={"k": "v"})
    async with st.engine.connect() as conn:
        before = dict((await conn.execute(select(events))).one()._mapping)
    await prune(st, replace(POLICY, archive="table"))
    async with st.engine.connect() as conn:
        archived = dict((await conn.execute(select(events_archive))).one()._mapping)
    assert archived.pop("archived_at") is not None
    assert archived == before and archived["id"] == gone
    assert await ids_left(st) == set()


async def test_archive_jsonl_written_before_delete(st: Store, tmp_path: Path) -> None:
    first, second = await finished(st, 8), await finished(st, 9)
    keep = await finished(st, 1)
    path = tmp_path / "archive.jsonl"
    await prune(st, replace(POLICY, archive="jsonl"), jsonl=path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert {line["id"] for line in lines} == {str(first), str(second)}
    assert all(line["payload"] == {"n": 1} and line["outcome"] == "succeeded" for line in lines)
    assert await ids_left(st) == {keep}


async def test_dry_run_writes_nothing(st: Store) -> None:
    await finished(st, 8)
    await finished(st, 9, "skipped")
    young = await finished(st, 1)
    found = {(p.table, p.outcome): p for p in await retention.plan(st.driver, POLICY)}
    assert found[("events", "succeeded")].rows == 1
    assert found[("events", "skipped")].rows == 1
    assert found[("event_attempts", None)].rows == 0
    oldest = found[("events", "skipped")].oldest
    assert oldest is not None and oldest < datetime.now(UTC) - timedelta(days=8.9)
    assert len(await ids_left(st)) == 3 and young in await ids_left(st)


async def test_one_pruner_at_a_time(st: Store, store_url: str) -> None:
    for days in range(8, 20):
        await finished(st, days)
    other = open_store(store_url, worker_name="other")
    try:
        first = Pruner(st.driver, POLICY, holder="first")
        second = Pruner(other.driver, POLICY, holder="second")
        async with st.driver.begin() as conn:  # the first holds the lease (mid-pass)
            assert await retention.lease_renew(conn, st.driver, "first", 60, take=True)
        assert await second.run_pass() is None
        assert len(await ids_left(st)) == 12  # nothing pruned by the second
        results = await asyncio.gather(first.run_pass(), second.run_pass())
        assert results[0] is not None and results[0]["events"] == 12
        assert await ids_left(st) == set()
        # Released at the end of the pass: the second takes the next one.
        assert await second.run_pass() is not None
        async with st.engine.connect() as conn:
            row = (await conn.execute(select(leases))).one()
        assert row.holder is None and row.succeeded_at is not None
    finally:
        await other.close()


async def test_expired_lease_is_taken_over(st: Store) -> None:
    await finished(st, 8)
    async with st.driver.begin() as conn:
        assert await retention.lease_renew(conn, st.driver, "dead", 0.001, take=True)
    await asyncio.sleep(0.05)
    assert (await prune(st))["events"] == 1


def file_size(path: Path) -> int:
    return path.stat().st_size


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_sqlite_file_shrinks_after_prune(st: Store) -> None:
    at = datetime.now(UTC) - timedelta(days=8)

    async def old_events(count: int) -> None:
        rows = [
            {
                "id": uuid.uuid4(),
                "event_type": "retention.test",
                "payload": {"blob": "x" * 2000},
                "processed": True,
                "outcome": "succeeded",
                "processed_at": at,
                "created_at": at,
            }
            for _ in range(count)
        ]
        async with st.engine.begin() as conn:
            await conn.execute(insert(events), rows)

    await old_events(1500)

    path = Path(st.driver.url_for_display)

    async def pages() -> int:
        with sqlite3.connect(path, isolation_level=None) as raw:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return int(raw.execute("PRAGMA page_count").fetchone()[0])

    before = await pages()
    size_before = file_size(path)
    await prune(st)  # the first pass makes the file incremental (a small file: one VACUUM)
    assert await pages() < before / 4
    assert file_size(path) < size_before / 4
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    # From then on incremental_vacuum gives pruned pages back after each pass.
    await old_events(1500)
    grown = await pages()
    await prune(st)
    assert await pages() < grown / 4


async def test_a_pass_that_fails_midway_gives_the_lease_back(st: Store) -> None:
    await finished(st, 8)
    pruner = Pruner(st.driver, POLICY, holder="failing")

    async def outage(table: str, pruned: dict[str, int]) -> None:
        raise ConnectionError("database went away")

    pruner._clocked = outage  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await pruner.run_pass()
    async with st.engine.connect() as conn:
        assert (await conn.execute(select(leases.c.holder))).scalar_one() is None
    assert (await prune(st))["events"] == 0  # the first pass's events batch had committed
    assert await ids_left(st) == set()


async def test_a_new_sqlite_file_is_incremental_and_an_old_one_is_converted(
    tmp_path: Path,
) -> None:
    """New files give pruned pages back from the start; a file from before (auto_vacuum
    none, tables already there) is converted by the pruner's first pass."""
    fresh = tmp_path / "fresh.db"
    store = open_store(f"sqlite+aiosqlite:///{fresh}")
    try:
        await store.migrate()
    finally:
        await store.close()
    with sqlite3.connect(fresh) as raw:
        assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2

    old = tmp_path / "old.db"
    with sqlite3.connect(old) as raw:  # as an earlier release left it
        raw.execute("CREATE TABLE older_app_table (n INTEGER)")
    store = open_store(f"sqlite+aiosqlite:///{old}")
    try:
        await store.migrate()
        with sqlite3.connect(old) as raw:
            assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
        await finished(store, 8)  # something to prune: the pass then reclaims space
        assert (await prune(store))["events"] == 1
        with sqlite3.connect(old) as raw:
            assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    finally:
        await store.close()


# -- giving way to the claims: a pruner waits while its process's claims are behind ------


async def test_a_pruner_waits_while_its_claims_are_behind(st: Store) -> None:
    for days in range(8, 11):
        await finished(st, days)
    behind = asyncio.Event()
    behind.set()
    pruner = Pruner(st.driver, POLICY, holder="giving-way", busy=behind.is_set)
    started = time.monotonic()
    passing = asyncio.create_task(pruner.run_pass())
    await asyncio.sleep(0.5)
    assert not passing.done() and len(await ids_left(st)) == 3  # nothing deleted meanwhile
    async with st.engine.connect() as conn:  # and the lease is ours, far from expiring
        lease = (await conn.execute(select(leases))).one()
    assert lease.holder == "giving-way"
    assert aware(lease.expires_at) > datetime.now(UTC) + timedelta(seconds=30)
    behind.clear()
    pruned = await asyncio.wait_for(passing, 10)
    assert pruned is not None and pruned["events"] == 3 and await ids_left(st) == set()
    assert pruner.deferred_seconds >= 0.5 and time.monotonic() - started >= 0.5
    # Waiting is capped well below the lease, which only the batches renew.
    assert pruner_module.DEFER_MAX_SECONDS * 4 <= pruner_module.LEASE_SECONDS


async def test_a_backlog_that_never_clears_lets_one_batch_through_per_wait(
    st: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pruner_module, "DEFER_MAX_SECONDS", 0.2)
    at = datetime.now(UTC) - timedelta(days=8)
    rows = [
        {"id": uuid.uuid4(), "event_type": "retention.test", "payload": {}, "processed": True}
        | {"outcome": "succeeded", "processed_at": at, "created_at": at}
        for _ in range(pruner_module.FIRST_BATCH + 50)
    ]
    async with st.engine.begin() as conn:
        await conn.execute(insert(events), rows)
    seen: list[int] = []  # events pruned so far, each time the pruner asks

    def always_behind() -> bool:
        seen.append(pruner.totals["events"])
        return True

    pruner = Pruner(st.driver, POLICY, busy=always_behind)
    started = time.monotonic()
    pruned = await prune_with(pruner)
    # Two events batches (200, then the last 50) and one per clocked table: five waits.
    assert pruned["events"] == pruner_module.FIRST_BATCH + 50 and await ids_left(st) == set()
    assert sorted(seen) == seen and set(seen) == {0, pruner_module.FIRST_BATCH, len(rows)}
    assert all(seen.count(total) >= 2 for total in set(seen))  # waited in steps each time
    assert pruner.deferred_seconds >= 5 * 0.2 and time.monotonic() - started >= 5 * 0.2


async def test_a_pruner_whose_claims_keep_up_prunes_at_once(st: Store) -> None:
    for days in range(8, 11):
        await finished(st, days)
    asked = []

    def keeping_up() -> bool:
        asked.append(True)
        return False

    pruner = Pruner(st.driver, POLICY, busy=keeping_up)
    pruned = await prune_with(pruner)
    assert pruned["events"] == 3 and await ids_left(st) == set()
    assert len(asked) == 1 + len(retention.CLOCKED_TABLES)  # once before each batch
    assert pruner.deferred_seconds == 0


async def prune_with(pruner: Pruner) -> dict[str, int]:
    result = await asyncio.wait_for(pruner.run_pass(), 30)
    assert result is not None
    return result


async def test_a_worker_pruner_gives_way_to_its_claim_backlog(store_url: str) -> None:
    """The runtime wires its claim loop's own signal: a real backlog holds the pass back."""
    registry, release = Registry(), asyncio.Event()

    @registry.handler("backlog.test", name="slow")
    async def slow(event: Event, ctx: HandlerContext) -> None:
        await release.wait()

    settings = Settings(
        database_url=store_url, poll_interval_ms=60_000, batch_size=5, concurrency=1, prune=True
    )
    runtime = Runtime(settings, registry=registry)
    await runtime.prepare(attempts=1)
    processing: asyncio.Task[None] | None = None
    try:
        old = await finished(runtime.store, 8)
        await runtime.store.event_insert_many([NewEvent("backlog.test", {}) for _ in range(20)])
        assert runtime.pruner.busy is not None and not runtime.pruner.busy()  # no claims yet
        processing = asyncio.create_task(runtime.processor.run())
        await asyncio.wait_for(runtime.processor.signals.claimed.wait(), 10)
        assert runtime.claims_behind() and runtime.pruner.busy == runtime.claims_behind
        passing = asyncio.create_task(runtime.pruner.run_pass())
        await asyncio.sleep(0.5)
        assert not passing.done() and old in await ids_left(runtime.store)
        release.set()  # the backlog drains; the claims come back short; the pass goes on
        pruned = await asyncio.wait_for(passing, 20)
        assert pruned is not None and pruned["events"] == 1
        assert not runtime.claims_behind()
        assert 0.5 <= runtime.pruner.deferred_seconds < pruner_module.DEFER_MAX_SECONDS
        scraped = generate_latest(runtime.metrics.registry).decode()
        assert f"eventproc_prune_deferred_seconds_total {runtime.pruner.deferred_seconds}" in (
            scraped
        )
    finally:
        release.set()
        runtime.processor.stop()
        if processing is not None:
            await asyncio.wait_for(processing, 30)
        await runtime.store.close()
