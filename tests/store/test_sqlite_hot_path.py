"""SQLite's hot path runs on a raw sqlite3 connection: its errors and its waits."""

import asyncio
import sqlite3
from pathlib import Path

import pytest

from eventproc import NewEvent
from eventproc.errors import StoreError
from eventproc.store import Store, open_store
from eventproc.store.protocol import ClaimPolicy


async def test_a_file_that_is_not_a_database_gives_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are not the pages of an SQLite database" * 100)
    store = open_store(f"sqlite:///{path}")
    try:
        with pytest.raises(StoreError, match="not a database"):
            await store.event_claim_many("w:1", ClaimPolicy(30, False, 10))
    finally:
        await store.close()


async def test_a_claim_waits_for_another_process_writer_then_goes_on(
    sqlite_store: Store, sqlite_url: str
) -> None:
    await sqlite_store.event_insert_many([NewEvent("t.ok", {"n": n}) for n in range(5)])
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        claim = asyncio.create_task(
            sqlite_store.event_claim_many("w:1", ClaimPolicy(30, False, 10))
        )
        await asyncio.sleep(0.3)
        assert not claim.done()
    finally:
        other.execute("ROLLBACK")
        other.close()
    claimed = await asyncio.wait_for(claim, 10)
    assert sorted(event.payload["n"] for event in claimed) == list(range(5))
    assert {event.locked_by for event in claimed} == {"w:1"}
