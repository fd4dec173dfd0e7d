"""Store: every store operation, written once, over a backend's Driver.

Each lifecycle operation names its query (store/queries/<backend>.sql),
builds its arguments (args.py) and reads the rows; the driver only runs
them. Nothing above ``eventproc.store`` sees a driver's exception.
"""

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import final

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from eventproc.errors import LeaseLost, StoreError
from eventproc.event import DeadLetter, Event, NewEvent
from eventproc.store import args, deliveries, queries, reads, runs, summaries, write_backs
from eventproc.store.admin import StoreAdmin
from eventproc.store.attempt_log import record as record_attempts
from eventproc.store.driver import Driver
from eventproc.store.errors import idempotent, translated, translating
from eventproc.store.protocol import (
    BlockedAggregate,
    BlockedSummary,
    ClaimPolicy,
    EventFilter,
    FailedAttempt,
    Kind,
    Lease,
    Plan,
    SchemaHook,
    StoreStats,
    WakeUps,
    WriteBack,
)
from eventproc.store.rows import claimed_events, sorted_for_handling, uuid_of, with_blocked


@final
class Store:
    def __init__(self, driver: Driver, *, worker_name: str = "eventproc") -> None:
        self.driver = driver
        self.backend = driver.backend  # "postgresql" or "sqlite": names the queries' file too
        self.url_for_display = driver.url_for_display
        self.worker_name = worker_name
        self._wakers: list[Callable[[], None]] = []
        self._refusals = write_backs.Refusals()
        self.wake_ups = WakeUps()
        self.admin = StoreAdmin(driver, self._wake_local)  # the admin API's reads and mutations

    @property
    def engine(self) -> AsyncEngine:
        """SQLAlchemy, for packs' own tables and tests: writes through it wait their turn."""
        return self.driver.engine

    @property
    def reader(self) -> AsyncEngine:
        return self.driver.reader

    def begin(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return self.driver.begin()

    # -- lifecycle of the store itself ------------------------------------------

    async def open(self) -> None:
        await self.driver.open()
        await self.ping()

    async def close(self) -> None:
        await self.driver.close()

    @translated
    async def migrate(self, hooks: Sequence[SchemaHook] = ()) -> None:
        """Create or upgrade eventproc's schema, then run the packs' hooks."""
        await self.driver.migrate(hooks)

    @idempotent
    async def ping(self) -> datetime:
        return await reads.now(self.driver)

    async def listen(self, on_wake: Callable[[], None]) -> None:
        """Wake on other processes' commits until cancelled, keeping ``wake_ups`` true."""
        await self.driver.listen(on_wake, self.wake_ups)

    def add_local_waker(self, waker: Callable[[], None]) -> None:
        """Called after this process commits new or replayed events."""
        self._wakers.append(waker)

    def _wake_local(self) -> None:
        for waker in self._wakers:
            waker()

    # -- publishing and reading ------------------------------------------------------

    async def event_insert_many(
        self, new_events: Sequence[NewEvent], connection: AsyncConnection | None = None
    ) -> int:
        """Insert events, ignoring known ids; how many were new.

        With ``connection`` they join that transaction (a transactional
        handler's follow-ups); otherwise they commit and wake this process.
        """
        if not new_events:
            return 0
        if connection is not None:
            return await self._insert_in(connection, new_events)
        inserted = await self._insert_committed(new_events)
        self._wake_local()
        return inserted

    @translated
    async def _insert_in(self, connection: AsyncConnection, new_events: Sequence[NewEvent]) -> int:
        rows = await self.driver.run(
            connection, "event_insert", args.insert(new_events, json.dumps)
        )
        return len(rows)

    @idempotent
    async def _insert_committed(self, new_events: Sequence[NewEvent]) -> int:
        async with self.driver.begin() as conn:
            return await self._insert_in(conn, new_events)

    @idempotent
    async def event_get(self, event_id: uuid.UUID) -> Event | None:
        return await reads.event_get(self.driver, event_id)

    @idempotent
    async def event_list(self, query: EventFilter) -> list[Event]:
        return await reads.event_list(self.driver, query)

    # -- claiming ----------------------------------------------------------------------

    @translated
    async def event_claim_many(
        self, token: str, policy: ClaimPolicy, *, completing: Sequence[WriteBack] = ()
    ) -> list[Event]:
        """Claim up to ``policy.limit`` events, ordered for handling.

        One named statement picks (in a CTE, so it is evaluated once) and
        leases the events and counts the attempt, so an event whose workers
        keep dying still spends its budget. Ordered claims test only the first
        ``args.claim_window`` available events against the aggregate gate: a
        burst of thousands on one aggregate costs a bounded scan per claim,
        and events further back wait for the window to move. Then runs.py
        (ordered mode): stale runs revoked, the spare room filled with the
        events right behind each claimed head, to be handled in order (the
        caller gives back a run's tail when one of it does not succeed).

        ``completing``: successes written first, atomically with the claim
        (in order when ``policy.ordered``), so that a busy worker spends one
        statement and one commit per batch instead of two. An event they
        complete is not claimed again; one they unblock may be. If the call
        raises, neither happened.
        """
        name = queries.claim_query(
            ordered=policy.ordered,
            block_on_dead_letters=policy.block_on_dead_letters,
            carrying=bool(completing),
        )
        rows = await self.driver.fetch(
            name, args.claim(token, policy, self.worker_name, completing)
        )
        claimed = claimed_events(self.driver.event, rows, ordered=policy.ordered)
        return await self._finish_claim(claimed, token, policy)

    async def _finish_claim(
        self, claimed: list[Event], token: str, policy: ClaimPolicy
    ) -> list[Event]:
        """Extend runs (runs.py) in a transaction of its own, then sort.

        Safe after the claim committed, because the heads we hold gate every
        later event of their aggregates. If that transaction fails, the claim
        is given back (its attempts too) rather than left leased, unhandled,
        until it expires.
        """
        heads = runs.heads_to_extend(claimed, policy)
        if heads:
            try:
                async with self.driver.begin() as conn:
                    await runs.extend_runs(self.driver, conn, claimed, heads, token, policy)
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.event_release_many([Lease.of(event) for event in claimed])
                raise
        return sorted_for_handling(claimed)

    @translated
    async def event_claim_one(self, event_id: uuid.UUID, token: str, policy: ClaimPolicy) -> Event:
        """Claim this event now (a manual trigger), even if its retry is not due yet.

        What cannot be bypassed: a lease another worker holds, and (ordered)
        an earlier event of its aggregate that is still pending. The Conflict
        raised says which, naming the event in the way.
        """
        name = queries.claim_one_query(
            ordered=policy.ordered, block_on_dead_letters=policy.block_on_dead_letters
        )
        async with self.driver.begin() as conn:
            rows = await self.driver.run(conn, name, [event_id, token, policy.lease_seconds])
            if rows:
                return with_blocked(self.driver.event(rows[0]), rows[0])
            raise await reads.why_not_claimed(self.driver, conn, event_id, policy)

    # -- write-backs (all fenced on the claim's token) ------------------------------

    @translated
    async def event_write_back(self, batch: Sequence[WriteBack], *, in_order: bool = False) -> int:
        """Write a batch of results of any mix back, fenced on each lease.

        Results of deliveries go first (one statement), then those of
        events handled on their own rows (one statement; SQLite: one
        transaction each); see write_backs.py. A handler's failure on an
        event's row first moves the event onto that handler's delivery.
        ``in_order`` (ORDERING=aggregate): nothing is completed while an
        earlier event of its aggregate, or an earlier delivery of its handler
        there, is pending and not written by this same call (the queries).
        Successes may commit without waiting for the disk (ASYNC_COMMIT); a
        batch holding a failure waits, which also makes every earlier fast
        commit durable. Returns how many events were written.
        """
        written = [item for item in batch if item.kind is not Kind.COMMITTED]
        if not written:
            return 0
        return await write_backs.write(
            self.driver, written, self.worker_name, in_order=in_order, refusals=self._refusals
        )

    @asynccontextmanager
    async def event_transaction(
        self, lease: Lease, *, in_order: bool = False, handler: str | None = None
    ) -> AsyncIterator[AsyncConnection]:
        """A transaction that holds the event's (or delivery's) row and completes it on exit.

        The fence is taken first, so nobody claims it while the handler
        runs; a lease already lost raises LeaseLost before the handler
        starts. An exception rolls back all the handler wrote; only database
        errors are translated (StoreError), the handler's own pass as raised.
        ``in_order``: a completion refused (an earlier event of the aggregate
        pending under another lease) is LeaseLost too, and rolls back.
        ``handler``: kept on an event's row as metadata.handled_by.
        """
        raised: BaseException | None = None
        try:
            async with translating(), self.driver.begin() as conn:
                if not await self._hold(conn, lease):
                    raise LeaseLost(f"lease on {lease.event_id} was lost")
                try:
                    yield conn
                except (sa_exc.SQLAlchemyError, StoreError, GeneratorExit):
                    raise
                except BaseException as exc:
                    raised = exc
                    raise _HandlerRaised from exc
                if not await self._complete_in(conn, lease, handler, in_order=in_order):
                    raise LeaseLost(
                        f"{lease.event_id} could not complete: its lease was lost, or an "
                        "earlier event of its aggregate is pending; its writes are rolled back"
                    )
        except _HandlerRaised:
            assert raised is not None
            raise raised from None

    async def _hold(self, conn: AsyncConnection, lease: Lease) -> bool:
        if lease.handler is not None:
            return await deliveries.hold(self.driver, conn, lease)
        return bool(await self.driver.run(conn, "event_hold", [lease.event_id, lease.token]))

    async def _complete_in(
        self, conn: AsyncConnection, lease: Lease, handler: str | None, *, in_order: bool
    ) -> bool:
        if lease.handler is not None:
            return await deliveries.complete_in(
                self.driver, conn, lease, self.worker_name, in_order=in_order
            )
        done = WriteBack.succeeded(lease, handler)
        written = args.write_back([done], self.worker_name, in_order=in_order)
        return bool(await self.driver.run(conn, "event_write_back", written))

    @translated
    async def event_release_many(self, leases: Sequence[Lease]) -> int:
        """Give claims back unfinished (shutdown, a run's tail): the attempt is not spent."""
        on_rows = [lease for lease in leases if lease.handler is None]
        released = await deliveries.release(
            self.driver, [lease for lease in leases if lease.handler is not None]
        )
        if on_rows:
            released += len(await self.driver.fetch("event_release", args.leases(on_rows)))
        if released:
            self._wake_local()
        return released

    @translated
    async def event_renew_leases(
        self, leases: Sequence[Lease], lease_seconds: float
    ) -> set[uuid.UUID]:
        """Renew leases of both kinds; the event ids whose lease is still ours."""
        on_rows = [lease for lease in leases if lease.handler is None]
        renewed = await deliveries.renew(
            self.driver, [lease for lease in leases if lease.handler is not None], lease_seconds
        )
        if on_rows:
            rows = await self.driver.fetch("event_renew", [*args.leases(on_rows), lease_seconds])
            renewed |= {uuid_of(row[0]) for row in rows}
        return renewed

    # -- deliveries ---------------------------------------------------------------------

    @translated
    async def delivery_open(self, plans: Sequence[Plan], lease_seconds: float) -> list[Event]:
        """Move claimed events onto deliveries (fenced on, then clearing, each event's lease).

        Those to run now come back leased with the same token; the others
        wait for the delivery claim.
        """
        return await deliveries.open_plans(self.driver, plans, lease_seconds)

    @translated
    async def delivery_claim_many(self, token: str, policy: ClaimPolicy) -> list[Event]:
        """Claim due deliveries (retries, the ones that waited, expired leases)."""
        return sorted_for_handling(await deliveries.claim(self.driver, token, policy))

    @idempotent
    async def handlers_paused(self) -> frozenset[str]:
        """The subscriptions paused through the admin API (the claims skip their deliveries)."""
        return await self.admin.handlers.paused_names()

    @translated
    async def delivery_replay(self, event_id: uuid.UUID, handler: str) -> bool:
        """Run one subscription of a finished (or routed) event again, and nothing else."""
        replayed = await deliveries.replay(self.driver, event_id, handler)
        if replayed:
            self._wake_local()
        return replayed

    @translated
    async def delivery_add(self, event_ids: Sequence[uuid.UUID], handler: str) -> int:
        """Give events a delivery of ``handler`` where they have none (a backfill)."""
        added = await deliveries.add(self.driver, event_ids, handler)
        if added:
            self._wake_local()
        return added

    @translated
    async def event_replay(self, event_ids: Sequence[uuid.UUID]) -> int:
        """Make processed events pending again, every delivery with a fresh budget.

        The replay trigger does the rest, for this call and the seed's raw
        ``UPDATE events SET processed = false`` alike (see its SQL file).
        """
        if not event_ids:
            return 0
        rows = await self.driver.fetch("event_replay", [list(event_ids)], durable=True)
        if rows:
            self._wake_local()
        return len(rows)

    @translated
    async def attempts_record(self, attempts: Sequence[FailedAttempt]) -> None:
        """Failed handler calls into the attempt log (``event_attempts``), one statement."""
        await record_attempts(self.driver, attempts)

    # -- dead letters and summaries -----------------------------------------------------

    @idempotent
    async def dead_letter_list(self, limit: int = 100) -> list[DeadLetter]:
        return await reads.dead_letter_list(self.driver, limit)

    @translated
    async def dead_letter_delete(self, ids: Sequence[uuid.UUID]) -> int:
        """Discard dead letters; their events are marked ``discarded`` (still replayable)."""
        if not ids:
            return 0
        return len(await self.driver.fetch("dead_letter_discard", [list(ids)], durable=True))

    @idempotent
    async def aggregates_blocked(
        self, limit: int = 20, *, include_dead_letters: bool = True
    ) -> list[BlockedAggregate]:
        """Aggregates whose later events wait behind a retrying (or dead-lettered) one."""
        summary = await self.blocked_summary(include_dead_letters=include_dead_letters)
        return list(summary.items[:limit])

    @idempotent
    async def blocked_summary(self, *, include_dead_letters: bool = True) -> BlockedSummary:
        return await summaries.blocked_summary(
            self.driver, include_dead_letters=include_dead_letters
        )

    @idempotent
    async def stats_snapshot(self) -> StoreStats:
        return await summaries.stats_snapshot(self.driver)


class _HandlerRaised(Exception):
    """Carries a handler's own exception past the translation of database errors."""
