"""PostgresStore: SKIP LOCKED claims, LISTEN/NOTIFY wake-ups, Alembic migrations."""

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, final

import asyncpg
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Insert,
    Integer,
    Interval,
    Select,
    String,
    Text,
    bindparam,
    func,
    literal,
    select,
    text,
    tuple_,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from eventproc.errors import ConfigError, StoreUnavailable
from eventproc.event import Event, NewEvent
from eventproc.store import queries
from eventproc.store.pg_url import ConnectionKind, PgUrl, UrlError
from eventproc.store.protocol import (
    ClaimPolicy,
    Kind,
    Lease,
    SchemaHook,
    WriteBack,
)
from eventproc.store.schema import events
from eventproc.store.sqlstore import (
    ERROR_CHARS,
    SqlStore,
    claim_window,
    event_from_returned,
    translate_error,
    translated,
)
from eventproc.store.types import UTCDateTime

logger = logging.getLogger(__name__)

CHANNEL = "eventproc_events"
LISTENER_CHECK_SECONDS = 15.0
HOT_CONNECTIONS = 4  # claim and completion connections kept open (see PostgresStore._driver)

_INSERT_MANY = text(
    """
    INSERT INTO events (id, event_type, aggregate_id, aggregate_type, payload,
                        metadata, version, created_by, priority)
    SELECT u.id, u.event_type, u.aggregate_id, u.aggregate_type, u.payload::jsonb,
           u.metadata::jsonb, u.version, u.created_by, u.priority
    FROM unnest(:ids, :types, :aggregate_ids, :aggregate_types, :payloads,
                :metadatas, :versions, :created_bys, :priorities)
         AS u(id, event_type, aggregate_id, aggregate_type, payload, metadata,
              version, created_by, priority)
    ON CONFLICT (id) DO NOTHING
    """
).bindparams(
    bindparam("ids", type_=postgresql.ARRAY(postgresql.UUID(as_uuid=True))),
    bindparam("types", type_=postgresql.ARRAY(String)),
    bindparam("aggregate_ids", type_=postgresql.ARRAY(postgresql.UUID(as_uuid=True))),
    bindparam("aggregate_types", type_=postgresql.ARRAY(String)),
    bindparam("payloads", type_=postgresql.ARRAY(Text)),
    bindparam("metadatas", type_=postgresql.ARRAY(Text)),
    bindparam("versions", type_=postgresql.ARRAY(Integer)),
    bindparam("created_bys", type_=postgresql.ARRAY(String)),
    bindparam("priorities", type_=postgresql.ARRAY(Integer)),
)


# -- the hot path, on the raw asyncpg connection ---------------------------------
#
# Measured (bench/README.md): building, compiling and executing the claim and
# completion through SQLAlchemy cost ~100 us of CPU per event at BATCH_SIZE=20,
# half the worker's time. Claims and completions are named queries
# (store/queries/postgresql.sql), sent on raw asyncpg connections (which
# prepare each text once). Each is a single atomic statement, so no explicit
# transaction is needed.

QUERIES = queries.load("postgresql")


@final
class PostgresStore(SqlStore):
    backend = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        worker_name: str = "eventproc",
        pool_size: int = 10,
        async_commit: bool = True,
    ):
        try:
            self.target = PgUrl.parse(url)
        except UrlError as exc:
            raise ConfigError(f"DATABASE_URL: {exc}") from None
        # The claim's best plan depends on its LIMIT and on how much of the
        # table is pending; a cached generic plan (chosen from stale
        # statistics, e.g. with autovacuum off) was measured to cut a drain
        # from ~16,000 to ~1,600 events/s. Planning each time costs ~0.1 ms.
        planning = {"plan_cache_mode": "force_custom_plan"}
        engine = create_async_engine(
            "postgresql+asyncpg://",  # everything else comes from the parsed URL
            pool_size=pool_size,
            max_overflow=pool_size * 2,
            pool_recycle=1800,
            connect_args=self.target.engine_args(planning),
        )
        super().__init__(engine, worker_name=worker_name)
        self._hot_connect_args = self.target.driver_args(
            ConnectionKind.HOT,
            {
                **planning,
                # Claims and plain successes do not wait for the WAL flush: a
                # database crash may forget the last fraction of a second of
                # them, and those events run again, as after a worker crash
                # (delivery is at least once). Transactional handlers, retries
                # and dead letters commit through the pool and wait, which
                # also makes every earlier asynchronous commit durable.
                "synchronous_commit": "off" if async_commit else "on",
            },
        )
        self._listen_connect_args = self.target.driver_args(ConnectionKind.LISTEN)
        self._hot_idle: list[asyncpg.Connection] = []
        self._closed = False
        self.url_for_display = self.target.display

    # -- dialect hooks -------------------------------------------------------

    def now(self) -> ColumnElement[datetime]:
        return func.now(type_=UTCDateTime())

    def later(self, seconds: float) -> ColumnElement[datetime]:
        return func.now(type_=UTCDateTime()) + literal(timedelta(seconds=seconds), Interval())

    def merged_metadata(self, patch: dict[str, Any]) -> ColumnElement[Any]:
        pairs: list[Any] = []
        for key, value in patch.items():
            pairs.append(literal(key, String()))
            pairs.append(_typed(value))
        base = func.coalesce(events.c.metadata, text("'{}'::jsonb"))
        return base.op("||")(func.jsonb_build_object(*pairs))

    def fenced(self, leases: Sequence[Lease]) -> ColumnElement[bool]:
        # One fixed statement whatever the batch size (asyncpg prepares it
        # once), pairing each id with its own claim token. Sorted by id to make
        # concurrent fenced updates of one worker (renewal, completion) lock
        # shared rows in the same order more often; the plan decides the real
        # order, so deadlocks still happen under load and are retried (40P01).
        leases = sorted(leases, key=lambda lease: lease.event_id)
        pairs = select(
            func.unnest(
                literal(
                    [lease.event_id for lease in leases],
                    postgresql.ARRAY(postgresql.UUID(as_uuid=True)),
                )
            ),
            func.unnest(literal([lease.token for lease in leases], postgresql.ARRAY(Text))),
        )
        return tuple_(events.c.id, events.c.locked_by).in_(pairs)

    # -- hot path ----------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _driver(self) -> AsyncIterator[asyncpg.Connection]:
        """A raw asyncpg connection for the claim and completion statements.

        Kept apart from the SQLAlchemy pool: checking a connection out of it
        and back in (greenlets, pool events) cost more worker CPU than the
        statement itself. At most HOT_CONNECTIONS stay open between uses;
        one whose statement failed for any reason but a database error is
        closed instead, so a broken socket is never used twice.
        """
        connection = None
        while self._hot_idle and connection is None:
            connection = self._hot_idle.pop()
            if connection.is_closed():  # the server went away meanwhile
                connection = None
        try:
            if connection is None:
                connection = await asyncpg.connect(**self._hot_connect_args)
            yield connection
        except asyncpg.PostgresError as exc:
            translated_error = translate_error(exc)
            if isinstance(translated_error, StoreUnavailable):
                _discard(connection)
                connection = None
            raise translated_error from exc
        except (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError) as exc:
            # InternalClientError: a connection the server terminated while idle
            # can fail its next statement in a protocol state asyncpg rejects
            # ("cannot switch to state ..."), before the loss is noticed.
            _discard(connection)
            connection = None
            raise StoreUnavailable(f"database connection lost: {exc}") from exc
        except BaseException:
            _discard(connection)  # cancelled mid-statement: its state is unknown
            connection = None
            raise
        finally:
            if connection is not None:
                if self._closed or len(self._hot_idle) >= HOT_CONNECTIONS:
                    _discard(connection)
                else:
                    self._hot_idle.append(connection)

    async def close(self) -> None:
        self._closed = True
        idle, self._hot_idle = self._hot_idle, []
        for connection in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=2)
        await super().close()

    @translated
    async def event_claim_many(
        self, token: str, policy: ClaimPolicy, *, completing: Sequence[WriteBack] = ()
    ) -> list[Event]:
        window = claim_window(policy.limit)
        args: list[Any] = [token, policy.lease_seconds, policy.limit, window]
        if completing:
            args += [*_completion_arrays(completing), self.worker_name]
        sql = QUERIES[
            queries.claim_query(
                ordered=policy.ordered,
                block_on_dead_letters=policy.block_on_dead_letters,
                carrying=bool(completing),
            )
        ]
        async with self._driver() as driver:
            records = await driver.fetch(sql, *args)
        return await self.finish_claim(
            [event_from_returned(record) for record in records], token, policy
        )

    @translated
    async def event_complete_many(
        self, completions: Sequence[WriteBack], *, in_order: bool = False
    ) -> int:
        if not completions:
            return 0
        async with self._driver() as driver:
            status = await driver.execute(
                QUERIES["event_complete"],
                *_completion_arrays(completions),
                self.worker_name,
                in_order,
            )
        return int(status.rsplit(" ", 1)[-1])

    @translated
    async def event_retry_many(self, failures: Sequence[WriteBack]) -> int:
        """One statement for the whole batch (queries/postgresql.sql), waiting for the flush."""
        if not failures:
            return 0
        ordered = sorted(failures, key=lambda failure: failure.lease.event_id)
        args = (
            [failure.lease.event_id for failure in ordered],
            [failure.lease.token for failure in ordered],
            [failure.delay_seconds for failure in ordered],
            [(failure.error or "")[:ERROR_CHARS] for failure in ordered],
            [failure.attempt for failure in ordered],
            [failure.kind is Kind.RETRY for failure in ordered],
        )
        async with self.begin() as conn:
            result = await conn.exec_driver_sql(QUERIES["event_retry"], args)
        return max(result.rowcount, 0)

    @translated
    async def event_dead_letter_many(self, burials: Sequence[WriteBack]) -> int:
        """Close the events and insert their dead letters: one statement for the batch."""
        if not burials:
            return 0
        ordered = sorted(burials, key=lambda burial: burial.lease.event_id)
        args = (
            [burial.lease.event_id for burial in ordered],
            [burial.lease.token for burial in ordered],
            [burial.error for burial in ordered],
            [burial.attempt for burial in ordered],
            [burial.detail for burial in ordered],
            [burial.handler for burial in ordered],
            [burial.fingerprint for burial in ordered],
            self.worker_name,
        )
        async with self.begin() as conn:
            result = await conn.exec_driver_sql(QUERIES["event_dead_letter"], args)
        return max(result.rowcount, 0)

    def insert_ignoring_conflicts(self, table: Any) -> Insert:
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=["id"])

    def lock_skipping_locked(self, statement: Select[Any]) -> Select[Any]:
        return statement.with_for_update(skip_locked=True)

    # -- publishing ------------------------------------------------------------

    async def insert_rows(self, connection: AsyncConnection, new_events: Sequence[NewEvent]) -> int:
        # One statement with one array per column: a fixed text that asyncpg
        # prepares once, whatever the batch size.
        params = {
            "ids": [e.id for e in new_events],
            "types": [e.event_type for e in new_events],
            "aggregate_ids": [e.aggregate_id for e in new_events],
            "aggregate_types": [e.aggregate_type for e in new_events],
            "payloads": [json.dumps(e.payload) for e in new_events],
            "metadatas": [
                None if e.metadata is None else json.dumps(e.metadata) for e in new_events
            ],
            "versions": [e.version for e in new_events],
            "created_bys": [e.created_by for e in new_events],
            "priorities": [e.priority for e in new_events],
        }
        return (await connection.execute(_INSERT_MANY, params)).rowcount

    # -- schema ----------------------------------------------------------------

    @translated
    async def migrate(self, hooks: Sequence[SchemaHook] = ()) -> None:
        """Upgrade to Alembic head, run the packs' schema hooks, build indexes concurrently.

        Publishers keep inserting throughout: see store/migrations/online.py for
        the locks each step takes and what concurrent starters wait on.
        """
        from eventproc.store.migrations.online import upgrade_online

        holder = f"{self.worker_name}:{uuid.uuid4().hex[:8]}"
        await upgrade_online(self.engine, hooks, holder=holder)

    # -- wake-ups ----------------------------------------------------------------

    async def listen(self, on_wake: Callable[[], None]) -> None:
        """Call ``on_wake`` on every NOTIFY until cancelled; reconnect when lost.

        A dedicated connection outside the pool; it is checked every
        ``LISTENER_CHECK_SECONDS`` so that a half-open socket is noticed, and a
        reconnect wakes the processor because notifications may have been
        missed meanwhile.
        """
        delay = 0.5
        while True:
            connection = None
            try:
                connection = await asyncpg.connect(**self._listen_connect_args)
                closed = asyncio.Event()
                connection.add_termination_listener(lambda _conn, ev=closed: ev.set())
                await connection.add_listener(CHANNEL, lambda *_: on_wake())
                logger.debug("Listening on %s", CHANNEL)
                delay = 0.5
                on_wake()  # notifications may have been missed while away
                while True:
                    try:
                        await asyncio.wait_for(closed.wait(), LISTENER_CHECK_SECONDS)
                    except TimeoutError:
                        await asyncio.wait_for(connection.fetchval("SELECT 1"), timeout=10)
                    else:
                        raise ConnectionError("listener connection closed by the server")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure of the listener means: reconnect
                logger.warning(
                    "Listener connection lost (%s); reconnecting in %.1fs",
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                    delay,
                    extra={"action": "listen_reconnect"},
                )
            finally:
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(connection.close(), timeout=2)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _completion_arrays(
    completions: Sequence[WriteBack],
) -> tuple[list[uuid.UUID], list[str], list[str]]:
    """ids, tokens and outcomes, sorted by id (lock order: see fenced())."""
    ordered = sorted(completions, key=lambda completion: completion.lease.event_id)
    return (
        [completion.lease.event_id for completion in ordered],
        [completion.lease.token for completion in ordered],
        [completion.closing.value for completion in ordered if completion.closing],
    )


def _discard(connection: asyncpg.Connection | None) -> None:
    if connection is not None and not connection.is_closed():
        connection.terminate()


def _typed(value: Any) -> Any:
    if isinstance(value, ColumnElement):
        return value
    if isinstance(value, bool):
        return literal(value, Boolean())
    if isinstance(value, int):
        return literal(value, Integer())
    return literal(str(value), Text())
