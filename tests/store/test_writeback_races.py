"""Write-backs racing a claim that takes their rows over (PostgreSQL: concurrent writers).

The in-order exemption lets a later event of a run complete beside its
predecessor in one statement. The statement's snapshot may predate a claim
that is taking the predecessor over right now; the exemption must read the
predecessor's lease as it is once that claim commits, not as the snapshot
saw it (found by the chaos run through PgBouncer: out_of_order 1).
"""

import asyncio
import uuid
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg

from eventproc.event import Event, NewEvent
from eventproc.store import ClaimPolicy, Lease, Store, WriteBack

T = TypeVar("T")
FOLLOW = ClaimPolicy(lease_seconds=30, ordered=True, limit=5, follow=True)


async def _blocked_on_a_lock(conn: asyncpg.Connection) -> None:
    """Until another backend of this database waits for a lock (the write-back)."""
    for _ in range(500):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND datname = current_database() AND pid <> pg_backend_pid()"
        )
        if waiting:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the write-back never waited for the row lock")


async def _taking_over(pg_url: str, sql: str, *args: object) -> asyncpg.Connection:
    """A connection inside a transaction that has just run ``sql`` (not committed)."""
    conn = await asyncpg.connect(pg_url)
    await conn.execute("BEGIN")
    assert (await conn.execute(sql, *args)).endswith(" 1")
    return conn


async def _run(store: Store, n: int = 2) -> list[Event]:
    aggregate = uuid.uuid4()
    await store.event_insert_many(
        [NewEvent("t", {"n": i}, aggregate_id=aggregate) for i in range(n)]
    )
    run = await store.event_claim_many("A:1", FOLLOW)
    assert [event.payload["n"] for event in run] == list(range(n))
    return run


async def _racing(pg_url: str, sql: str, head: uuid.UUID, write: Awaitable[T]) -> T:
    """``write``'s result when ``sql`` (on ``head``) commits while ``write`` waits for its lock."""
    other = await _taking_over(pg_url, sql, head)
    watcher = await asyncpg.connect(pg_url)
    try:
        writing = asyncio.ensure_future(write)
        await _blocked_on_a_lock(watcher)
        await other.execute("COMMIT")
        return await writing
    finally:
        await other.close()
        await watcher.close()


async def test_a_run_completing_while_its_head_is_taken_over(pg_store: Store, pg_url: str) -> None:
    first, second = await _run(pg_store)
    late = [WriteBack.succeeded(Lease.of(event)) for event in (first, second)]
    written = await _racing(
        pg_url,
        "UPDATE events SET locked_by = 'B:1', attempts = 2 WHERE id = $1",
        first.id,
        pg_store.event_write_back(late, in_order=True),
    )
    assert written == 0  # neither: first is B's now, second waits for it
    second_now = await pg_store.event_get(second.id)
    assert second_now is not None and not second_now.processed
    # B's handling of first completes it; A's run stays refused (second runs
    # again under a new claim: delivery is at least once).
    assert await pg_store.event_write_back([WriteBack.succeeded(Lease(first.id, "B:1"))]) == 1
    assert (
        await pg_store.event_write_back([WriteBack.succeeded(Lease.of(second))], in_order=True) == 0
    )


async def test_a_run_completing_while_nobody_takes_it_over_lands(
    pg_store: Store, pg_url: str
) -> None:
    # The same statement, with a concurrent writer that only touches the head
    # without taking it: the wait ends and the whole run completes.
    first, second = await _run(pg_store)
    late = [WriteBack.succeeded(Lease.of(event)) for event in (first, second)]
    written = await _racing(
        pg_url,
        "UPDATE events SET locked_until = locked_until WHERE id = $1",
        first.id,
        pg_store.event_write_back(late, in_order=True),
    )
    assert written == 2


def _successes(*keys: tuple[uuid.UUID, str]) -> list[object]:
    """delivery_write_back's arguments: each (event, handler) succeeded under token A:1."""
    n = len(keys)
    return [
        [key[0] for key in keys],
        [key[1] for key in keys],
        ["A:1"] * n,
        ["succeeded"] * n,
        [0.0] * n,
        [None] * n,
        [1] * n,
        [None] * n,
        [None] * n,
        "test",
        True,
        [],
        [],
    ]


async def test_a_delivery_run_completing_while_its_head_is_taken_over(
    pg_store: Store, pg_url: str
) -> None:
    aggregate = uuid.uuid4()
    first, later = (NewEvent("t", {"n": n}, aggregate_id=aggregate) for n in (1, 2))
    await pg_store.event_insert_many([first, later])
    claimed = await pg_store.event_claim_many("A:1", ClaimPolicy(30, ordered=False, limit=10))
    assert len(claimed) == 2
    # Both onto deliveries of handler h, leased by A:1 (as a fanned-out run).
    opened = await pg_store.driver.fetch(
        "delivery_open",
        [[first.id, later.id], ["A:1", "A:1"], ["h", "h"], [True, True], [0, 0], 30.0,
         [True, True]],
    )  # fmt: skip
    assert len(opened) == 2
    late = _successes((first.id, "h"), (later.id, "h"))
    written = await _racing(
        pg_url,
        "UPDATE event_deliveries SET locked_by = 'B:1' WHERE event_id = $1 AND handler = 'h'",
        first.id,
        pg_store.driver.fetch("delivery_write_back", late),
    )
    assert written == []  # later waits for first's new handling
    # Once B's handling of first is written, A's success of later lands.
    done = _successes((first.id, "h"))
    done[2] = ["B:1"]
    assert len(await pg_store.driver.fetch("delivery_write_back", done)) == 1
    assert len(await pg_store.driver.fetch("delivery_write_back", _successes((later.id, "h")))) == 1
