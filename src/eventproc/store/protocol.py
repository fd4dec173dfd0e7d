"""The storage seam: what the processor, admin and HTTP layers may ask of a store.

Every backend implements this Protocol and passes the same contract suite
(tests/store). Differences between backends are capability flags, never a
check of the URL in the caller.
"""

import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.event import DeadLetter, Event, NewEvent, Outcome
from eventproc.store.queries import Backend

SchemaHook = Callable[[AsyncConnection], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Lease:
    """Identifies one claim of one event: every write-back is fenced on it."""

    event_id: uuid.UUID
    token: str

    @classmethod
    def of(cls, event: Event) -> "Lease":
        if event.locked_by is None:
            raise ValueError(f"event {event.id} is not claimed")
        return cls(event.id, event.locked_by)


@dataclass(frozen=True, slots=True)
class Completion:
    lease: Lease
    outcome: Outcome = Outcome.SUCCEEDED


@dataclass(frozen=True, slots=True)
class Failure:
    """Reschedule after ``delay_seconds``.

    ``counted`` failures record ``retry_count``/``last_error``; an uncounted
    one (``RetryLater``) gives its attempt back.
    """

    lease: Lease
    delay_seconds: float
    error: str
    attempt: int
    counted: bool = True


@dataclass(frozen=True, slots=True)
class Burial:
    """Dead-letter the event: insert the dead letter and close the event, atomically."""

    lease: Lease
    event: Event
    error_message: str
    retry_count: int
    error_detail: str | None = None
    handler: str | None = None
    error_fingerprint: str | None = None


@dataclass(frozen=True, slots=True)
class StoreStats:
    backlog: int
    due: int
    in_flight: int
    oldest_pending_at: datetime | None
    dead_letters: int
    database_now: datetime


@dataclass(frozen=True, slots=True)
class EventFilter:
    event_type: str | None = None
    processed: bool | None = None
    outcome: str | None = None
    aggregate_id: uuid.UUID | None = None
    ids: Sequence[uuid.UUID] | None = None
    limit: int = 100
    before: datetime | None = None


@dataclass(frozen=True, slots=True)
class ClaimPolicy:
    lease_seconds: float
    ordered: bool = True
    limit: int = 20
    # With ``ordered``: a dead-lettered event keeps holding back the later
    # events of its aggregate (AGGREGATE_FAILURE=block) until it is replayed
    # or its dead letter discarded; False lets the aggregate move on (park).
    block_on_dead_letters: bool = True
    # With ``ordered``: also claim the events right behind each claimed
    # aggregate head (a run, to be handled in order) when the batch has room.
    follow: bool = False


@dataclass(frozen=True, slots=True)
class BlockedAggregate:
    """An aggregate whose next events wait behind a failing one."""

    aggregate_id: uuid.UUID
    aggregate_type: str | None
    event_id: uuid.UUID
    event_type: str
    reason: str  # "retrying" or "dead_lettered"
    waiting: int
    retry_at: datetime | None
    waiting_since: datetime | None = None  # created_at of the oldest event held back
    waiting_due: int = 0  # of ``waiting``, those that would be due but for the block


@dataclass(frozen=True, slots=True)
class BlockedSummary:
    """Every blocked aggregate a summary found, oldest block first."""

    items: tuple[BlockedAggregate, ...]
    capped: bool  # the scan stopped at its bound: there may be more
    database_now: datetime

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def waiting_due(self) -> int:
        return sum(item.waiting_due for item in self.items)

    def oldest_wait_seconds(self) -> float:
        """How long the longest-held event has waited (0 when nothing is blocked)."""
        since = [item.waiting_since for item in self.items if item.waiting_since is not None]
        if not since:
            return 0.0
        return max((self.database_now - min(since)).total_seconds(), 0.0)


class Store(Protocol):
    backend: Backend  # "postgresql" or "sqlite": names the named queries' file too
    url_for_display: str

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def migrate(self, hooks: Sequence[SchemaHook] = ()) -> None: ...
    async def ping(self) -> datetime: ...

    async def event_insert_many(
        self, events: Sequence[NewEvent], connection: AsyncConnection | None = None
    ) -> int: ...
    async def event_get(self, event_id: uuid.UUID) -> Event | None: ...
    async def event_list(self, query: EventFilter) -> list[Event]: ...
    async def event_claim_many(
        self, token: str, policy: ClaimPolicy, *, completing: Sequence[Completion] = ()
    ) -> list[Event]: ...
    async def event_claim_one(
        self, event_id: uuid.UUID, token: str, policy: ClaimPolicy
    ) -> Event: ...
    async def event_complete_many(
        self, completions: Sequence[Completion], *, in_order: bool = False
    ) -> int: ...
    async def event_retry_many(self, failures: Sequence[Failure]) -> int: ...
    async def event_dead_letter_many(self, burials: Sequence[Burial]) -> int: ...
    async def event_release_many(self, leases: Sequence[Lease]) -> int: ...
    async def event_renew_leases(
        self, leases: Sequence[Lease], lease_seconds: float
    ) -> set[uuid.UUID]: ...
    async def event_replay(self, event_ids: Sequence[uuid.UUID]) -> int: ...
    def event_transaction(
        self, completion: Completion
    ) -> AbstractAsyncContextManager[AsyncConnection]: ...

    async def dead_letter_list(self, limit: int = 100) -> list[DeadLetter]: ...
    async def dead_letter_delete(self, ids: Sequence[uuid.UUID]) -> int: ...
    async def aggregates_blocked(
        self, limit: int = 20, *, include_dead_letters: bool = True
    ) -> list[BlockedAggregate]: ...
    async def blocked_summary(self, *, include_dead_letters: bool = True) -> BlockedSummary: ...
    async def stats_snapshot(self) -> StoreStats: ...
    async def listen(self, on_wake: Callable[[], None]) -> None: ...
    def add_local_waker(self, waker: Callable[[], None]) -> None: ...
