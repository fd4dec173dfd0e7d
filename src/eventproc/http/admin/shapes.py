"""Response shapes the admin routers share: an event, its deliveries, its attempts, dead letters.

Open models (extra keys allowed) so that a key added later breaks no client.
"""

import uuid
from datetime import UTC, datetime
from typing import Any

from eventproc.admin.redaction import redact
from eventproc.admin.roles import Principal, Role
from eventproc.event import DeadLetter
from eventproc.http.schemas import OpenModel
from eventproc.store.admin.events import AttemptRow, DeliveryRow, EventRow


class Delivery(OpenModel):
    handler: str
    status: str  # pending | done
    state: str  # waiting | due | running | retrying | succeeded | dead_lettered | discarded
    outcome: str | None
    attempts: int
    next_attempt_at: datetime | None
    locked_by: str | None
    locked_until: datetime | None
    last_error: str | None
    created_at: datetime | None
    finished_at: datetime | None


class Attempt(OpenModel):
    handler: str | None
    attempt: int
    worker: str | None
    finished_at: datetime
    duration_ms: float | None
    outcome: str
    error: str | None
    traceback: str | None


class EventItem(OpenModel):
    id: uuid.UUID
    event_type: str
    aggregate_id: uuid.UUID | None
    aggregate_type: str | None
    created_at: datetime | None
    created_by: str | None
    priority: int
    state: str  # pending | running | retrying | delivering | done
    processed: bool
    outcome: str | None
    processed_at: datetime | None
    attempts: int
    next_attempt_at: datetime | None
    locked_by: str | None
    locked_until: datetime | None
    last_error: str | None
    routed_at: datetime | None
    deliveries: list[Delivery]


class DeadLetterItem(OpenModel):
    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    handler: str | None
    error_message: str
    error_fingerprint: str | None
    retry_count: int
    original_created_at: datetime | None
    created_at: datetime | None
    replayed_at: datetime | None


_FAR = datetime(9999, 1, 1, tzinfo=UTC)


def event_item(row: EventRow, now: datetime) -> EventItem:
    event = row.event
    return EventItem(
        id=event.id,
        event_type=event.event_type,
        aggregate_id=event.aggregate_id,
        aggregate_type=event.aggregate_type,
        created_at=event.created_at,
        created_by=event.created_by,
        priority=event.priority,
        state=_event_state(row, now),
        processed=event.processed,
        outcome=event.outcome,
        processed_at=event.processed_at,
        attempts=event.attempts,
        next_attempt_at=_shown_time(event.next_attempt_at),
        locked_by=event.locked_by,
        locked_until=event.locked_until,
        last_error=_text(event.metadata.get("last_error")),
        routed_at=row.routed_at,
        deliveries=[delivery(d, now) for d in row.deliveries],
    )


def _event_state(row: EventRow, now: datetime) -> str:
    event = row.event
    if event.processed:
        return "done"
    if row.routed_at is not None:
        return "delivering"
    if event.locked_until is not None and event.locked_until >= now:
        return "running"
    if event.next_attempt_at is not None and event.next_attempt_at > now:
        return "retrying"
    return "pending"


def delivery(row: DeliveryRow, now: datetime) -> Delivery:
    return Delivery(
        handler=row.handler,
        status=row.status,
        state=_delivery_state(row, now),
        outcome=row.outcome,
        attempts=row.attempts,
        next_attempt_at=_shown_time(row.next_attempt_at),
        locked_by=row.locked_by,
        locked_until=row.locked_until,
        last_error=row.last_error,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


def _delivery_state(row: DeliveryRow, now: datetime) -> str:
    if row.status == "done":
        return row.outcome or "done"
    if row.locked_until is not None and row.locked_until >= now:
        return "running"
    if row.next_attempt_at is not None and row.next_attempt_at > now:
        return "retrying" if row.attempts else "waiting"
    return "due"


def attempt(row: AttemptRow) -> Attempt:
    return Attempt(
        handler=row.handler,
        attempt=row.attempt,
        worker=row.worker,
        finished_at=row.finished_at,
        duration_ms=row.duration_ms,
        outcome=row.outcome,
        error=row.error,
        traceback=row.detail,
    )


def dead_letter_item(letter: DeadLetter) -> DeadLetterItem:
    return DeadLetterItem(
        id=letter.id,
        event_id=letter.event_id,
        event_type=letter.event_type,
        handler=letter.handler,
        error_message=letter.error_message,
        error_fingerprint=letter.error_fingerprint,
        retry_count=letter.retry_count,
        original_created_at=letter.original_created_at,
        created_at=letter.created_at,
        replayed_at=letter.replayed_at,
    )


def shown(root: str, document: Any, who: Principal, paths: tuple[tuple[str, ...], ...]) -> Any:
    """A payload or metadata as ``who`` may see it: viewers get REDACT_PATHS hidden."""
    if who.role.allows(Role.OPERATOR):
        return document
    return redact(root, document, paths)


def _shown_time(value: datetime | None) -> datetime | None:
    """A routed event's never-claimable 9999-12-31 is an internal marker: shown as none."""
    return None if value is not None and value >= _FAR else value


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
