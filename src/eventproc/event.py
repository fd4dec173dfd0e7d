"""The values that travel between the store, the processor and handlers."""

import enum
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

_uuid7_lock = threading.Lock()
_uuid7_last = [0, 0]  # [unix ms, counter within that ms]


def uuid7() -> uuid.UUID:
    """A time-ordered uuid (RFC 9562 v7), monotonic within this process.

    Events published in one statement share ``created_at``; ordering them by
    ``(created_at, id)`` then keeps the order they were published in.
    """
    with _uuid7_lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _uuid7_last[0]:
            now_ms = _uuid7_last[0]
            _uuid7_last[1] += 1
            if _uuid7_last[1] >= 1 << 12:
                now_ms += 1
                _uuid7_last[1] = 0
        else:
            _uuid7_last[1] = 0
        _uuid7_last[0] = now_ms
        counter = _uuid7_last[1]
    tail = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    value = (now_ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | tail
    return uuid.UUID(int=value)


class Outcome(enum.StrEnum):
    """How an event left the pending state (``events.outcome``)."""

    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    DEAD_LETTERED = "dead_lettered"
    DISCARDED = "discarded"  # its dead letter was deleted by an operator
    PARTIAL = "partial"  # some deliveries succeeded, some were dead-lettered


@dataclass(frozen=True, slots=True)
class Event:
    """One row of the ``events`` table, as a claim or a lookup returned it."""

    id: uuid.UUID
    event_type: str
    payload: dict[str, Any]
    aggregate_id: uuid.UUID | None = None
    aggregate_type: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    processed: bool = False
    version: int = 1
    created_at: datetime | None = None
    created_by: str | None = None
    priority: int = 0
    attempts: int = 0
    next_attempt_at: datetime | None = None
    locked_by: str | None = None
    locked_until: datetime | None = None
    processed_at: datetime | None = None
    outcome: str | None = None
    # Routing, set by the store and the producer, not by the row:
    # ``handler``: the subscription this claim runs; ``delivery``: the lease
    # (attempts, locked_by, ...) is that subscription's delivery row, not the
    # event's; ``blocked``: subscriptions with an earlier delivery of this
    # aggregate still pending (ORDERING=aggregate), which must not run it yet.
    handler: str | None = None
    delivery: bool = False
    blocked: frozenset[str] = frozenset()

    def routed_to(self, handler: str | None) -> "Event":
        """This claim, to be run by ``handler`` (set once, by the producer, after routing)."""
        object.__setattr__(self, "handler", handler)
        return self


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to publish. Give ``id`` to make publishing idempotent."""

    event_type: str
    payload: dict[str, Any]
    aggregate_id: uuid.UUID | None = None
    aggregate_type: str | None = None
    metadata: dict[str, Any] | None = None
    created_by: str | None = None
    priority: int = 0
    version: int = 1
    id: uuid.UUID = field(default_factory=uuid7)

    def __post_init__(self) -> None:
        if not self.event_type or len(self.event_type) > 100:
            raise ValueError("event_type must be 1 to 100 characters")
        if not isinstance(self.payload, dict):
            raise ValueError("payload must be a JSON object")
        if not -32768 <= self.priority <= 32767:
            raise ValueError("priority must fit a smallint (-32768..32767)")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One row of ``event_dead_letters``."""

    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    payload: dict[str, Any]
    error_message: str
    retry_count: int
    original_created_at: datetime | None
    created_at: datetime | None
    error_detail: str | None = None
    handler: str | None = None
    replayed_at: datetime | None = None
    error_fingerprint: str | None = None
