"""Rows into eventproc's values: one mapping per shape, for both backends."""

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Row

from eventproc.event import DeadLetter, Event


def aware(value: Any) -> datetime:
    """A timezone-aware datetime from what either backend returns for a time."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def as_uuid(value: Any) -> uuid.UUID | None:
    """A uuid from a native one (PostgreSQL) or its text form (SQLite)."""
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


def uuid_of(value: Any) -> uuid.UUID:
    """A uuid from a column that is never NULL (an id)."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def as_time(value: Any) -> datetime | None:
    return None if value is None else aware(value)


def json_of(text: str | None) -> Any:
    """A JSON column a named query read (text on both backends; NULL is None)."""
    return None if text is None else json.loads(text)


def event_from_returned(
    row: Sequence[Any],
    *,
    to_uuid: Callable[[Any], Any] = as_uuid,
    to_time: Callable[[Any], Any] = as_time,
) -> Event:
    """An Event from a named query's RETURNING row (columns as in ``EVENT_COLUMNS``).

    payload and metadata arrive as JSON text. The converters accept what
    both backends return; see :func:`event_from_native` for a driver whose
    values are already right.
    """
    return _event(
        row,
        to_uuid(row[0]),
        to_uuid(row[2]),
        to_time(row[8]),
        to_time(row[12]),
        to_time(row[14]),
        to_time(row[15]),
    )


def event_from_native(row: Sequence[Any]) -> Event:
    """:func:`event_from_returned` for rows whose uuids and times need no converting (asyncpg)."""
    return _event(row, row[0], row[2], row[8], row[12], row[14], row[15])


def _event(
    row: Sequence[Any],
    event_id: Any,
    aggregate_id: Any,
    created_at: Any,
    next_attempt_at: Any,
    locked_until: Any,
    processed_at: Any,
) -> Event:
    return Event(
        id=event_id,
        event_type=row[1],
        aggregate_id=aggregate_id,
        aggregate_type=row[3],
        payload=json.loads(row[4]),
        metadata=(json.loads(row[5]) if row[5] is not None else None) or {},
        processed=bool(row[6]),
        version=row[7] if row[7] is not None else 1,
        created_at=created_at,
        created_by=row[9],
        priority=row[10],
        attempts=row[11],
        next_attempt_at=next_attempt_at,
        locked_by=row[13],
        locked_until=locked_until,
        processed_at=processed_at,
        outcome=row[16],
    )


def row_to_event(row: Row[Any]) -> Event:
    """An Event from a Core row of ``events``; a list reads no payload (``{}``)."""
    values = row._mapping
    # Not .get(): a RowMapping raises and catches a KeyError for a missing key.
    payload = values["payload"] if "payload" in values else {}  # noqa: SIM401
    return event_of(values, payload, values["metadata"])


def listed_event(record: Mapping[str, Any]) -> Event:
    """An Event from an asyncpg record of a list's columns (no payload: ``{}``)."""
    metadata = record["metadata"]
    if isinstance(metadata, str):  # jsonb as text, where no codec decodes it
        metadata = json.loads(metadata)
    return event_of(record, {}, metadata)


def event_of(values: Mapping[Any, Any], payload: Any, metadata: Any) -> Event:
    """An Event from the columns of ``events`` by name (payload and metadata decoded)."""
    return Event(
        id=values["id"],
        event_type=values["event_type"],
        payload=payload,
        aggregate_id=values["aggregate_id"],
        aggregate_type=values["aggregate_type"],
        metadata=metadata or {},
        processed=bool(values["processed"]),
        version=values["version"] if values["version"] is not None else 1,
        created_at=values["created_at"],
        created_by=values["created_by"],
        priority=values["priority"],
        attempts=values["attempts"],
        next_attempt_at=values["next_attempt_at"],
        locked_by=values["locked_by"],
        locked_until=values["locked_until"],
        processed_at=values["processed_at"],
        outcome=values["outcome"],
    )


def row_to_dead_letter(row: Row[Any]) -> DeadLetter:
    return DeadLetter(**dict(row._mapping))


def sorted_for_handling(claimed: list[Event]) -> list[Event]:
    """Claim order: priority first, then oldest (runs are grouped later)."""
    return sorted(claimed, key=lambda e: (-e.priority, e.created_at or datetime.min, e.id))


def claimed_events(
    event: Callable[[Sequence[Any]], Event], rows: Sequence[Sequence[Any]], *, ordered: bool
) -> list[Event]:
    """A claim's rows as events; an unordered claim's have no 18th column (nothing held)."""
    if ordered:
        return [with_blocked(event(row), row) for row in rows]
    return [event(row) for row in rows]


def with_blocked(event: Event, row: Sequence[Any]) -> Event:
    """An ordered claim's event, with its 18th column: the handlers it must wait for.

    PostgreSQL returns an array; SQLite a JSON array text.
    """
    if len(row) > 17 and row[17]:
        value = row[17]
        handlers = json.loads(value) if isinstance(value, str) else value
        if handlers:
            object.__setattr__(event, "blocked", frozenset(handlers))
    return event


def as_delivery(event: Event, row: Sequence[Any]) -> Event:
    """A delivery claim's row: the event, leased as the delivery of the handler in column 18."""
    object.__setattr__(event, "handler", row[17])
    object.__setattr__(event, "delivery", True)
    return event
