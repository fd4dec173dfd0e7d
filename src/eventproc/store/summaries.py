"""Summaries for /health, /metrics and the CLI: counts and blocked aggregates.

Read-only named queries (admin_stats, admin_blocked_heads*), each one
statement with the database's clock in its rows: /health and a dashboard
polling it pay one round trip a summary, and nothing is built or compiled.
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from eventproc.store.driver import Driver
from eventproc.store.protocol import BlockedAggregate, BlockedSummary, StoreStats
from eventproc.store.rows import as_time, aware, uuid_of

BLOCKED_SCAN = 1000  # most blocked aggregates one summary reads (the count is capped there)

# A head's place in the summary's order (the head event's created_at, its id,
# its handler) and what it reports.
_Item = tuple[tuple[Any, uuid.UUID, str], BlockedAggregate]


async def blocked_summary(driver: Driver, *, include_dead_letters: bool) -> BlockedSummary:
    """Every blocked aggregate (up to BLOCKED_SCAN), oldest block first, with totals.

    Two kinds of head: an event still handled on its own row holds back
    every later event of its aggregate; a delivery holds back only its own
    handler's later deliveries there (ordering is per (handler, aggregate)).
    A head with nothing behind it blocks nothing (a dead letter of long
    ago): the query leaves it out, so that old ones never crowd out the
    blocked aggregates from the bounded scan.
    """
    name = "admin_blocked_heads_blocking" if include_dead_letters else "admin_blocked_heads"
    rows = await driver.read(name, [BLOCKED_SCAN])
    heads = [_head(row) for row in rows if row[2] is not None]
    return _summary_of(heads, aware(rows[0][0]))


def _head(row: Sequence[Any]) -> _Item:
    """A head from admin_blocked_heads' row: on an event's row when it names no handler.

    Columns: the clock, handler, event id, event type, aggregate id and
    type, the head's created_at and next_attempt_at, retrying, then what
    waits behind it (how many, how many due, since when).
    """
    event_id, handler, retrying = uuid_of(row[2]), row[1], bool(row[8])
    item = BlockedAggregate(
        aggregate_id=uuid_of(row[4]),
        aggregate_type=row[5],
        event_id=event_id,
        event_type=row[3],
        reason="retrying" if retrying else "dead_lettered",
        waiting=row[9],
        retry_at=as_time(row[7]) if retrying else None,
        waiting_since=aware(row[11]),
        waiting_due=row[10],
        handler=handler,
    )
    return (_moment(row[6]), event_id, handler or ""), item


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _moment(value: Any) -> datetime:
    return aware(value) if value is not None else _EARLIEST


def _summary_of(found: Sequence[_Item], now: Any) -> BlockedSummary:
    """Both kinds of head in one order, oldest block first, cut at BLOCKED_SCAN."""
    ordered = sorted(found, key=lambda pair: pair[0])
    items = tuple(item for _, item in ordered[:BLOCKED_SCAN])
    return BlockedSummary(items=items, capped=len(found) >= BLOCKED_SCAN, database_now=now)


async def stats_snapshot(driver: Driver) -> StoreStats:
    """Backlog in events; due and in flight in work items (events on their rows, deliveries)."""
    [row] = await driver.read("admin_stats", [])
    backlog, due, in_flight, oldest, due_deliveries, leased_deliveries, dead, db_now = row
    return StoreStats(
        backlog=backlog,
        due=due + due_deliveries,
        in_flight=in_flight + leased_deliveries,
        oldest_pending_at=as_time(oldest),
        dead_letters=dead,
        database_now=aware(db_now),
    )
