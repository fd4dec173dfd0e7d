"""Fixtures for the Yachtparty pack's tests, on SQLite and PostgreSQL alike.

``yp`` is a :class:`Harness` over the parametrised ``store`` (tests/conftest.py)
with the pack's tables created and, on the shared PostgreSQL database,
emptied first. It seeds rows, publishes events, runs the real processor until
idle, and reads everything back.
"""

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import ColumnElement, Table, select

from eventproc import Event, NewEvent
from eventproc.columns import db_now
from eventproc.engine import Processor
from eventproc.event import DeadLetter
from eventproc.processor_config import ProcessorConfig
from eventproc.retry import RetryPolicy
from eventproc.store import EventFilter, Store, open_store
from yachtparty import registry
from yachtparty.tables import (
    PACK_TABLES,
    community_requests,
    conversations,
    intro_opportunities,
    metadata,
    solution_workflows,
    users,
)

MAX_RETRIES = 3
RETRY = RetryPolicy(max_retries=MAX_RETRIES, base_ms=10, max_ms=50)


class Harness:
    """One test's view of a migrated store with the pack's (empty) tables."""

    retry = RETRY

    def __init__(self, store: Store, backend: str) -> None:
        self.store = store
        self.backend = backend
        self._phones = 0

    # -- seeding --------------------------------------------------------------

    async def insert(self, table: Table, **values: Any) -> uuid.UUID:
        values.setdefault("id", uuid.uuid4())
        async with self.store.engine.begin() as conn:
            await conn.execute(table.insert().values(**values))
        return uuid.UUID(str(values["id"]))

    async def add_user(self, **values: Any) -> uuid.UUID:
        self._phones += 1
        values.setdefault("phone_number", f"+1555000{self._phones:04d}")
        values.setdefault("first_name", "Test")
        values.setdefault("last_name", f"User{self._phones}")
        return await self.insert(users, **values)

    async def add_expert(self, expertise: list[str], **values: Any) -> uuid.UUID:
        return await self.add_user(verified=True, expertise=expertise, **values)

    async def add_conversation(self, user_id: uuid.UUID, **values: Any) -> uuid.UUID:
        values.setdefault("phone_number", "+15550000000")
        return await self.insert(conversations, user_id=user_id, **values)

    async def add_workflow(self, user_id: uuid.UUID, **values: Any) -> uuid.UUID:
        values.setdefault("request_description", "Find a CRM")
        values.setdefault("current_step", "research")
        return await self.insert(solution_workflows, user_id=user_id, **values)

    async def add_intro(self, connector: uuid.UUID, **values: Any) -> uuid.UUID:
        values.setdefault("first_name", "Pat")
        values.setdefault("last_name", "Prospect")
        return await self.insert(intro_opportunities, connector_user_id=connector, **values)

    async def add_request(self, **values: Any) -> uuid.UUID:
        values.setdefault("requesting_agent_type", "solution_saga")
        values.setdefault("question", "Anyone?")
        return await self.insert(community_requests, **values)

    # -- events -----------------------------------------------------------------

    async def publish(self, event_type: str, payload: dict[str, Any], **fields: Any) -> uuid.UUID:
        fields.setdefault("created_by", "test")
        event = NewEvent(event_type=event_type, payload=payload, **fields)
        await self.store.event_insert_many([event])
        return event.id

    async def process(self) -> None:
        """Run the real processor until nothing is due (its own retries included)."""
        processor = Processor(self.store, registry, ProcessorConfig(retry=RETRY))
        await processor.run(until_idle=True)

    async def handle(self, event_type: str, payload: dict[str, Any], **fields: Any) -> Event:
        """Publish one event, process, and return it (asserting nothing)."""
        event_id = await self.publish(event_type, payload, **fields)
        await self.process()
        return await self.event(event_id)

    async def event(self, event_id: uuid.UUID) -> Event:
        event = await self.store.event_get(event_id)
        assert event is not None, f"no event {event_id}"
        return event

    async def events_of_type(self, event_type: str) -> list[Event]:
        return await self.store.event_list(EventFilter(event_type=event_type, limit=1000))

    async def dead_letter(self, event_id: uuid.UUID) -> DeadLetter:
        found = [d for d in await self.store.dead_letter_list(1000) if d.event_id == event_id]
        assert len(found) == 1, f"expected one dead letter for {event_id}, got {found}"
        return found[0]

    async def replay(self, event_id: uuid.UUID) -> None:
        assert await self.store.event_replay([event_id]) == 1
        await self.process()

    # -- reading ------------------------------------------------------------------

    async def rows(self, table: Table, *where: ColumnElement[bool]) -> list[dict[str, Any]]:
        statement = select(table).where(*where)
        if "created_at" in table.c:
            statement = statement.order_by(table.c.created_at, table.c.id)
        async with self.store.engine.connect() as conn:
            return [dict(row._mapping) for row in (await conn.execute(statement)).all()]

    async def one(self, table: Table, *where: ColumnElement[bool]) -> dict[str, Any]:
        found = await self.rows(table, *where)
        assert len(found) == 1, f"expected one {table.name} row, got {found}"
        return found[0]

    async def db_now(self) -> datetime:
        async with self.store.engine.connect() as conn:
            return await db_now(conn)

    async def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every pack row and every event's identity: what a replay must not change."""
        tables: dict[str, list[dict[str, Any]]] = {}
        async with self.store.engine.connect() as conn:
            for table in metadata.sorted_tables:
                rows = (await conn.execute(select(table).order_by(table.c.id))).all()
                tables[table.name] = [dict(row._mapping) for row in rows]
        published = await self.store.event_list(EventFilter(limit=10_000))
        tables["events"] = sorted(
            (
                {
                    "id": e.id,
                    "event_type": e.event_type,
                    "payload": e.payload,
                    "aggregate_id": e.aggregate_id,
                    "aggregate_type": e.aggregate_type,
                    "created_by": e.created_by,
                    "version": e.version,
                }
                for e in published
            ),
            key=lambda row: str(row["id"]),
        )
        return tables

    async def assert_replay_changes_nothing(self, event_id: uuid.UUID) -> None:
        before = await self.snapshot()
        await self.replay(event_id)
        replayed = await self.event(event_id)
        assert replayed.processed and replayed.outcome == "succeeded", replayed
        assert await self.snapshot() == before


@pytest.fixture
async def yp_store(store: Store, backend: str) -> Store:
    """The parametrised store with the pack's tables, empty (truncated on PostgreSQL)."""
    await store.migrate(registry.schema_hooks)
    if backend == "postgres":
        async with store.engine.begin() as conn:
            await conn.exec_driver_sql(f"TRUNCATE {', '.join(PACK_TABLES)} CASCADE")
    return store


@pytest.fixture
def yp(yp_store: Store, backend: str) -> Harness:
    return Harness(yp_store, backend)


# -- a database of its own (schema tests need one without the pack's tables) --------


@pytest.fixture
def empty_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A brand-new database of the parametrised backend (nothing created in it)."""
    if backend == "postgres":
        return str(request.getfixturevalue("fresh_pg_url"))
    return f"sqlite:///{tmp_path / 'empty.db'}"


@pytest.fixture
async def empty_store(empty_url: str) -> AsyncIterator[Store]:
    store = open_store(empty_url, worker_name="test")
    yield store
    await store.close()


@pytest.fixture
def restore_cache_invalidator() -> Iterator[None]:
    from yachtparty import cache

    yield
    cache.set_cache_invalidator(None)
