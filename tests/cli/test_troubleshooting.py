"""README's Troubleshooting queries run, as written there, on PostgreSQL and on SQLite.

The replaced service's operators keep these six queries in their runbooks:
the PostgreSQL block must be exactly those six, and both blocks must work
against tables eventproc wrote.
"""

import json
import re
import uuid
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.event import NewEvent
from eventproc.store import ClaimPolicy, Store, WriteBack
from eventproc.store.protocol import Lease

README = Path(__file__).resolve().parents[2] / "README.md"

# The replaced service's README, "Troubleshooting" and "Replay", verbatim.
SEED_QUERIES = (
    "SELECT COUNT(*) FROM events WHERE processed = false;",
    "SELECT * FROM event_dead_letters ORDER BY created_at DESC LIMIT 10;",
    "SELECT id, event_type, metadata->'retry_count' FROM events WHERE processed = false;",
    "SELECT error_message, COUNT(*) FROM event_dead_letters GROUP BY error_message;",
    "SELECT event_type, COUNT(*) FROM event_dead_letters GROUP BY event_type;",
    "UPDATE events SET processed = false, metadata = metadata || '{\"replayed\": true}'::jsonb "
    "WHERE id IN ('event-id-1', 'event-id-2');",
)


def troubleshooting_blocks() -> list[list[str]]:
    """The statements of each ```sql block in README's Troubleshooting section."""
    text = README.read_text()
    section = text.split("\n## Troubleshooting\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)
    statements = []
    for block in blocks:
        code = "\n".join(line for line in block.splitlines() if not line.startswith("--"))
        statements.append([" ".join(part.split()) + ";" for part in code.split(";")[:-1]])
    return statements


def test_the_postgres_block_is_the_seeds_six_queries() -> None:
    postgres, sqlite = troubleshooting_blocks()
    assert postgres == list(SEED_QUERIES)
    assert len(sqlite) == 6
    assert [a == b for a, b in zip(postgres, sqlite, strict=True)] == [
        True,
        True,
        False,
        True,
        True,
        False,
    ]


async def fill(store: Store) -> tuple[NewEvent, NewEvent, NewEvent, NewEvent]:
    """One dead-lettered event, one retrying, one never tried, one processed with no metadata."""
    dead = NewEvent("test.broken", {"n": 1}, metadata={"source": "import"})
    retrying = NewEvent("test.flaky", {"n": 2})
    fresh = NewEvent("test.ok", {"n": 3})
    done = NewEvent("test.ok", {"n": 4})
    await store.event_insert_many([dead, retrying, done])
    claimed = {
        event.id: event
        for event in await store.event_claim_many("t", ClaimPolicy(lease_seconds=30, limit=10))
    }
    assert set(claimed) == {dead.id, retrying.id, done.id}
    await store.event_write_back([WriteBack.succeeded(Lease.of(claimed[done.id]))])
    async with store.engine.begin() as connection:  # as the replaced service left its rows
        await connection.exec_driver_sql(
            f"UPDATE events SET metadata = NULL WHERE id = '{done.id}'"
        )
    await store.event_write_back([WriteBack.dead_lettered(Lease.of(claimed[dead.id]), "boom", 1)])
    await store.event_write_back(
        [WriteBack.retry(Lease.of(claimed[retrying.id]), 3600, "flaky", 1)]
    )
    await store.event_insert_many([fresh])
    return dead, retrying, fresh, done


async def run(connection: AsyncConnection, statement: str) -> list[tuple[object, ...]]:
    result = await connection.exec_driver_sql(statement)
    return [tuple(row) for row in result.all()] if result.returns_rows else []


@pytest.mark.parametrize("block", [0, 1], ids=["postgres-block", "sqlite-block"])
async def test_each_query_runs_and_shows_what_the_readme_says(
    store: Store, backend: str, block: int
) -> None:
    statements = troubleshooting_blocks()[block]
    if (block == 0) != (backend == "postgres"):
        # The other backend's spelling: only the statements both share must run.
        statements = [s for s in statements if s in troubleshooting_blocks()[1 - block]]
        assert len(statements) == 4
    dead, retrying, fresh, done = await fill(store)
    results = []
    async with store.engine.begin() as connection:
        for statement in statements:
            if statement.startswith("UPDATE"):
                statement = statement.replace("event-id-1", str(dead.id)).replace(
                    "event-id-2", str(done.id)
                )
            results.append(await run(connection, statement))
    if len(statements) == 4:
        backlog, letters, errors, types = results
    else:
        backlog, letters, retries, errors, types, _ = results
        counts = {uuid.UUID(str(row[0])): row[2] for row in retries}
        assert set(counts) == {retrying.id, fresh.id}
        assert json.loads(str(counts[retrying.id])) == 1 and counts[fresh.id] is None
        replayed = await store.event_get(dead.id)
        assert replayed is not None and not replayed.processed and replayed.attempts == 0
        assert replayed.metadata["replayed"] is True
        assert replayed.metadata["source"] == "import"
        # An event without metadata: the seed's `||` leaves it NULL, SQLite's json_patch marks it.
        plain = await store.event_get(done.id)
        assert plain is not None and not plain.processed
        assert plain.metadata.get("replayed") is (True if block == 1 else None)
        again = await store.event_claim_many("u", ClaimPolicy(lease_seconds=30, limit=10))
        assert {dead.id, done.id} <= {event.id for event in again}
    assert backlog == [(2,)]
    assert len(letters) == 1 and str(dead.id) in {str(value) for value in letters[0]}
    assert errors == [("boom", 1)]
    assert types == [("test.broken", 1)]
