"""Upgrade in place (issue 14, point 7): a database written by the last release
before the delivery model (4be787f), moved by today's ``migrate``.

The old release runs in a subprocess (its own source tree, the same
interpreter) and leaves events in every state: processed (succeeded,
skipped, dead-lettered with its dead letter), retrying, in flight under a
lease whose worker is gone, and pending, some behind a retrying or in-flight
event of their aggregate. Today's code then migrates and processes: nothing
is lost or changed by the migration, nothing finished runs again, the rest
runs exactly once per subscription in order per (subscription, aggregate),
and the seed's raw replay SQL still replays the old dead-lettered event.
"""

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from eventproc import Event, HandlerContext, Registry
from eventproc.engine import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.retry import RetryPolicy
from eventproc.store import Store, open_store
from eventproc.store.migrations import VERSION_TABLE

RELEASE = "4be787f"  # the last release before event_deliveries
REPO = Path(__file__).resolve().parents[2]

# What the old release writes. Each step claims only what it just published,
# so that every event ends in the state its key names.
OLD_WRITER = textwrap.dedent(
    """
    import asyncio, json, sys, uuid

    import eventproc
    from eventproc import NewEvent, PermanentError, Registry
    from eventproc.engine import Processor
    from eventproc.processor_config import ProcessorConfig
    from eventproc.store import open_store
    from eventproc.store.protocol import ClaimPolicy, Lease, WriteBack

    URL, OLD_SRC = sys.argv[1], sys.argv[2]
    assert eventproc.__file__.startswith(OLD_SRC), eventproc.__file__


    async def main():
        store = open_store(URL, worker_name="old-release")
        await store.migrate()
        aggregates = {name: uuid.uuid4() for name in ("retry", "flight", "dead", "pending")}
        ids = {}

        async def publish(key, event_type, aggregate=None):
            aggregate_id = aggregates[aggregate] if aggregate else None
            event = NewEvent(event_type, {"key": key}, aggregate_id=aggregate_id,
                             aggregate_type="up" if aggregate else None, created_by="old")
            await store.event_insert_many([event])
            ids[key] = event.id

        async def claim_one(key, token, lease_seconds):
            [claimed] = await store.event_claim_many(token, ClaimPolicy(lease_seconds, limit=1))
            assert claimed.id == ids[key], (key, claimed)
            return claimed

        # Finished by the old processor: succeeded, skipped (no handler), dead-lettered.
        await publish("done", "up.done")
        await publish("done_before_retry", "up.done", "retry")
        await publish("skipped", "up.skip")
        await publish("dead", "up.dead", "dead")
        registry = Registry()

        @registry.handler("up.done")
        async def done(event, ctx):
            return None

        @registry.handler("up.dead")
        async def dead(event, ctx):
            raise PermanentError("refused by the old release")

        config = ProcessorConfig(poll_interval_ms=60_000, listen=False)
        await Processor(store, registry, config).run(until_idle=True)
        # In flight: leased for 1 s to a worker that then disappears.
        await publish("flight", "up.flight", "flight")
        await claim_one("flight", "gone-worker:1", 1.0)
        # Retrying: its first attempt failed, the next one is due in a second.
        await publish("retry", "up.retry", "retry")
        retrying = await claim_one("retry", "old-release:2", 30.0)
        failed = WriteBack.retry(Lease.of(retrying), 1.0, "ValueError: not yet", 1)
        assert await store.event_write_back([failed]) == 1
        # Pending, never claimed: alone, and behind the retrying and in-flight ones.
        await publish("pending", "up.pending")
        await publish("behind_retry_1", "up.pending", "retry")
        await publish("behind_retry_2", "up.pending", "retry")
        await publish("behind_flight", "up.pending", "flight")
        await publish("pending_aggregate", "up.pending", "pending")
        await store.close()
        print(json.dumps({key: str(value) for key, value in ids.items()}))


    asyncio.run(main())
    """
)

FINISHED = ("done", "done_before_retry", "skipped", "dead")
UNFINISHED = (
    "flight",
    "retry",
    "pending",
    "behind_retry_1",
    "behind_retry_2",
    "behind_flight",
    "pending_aggregate",
)
# The seed-era columns and eventproc's processing columns of the old release.
OLD_EVENT_COLUMNS = (
    "id, event_type, aggregate_id, aggregate_type, payload, metadata, processed, version, "
    "created_at, created_by, priority, attempts, next_attempt_at, locked_by, locked_until, "
    "processed_at, outcome"
)
OLD_LETTER_COLUMNS = (
    "id, event_id, event_type, payload, error_message, retry_count, original_created_at, "
    "created_at, error_detail, handler, replayed_at, error_fingerprint"
)


@pytest.fixture(scope="session")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release's src/ tree, extracted once per session."""
    root = tmp_path_factory.mktemp("old")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", RELEASE, "src"], check=True, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root / "src"


@pytest.fixture
def upgrade_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of the test's own: the old release creates its schema."""
    if backend == "postgres":
        return str(request.getfixturevalue("fresh_pg_url"))
    return f"sqlite:///{tmp_path / 'old-release.db'}"


def write_with_old_release(url: str, old_src: Path) -> dict[str, uuid.UUID]:
    """Run OLD_WRITER with the old source tree first on the path; the ids it published."""
    script = old_src.parent / "old_writer.py"
    script.write_text(OLD_WRITER)
    env = {**os.environ, "PYTHONPATH": str(old_src)}
    done = subprocess.run(
        [sys.executable, str(script), url, str(old_src)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {key: uuid.UUID(value) for key, value in json.loads(done.stdout).items()}


async def snapshot(store: Store) -> tuple[list[Any], list[Any]]:
    """Every event and dead letter row, as stored (the old release's columns)."""
    async with store.reader.connect() as conn:
        found = await conn.execute(text(f"SELECT {OLD_EVENT_COLUMNS} FROM events ORDER BY id"))
        event_rows = [tuple(row) for row in found]
        found = await conn.execute(text(f"SELECT {OLD_LETTER_COLUMNS} FROM event_dead_letters"))
        letter_rows = [tuple(row) for row in found]
    return event_rows, letter_rows


@dataclass
class Handled:
    """What each subscription ran: (event key, attempt), in the order it ran them."""

    keys: dict[uuid.UUID, str]
    runs: dict[str, list[tuple[str, int]]]

    def of(self, handler: str) -> list[str]:
        return [key for key, _ in self.runs[handler]]


def recording_registry(keys: dict[uuid.UUID, str]) -> tuple[Registry, Handled]:
    """``record`` takes every type (so a finished event run again would show); ``also``
    takes the pending events that have an aggregate, so those fan out to two deliveries."""
    registry = Registry()
    handled = Handled(keys, {"record": [], "also": []})

    async def record(event: Event, ctx: HandlerContext) -> None:
        handled.runs["record"].append((keys[event.id], ctx.attempt))

    async def also(event: Event, ctx: HandlerContext) -> None:
        handled.runs["also"].append((keys[event.id], ctx.attempt))

    registry.register("up.*", record, name="record")
    registry.register("up.pending", also, name="also", filter={"aggregate_id": [{"exists": True}]})
    return registry, handled


def config() -> ProcessorConfig:
    return ProcessorConfig(
        batch_size=20,
        concurrency=20,
        poll_interval_ms=60_000,
        lease_seconds=10.0,
        retry=RetryPolicy(max_retries=3, base_ms=20, max_ms=200),
    )


async def wait_until_due(store: Store) -> None:
    """Until the gone worker's lease and the retry's delay are past, by the database's clock."""
    async with store.reader.connect() as conn:
        rows = await conn.execute(
            text("SELECT locked_until, next_attempt_at FROM events WHERE NOT processed")
        )
        times = [moment for row in rows for moment in row if moment is not None]
    assert times, "the old release left no lease and no retry behind"
    latest = max(times)
    for _ in range(100):
        if await store.ping() > _aware(latest):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the database clock never passed {latest}")


def _aware(moment: Any) -> Any:
    """Raw column values: an aware datetime on PostgreSQL, UTC text on SQLite."""
    if isinstance(moment, str):
        return datetime.fromisoformat(moment).replace(tzinfo=UTC)
    return moment


async def test_an_old_release_database_upgrades_without_losing_or_rerunning_anything(
    upgrade_url: str, old_release: Path
) -> None:
    ids = write_with_old_release(upgrade_url, old_release)
    keys = {event_id: key for key, event_id in ids.items()}
    store = open_store(upgrade_url, worker_name="new-release")
    try:
        before = await snapshot(store)
        old_revisions = await revisions(store)
        await store.migrate()
        assert await snapshot(store) == before, "the migration changed rows"
        await check_old_states(store, ids)
        await store.migrate()  # a second migration changes nothing either
        assert await snapshot(store) == before
        if store.backend == "postgresql":
            assert (old_revisions, await revisions(store)) == (["0005"], ["0008"])

        registry, handled = recording_registry(keys)
        await wait_until_due(store)
        await Processor(store, registry, config()).run(until_idle=True)
        await check_handled_once_in_order(store, ids, handled)
        await check_raw_replay_of_old_dead_letter(store, ids, registry, handled)
    finally:
        await store.close()


async def check_old_states(store: Store, ids: dict[str, uuid.UUID]) -> None:
    """Each event in the state the old release left it, through today's reads."""
    events = {key: await store.event_get(event_id) for key, event_id in ids.items()}
    assert all(event is not None for event in events.values())
    state = {key: (event.processed, event.outcome) for key, event in events.items() if event}
    assert state == {
        "done": (True, "succeeded"),
        "done_before_retry": (True, "succeeded"),
        "skipped": (True, "skipped"),
        "dead": (True, "dead_lettered"),
        **{key: (False, None) for key in UNFINISHED},
    }
    retry, flight = events["retry"], events["flight"]
    assert retry is not None and retry.attempts == 1 and retry.next_attempt_at is not None
    assert retry.locked_by is None and "not yet" in retry.metadata["last_error"]
    assert flight is not None and flight.attempts == 1 and flight.locked_by == "gone-worker:1"
    for key in ("pending", "behind_retry_1", "behind_flight"):
        pending = events[key]
        assert pending is not None and pending.attempts == 0 and pending.locked_by is None
    [letter] = await store.dead_letter_list()
    assert letter.event_id == ids["dead"] and letter.replayed_at is None
    assert letter.error_message == "refused by the old release"
    assert letter.handler is not None and letter.handler.endswith("dead")


async def revisions(store: Store) -> list[str]:
    """PostgreSQL's Alembic revisions (SQLite has none: [])."""
    if store.backend != "postgresql":
        return []
    async with store.reader.connect() as conn:
        found = await conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))
        return [row[0] for row in found]


async def check_handled_once_in_order(
    store: Store, ids: dict[str, uuid.UUID], handled: Handled
) -> None:
    fanned = [key for key in UNFINISHED if key.startswith(("behind", "pending_"))]
    assert sorted(handled.of("record")) == sorted(UNFINISHED)
    assert sorted(handled.of("also")) == sorted(fanned)
    attempts = dict(handled.runs["record"])
    # The retry's second attempt; the expired lease counted as the in-flight one's first.
    assert attempts["retry"] == 2 and attempts["flight"] == 2
    assert all(attempts[key] == 1 for key in UNFINISHED if key not in ("retry", "flight"))
    assert all(attempt == 1 for _, attempt in handled.runs["also"])
    for handler in ("record", "also"):
        order = handled.of(handler)
        for chain in (("retry", "behind_retry_1", "behind_retry_2"), ("flight", "behind_flight")):
            ran = [key for key in order if key in chain]
            assert ran == [key for key in chain if key in ran], (handler, order)
    for key, event_id in ids.items():
        event = await store.event_get(event_id)
        assert event is not None
        if key == "dead":
            assert event.processed and event.outcome == "dead_lettered"
        else:
            assert event.processed, key
            assert event.outcome == ("skipped" if key == "skipped" else "succeeded"), key
    [letter] = await store.dead_letter_list()
    assert letter.replayed_at is None, "the old dead letter must stay open"


async def check_raw_replay_of_old_dead_letter(
    store: Store, ids: dict[str, uuid.UUID], registry: Registry, handled: Handled
) -> None:
    """The seed's replay SQL on the old dead-lettered event: it runs again, fresh budget."""
    async with store.begin() as conn:
        await conn.exec_driver_sql(
            f"UPDATE events SET processed = false WHERE id = '{ids['dead']}'"
        )
    await Processor(store, registry, config()).run(until_idle=True)
    assert handled.runs["record"][-1] == ("dead", 1)
    assert handled.of("record").count("dead") == 1 and "dead" not in handled.of("also")
    event = await store.event_get(ids["dead"])
    assert event is not None and event.processed and event.outcome == "succeeded"
    [letter] = await store.dead_letter_list()
    assert letter.event_id == ids["dead"] and letter.replayed_at is not None
