"""Regression guard, not a timing test: SQL statements per processed event stay batched."""

from typing import Any

from sqlalchemy import event as sa_event

from eventproc import Event, HandlerContext, NewEvent, Registry
from eventproc.processor import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.store import SqlStore

EVENTS = 1000
# Claims and completions are batched (BATCH_SIZE=20 here): about one claim and
# one completion statement per 20 events. A per-event statement would be >= 1.
MAX_STATEMENTS_PER_EVENT = 0.15


async def test_statements_per_event_stay_batched(store: SqlStore) -> None:
    registry = Registry()

    @registry.handler("t.noop")
    async def noop(event: Event, ctx: HandlerContext) -> None:
        return None

    await store.event_insert_many([NewEvent("t.noop", {"n": n}) for n in range(EVENTS)])
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        verb = statement.split(None, 1)[0].upper()
        if verb != "BEGIN":  # SQLite's explicit BEGIN IMMEDIATE is not a round of work
            statements.append(verb)

    sa_event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    processor = Processor(store, registry, ProcessorConfig(batch_size=20, concurrency=50))
    await processor.run(until_idle=True)
    sa_event.remove(store.engine.sync_engine, "before_cursor_execute", count)

    assert processor.stats.success_count == EVENTS
    per_event = len(statements) / EVENTS
    assert per_event <= MAX_STATEMENTS_PER_EVENT, (per_event, statements[:20])
