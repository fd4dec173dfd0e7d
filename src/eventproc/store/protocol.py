"""The store's values (leases, write-backs, policies, summaries) and the engine's view of it.

``Storage`` is what the engine may ask of the store: it depends on this
Protocol, never on SQLAlchemy or a driver. ``eventproc.store.Store`` is the
one implementation, over each backend's Driver (store/driver.py), and passes
the contract suite (tests/store) on both backends.
"""

import enum
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, NamedTuple, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.event import DeadLetter, Event, NewEvent, Outcome
from eventproc.store.queries import Backend

SchemaHook = Callable[[AsyncConnection], Awaitable[None]]


class Lease(NamedTuple):
    """Identifies one claim of one event, or of one delivery: every write-back is fenced on it.

    ``handler`` is set for a delivery's lease (the row in event_deliveries of
    that event and subscription), None for the event's own row.
    """

    event_id: uuid.UUID
    token: str
    handler: str | None = None

    @classmethod
    def of(cls, event: Event) -> "Lease":
        if event.locked_by is None:
            raise ValueError(f"event {event.id} is not claimed")
        if event.delivery:
            return cls(event.id, event.locked_by, event.handler)
        return cls(event.id, event.locked_by)


class Plan(NamedTuple):
    """One delivery to open for a claimed event (``Store.delivery_open``)."""

    lease: Lease  # the event's own lease: the fence, cleared as it moves
    handler: str
    run_now: bool  # leased with the event's token at once, or waits its turn
    spent: int = 0  # attempts spent on the event's row before this claim's
    # At a claim: the claim's attempt on the row is given back (each delivery
    # counts its own); not for a failure on the row moving onto its delivery.
    give_back: bool = True


class FailedAttempt(NamedTuple):
    """A handler call that did not succeed, for the attempt log (``event_attempts``)."""

    event_id: uuid.UUID
    handler: str | None
    attempt: int
    worker: str | None  # the claim's token: worker id and claim number
    finished_at: datetime
    duration_ms: float
    outcome: str  # retried | dead_lettered | rescheduled | store_unavailable
    error: str | None
    detail: str | None  # the traceback


class Kind(enum.StrEnum):
    """What a handler call came to, as the store writes it back."""

    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"  # no handler for the type: closed without running anything
    RETRY = "retry"  # counted failure: back to pending after a backoff
    RESCHEDULED = "rescheduled"  # RetryLater or eventproc's own database trouble: uncounted
    DEAD_LETTERED = "dead_lettered"
    COMMITTED = "committed"  # a transactional handler wrote its own completion


_CLOSING = {Kind.SUCCEEDED: Outcome.SUCCEEDED, Kind.SKIPPED: Outcome.SKIPPED}


class WriteBack(NamedTuple):
    """The one result type: every outcome of a claim, written back fenced on its lease.

    Build it with the class methods; a batch of any mix goes to
    ``Store.event_write_back`` in one statement (one transaction on SQLite).
    ``attempt`` is the attempt that ended (a dead letter's retry_count);
    ``delay_seconds`` applies to RETRY and RESCHEDULED. A NamedTuple, not a
    frozen dataclass: one is made per event, and a frozen dataclass's
    ``__init__`` (a ``object.__setattr__`` per field) cost ~5 us of the
    worker's ~40 us per event (timeit, 8 fields).
    """

    lease: Lease
    kind: Kind
    attempt: int = 0
    delay_seconds: float = 0.0
    error: str | None = None
    detail: str | None = None  # a dead letter's traceback
    handler: str | None = None
    fingerprint: str | None = None

    @classmethod
    def succeeded(cls, lease: Lease, handler: str | None = None) -> "WriteBack":
        return cls(lease, Kind.SUCCEEDED, handler=handler)

    @classmethod
    def skipped(cls, lease: Lease) -> "WriteBack":
        return cls(lease, Kind.SKIPPED)

    @classmethod
    def committed(cls, lease: Lease) -> "WriteBack":
        return cls(lease, Kind.COMMITTED)

    @classmethod
    def retry(
        cls,
        lease: Lease,
        delay_seconds: float,
        error: str,
        attempt: int,
        handler: str | None = None,
    ) -> "WriteBack":
        return cls(lease, Kind.RETRY, attempt, delay_seconds, error, handler=handler)

    @classmethod
    def rescheduled(
        cls,
        lease: Lease,
        delay_seconds: float,
        reason: str,
        attempt: int,
        handler: str | None = None,
    ) -> "WriteBack":
        return cls(lease, Kind.RESCHEDULED, attempt, delay_seconds, reason, handler=handler)

    @classmethod
    def dead_lettered(
        cls,
        lease: Lease,
        error: str,
        attempt: int,
        *,
        detail: str | None = None,
        handler: str | None = None,
        fingerprint: str | None = None,
    ) -> "WriteBack":
        return cls(lease, Kind.DEAD_LETTERED, attempt, 0.0, error, detail, handler, fingerprint)

    @property
    def closing(self) -> Outcome | None:
        """The outcome a success closes its event with (None: not a success to write)."""
        return _CLOSING.get(self.kind)

    @property
    def succeeded_run(self) -> bool:
        """Whether the next event of its run may go on (the event is done, not failed)."""
        return self.kind in (Kind.SUCCEEDED, Kind.SKIPPED, Kind.COMMITTED)

    @property
    def rescheduling(self) -> bool:
        return self.kind in (Kind.RETRY, Kind.RESCHEDULED)

    @property
    def moves_to_delivery(self) -> bool:
        """A failure of a handler on the event's own row: its event moves to a delivery.

        Its retries and dead letter are then that subscription's, and the
        per-(handler, aggregate) gate sees it like any other delivery.
        """
        return (
            self.lease.handler is None
            and self.handler is not None
            and self.kind in (Kind.RETRY, Kind.RESCHEDULED, Kind.DEAD_LETTERED)
        )


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
    # The subscription whose deliveries are held back (a delivery heads the
    # block); None when an event on its own row holds back its whole aggregate.
    handler: str | None = None


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


WakeMode = Literal["listen", "polling", "data_version", "off"]


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class WakeUps:
    """How this process learns of new events now, and why (for /health and a gauge).

    Only a probe that arrived proves LISTEN: a transaction pooler accepts
    LISTEN and then delivers nothing, so until one has, and whenever one
    does not, the mode is ``polling``. ``failing``: wake-ups were meant to
    come by LISTEN and do not (the listener is down, or its probe did not
    arrive); ``missing``: a probe did not arrive and none has since.
    """

    mode: WakeMode = "off"
    reason: str | None = "the processor is not running"
    since: datetime = field(default_factory=_now)
    verified_at: datetime | None = None  # the last probe that arrived
    failing: bool = False
    missing: bool = False

    def set(self, mode: WakeMode, reason: str | None = None) -> None:
        """A mode that needs no proof (LISTEN=false, SQLite's watcher, stopped)."""
        self._move(mode, reason, failing=False)
        self.missing = False

    def verifying(self) -> None:
        """Connected and listening, the probe not back yet (a known miss stays reported)."""
        if not self.missing:
            self._move("polling", "LISTEN connected, its first probe not back yet", failing=False)

    def verified(self) -> bool:
        """A probe arrived; True when it ends a spell of missing notifications."""
        self.verified_at = _now()
        self._move("listen", None, failing=False)
        ended, self.missing = self.missing, False
        return ended

    def unverified(self, reason: str) -> bool:
        """A probe did not arrive; True when it starts a spell of missing notifications."""
        self._move("polling", reason, failing=True)
        started, self.missing = not self.missing, True
        return started

    def lost(self, reason: str) -> None:
        """The listener's connection is down: polling until it is back and proven."""
        self._move("polling", reason, failing=True)

    def _move(self, mode: WakeMode, reason: str | None, *, failing: bool) -> None:
        if mode != self.mode:
            self.since = _now()
        self.mode, self.reason, self.failing = mode, reason, failing


class Storage(Protocol):
    """What the engine may ask of the store (eventproc.store.Store is the one implementation)."""

    backend: Backend  # "postgresql" or "sqlite": names the named queries' file too
    url_for_display: str
    wake_ups: WakeUps  # kept true by listen(), or set by whoever decides not to listen

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
        self, token: str, policy: ClaimPolicy, *, completing: Sequence[WriteBack] = ()
    ) -> list[Event]: ...
    async def event_claim_one(
        self, event_id: uuid.UUID, token: str, policy: ClaimPolicy
    ) -> Event: ...
    async def event_write_back(
        self, batch: Sequence[WriteBack], *, in_order: bool = False
    ) -> int: ...
    async def event_release_many(self, leases: Sequence[Lease]) -> int: ...
    async def attempts_record(self, attempts: Sequence["FailedAttempt"]) -> None: ...
    async def delivery_open(self, plans: Sequence[Plan], lease_seconds: float) -> list[Event]: ...
    async def delivery_claim_many(self, token: str, policy: ClaimPolicy) -> list[Event]: ...
    async def handlers_paused(self) -> frozenset[str]: ...
    async def delivery_replay(self, event_id: uuid.UUID, handler: str) -> bool: ...
    async def delivery_add(self, event_ids: Sequence[uuid.UUID], handler: str) -> int: ...
    async def event_renew_leases(
        self, leases: Sequence[Lease], lease_seconds: float
    ) -> set[uuid.UUID]: ...
    async def event_replay(self, event_ids: Sequence[uuid.UUID]) -> int: ...
    def event_transaction(
        self, lease: Lease, *, in_order: bool = False, handler: str | None = None
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
