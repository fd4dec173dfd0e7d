"""PostgresDriver: named queries on raw asyncpg connections, SKIP LOCKED claims.

Measured (bench/README.md): building, compiling and executing the claim and
completion through SQLAlchemy cost ~100 us of CPU per event at
BATCH_SIZE=20, half the worker's time. So the hot statements (claims,
write-backs, renewals) go to raw asyncpg connections, which prepare each
named query once; each is a single atomic statement, so no explicit
transaction is needed. Everything else runs through SQLAlchemy's pool.
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, final

import asyncpg
from sqlalchemy import ColumnElement, event, func
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from eventproc.errors import ConfigError, StoreError, StoreUnavailable
from eventproc.event import Event
from eventproc.store import queries
from eventproc.store.driver import Row
from eventproc.store.errors import UNAVAILABLE, first_line, translate_error
from eventproc.store.postgres.footprint import POOL_TIMEOUT_SECONDS, Footprint
from eventproc.store.postgres.listen import listen
from eventproc.store.postgres.transport import SET_SESSION, connect, session_arguments
from eventproc.store.postgres.url import ConnectionKind, PgUrl, Pooler, UrlError
from eventproc.store.protocol import SchemaHook, WakeUps
from eventproc.store.rows import event_from_native
from eventproc.store.types import UTCDateTime

QUERIES = queries.load("postgresql")
# How a connection that is gone shows in asyncpg (see _hot_connection).
_CONNECTION_LOST = (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)
DEFAULT_POOL_SIZE = 20  # DATABASE_POOL_SIZE's default: 1 LISTEN, 4 hot, 15 pooled


@final
class PostgresDriver:
    backend: queries.Backend = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        worker_name: str,
        pool_size: int = DEFAULT_POOL_SIZE,
        listen: bool = True,
        async_commit: bool = True,
        pooler: Pooler | None = None,
    ) -> None:
        try:
            self.target = PgUrl.parse(url).behind(pooler)
        except UrlError as exc:
            raise ConfigError(f"DATABASE_URL: {exc}") from None
        self.worker_name = worker_name
        self.footprint = Footprint.of(pool_size, listen=listen)
        # The claim's best plan depends on its LIMIT and on how much of the
        # table is pending; a cached generic plan (chosen from stale
        # statistics, e.g. with autovacuum off) was measured to cut a drain
        # from ~16,000 to ~1,600 events/s. Planning each time costs ~0.1 ms.
        planning = {"plan_cache_mode": "force_custom_plan"}
        pool_connect_args = self.target.engine_args(planning)
        self.engine = create_async_engine(
            "postgresql+asyncpg://",  # everything else comes from the parsed URL
            pool_size=self.footprint.pooled,
            max_overflow=0,  # the cap is the cap: callers past it wait (see footprint.py)
            pool_timeout=POOL_TIMEOUT_SECONDS,
            pool_recycle=1800,
            connect_args=pool_connect_args,
        )
        self._set_up_pool_sessions(self.target.session_settings(planning))
        # Reads run outside a transaction: under READ COMMITTED each statement
        # has its own snapshot either way, and a BEGIN and a ROLLBACK around
        # every admin read were two round trips of the worker's own CPU.
        self.reader = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.read_transaction = self.engine
        # Claims and plain successes do not wait for the WAL flush: a
        # database crash may forget the last fraction of a second of them,
        # and those events run again, as after a worker crash (delivery is at
        # least once). Write-backs holding a retry or a dead letter, replays,
        # discards and transactional handlers wait (``durable``), which also
        # makes every earlier fast commit durable.
        # Behind a transaction pooler no session setting holds (url.py): there
        # every commit waits, so ``durable`` needs no transaction of its own.
        self._async_commit = async_commit and self.target.mode is not Pooler.TRANSACTION
        hot_settings = {**planning, "synchronous_commit": "off" if async_commit else "on"}
        self._hot_connect_args = self.target.driver_args(ConnectionKind.HOT, hot_settings)
        self._hot_session = self.target.session_settings(hot_settings)
        # asyncpg's cache off (a transaction pooler): statements are unnamed,
        # so each connection keeps them described itself (see _fetch).
        self._unnamed = self._hot_connect_args.get("statement_cache_size") == 0
        self._pool_unnamed = pool_connect_args.get("statement_cache_size") == 0
        self._listen_connect_args = self.target.driver_args(ConnectionKind.LISTEN)
        self._hot_idle: list[asyncpg.Connection] = []
        self._hot_slots = asyncio.Semaphore(self.footprint.hot)
        self._closed = False
        self.url_for_display = self.target.display

    def now(self) -> ColumnElement[datetime]:
        return func.now(type_=UTCDateTime())

    def begin(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        return self.engine.begin()

    def event(self, row: Row) -> Event:
        # asyncpg already returns uuids and aware datetimes.
        return event_from_native(row)

    async def fetch(self, name: str, args: Sequence[Any], *, durable: bool = False) -> list[Row]:
        sql = QUERIES[name]
        async with self._connection() as connection:
            if durable and self._async_commit:
                async with connection.transaction():
                    await connection.execute("SET LOCAL synchronous_commit TO on")
                    return await _fetch(connection, sql, args, unnamed=self._unnamed)
            return await _fetch(connection, sql, args, unnamed=self._unnamed)

    async def read(self, name: str, args: Sequence[Any]) -> list[Row]:
        """On a pooled connection's asyncpg connection, outside any transaction (autocommit).

        Through SQLAlchemy a trivial admin list's read cost ~430 us of the
        worker's CPU (statement building, cache key, execution context,
        greenlets), straight on the driver ~190 us; the pool still bounds
        the connections and checks them in and out.
        """
        return await self.read_sql(QUERIES[name], args)

    async def read_sql(self, sql: str, args: Sequence[Any]) -> list[Row]:
        """:meth:`read` for a statement compiled once by its caller (store/admin/events.py).

        Cancelled (a caller's timeout), asyncpg asks the server to stop the
        statement, and the connection is dropped.
        """
        try:
            async with self.reader.connect() as conn:
                pooled = await conn.get_raw_connection()
                try:
                    return await _fetch(
                        pooled.driver_connection, sql, args, unnamed=self._pool_unnamed
                    )
                except asyncpg.PostgresError as exc:
                    error = translate_error(exc)
                    if isinstance(error, StoreUnavailable):
                        await _invalidate(conn)
                    raise error from exc
                except asyncpg.DataError as exc:  # an argument it cannot encode: the same again
                    raise StoreError(f"database error: {first_line(exc)}") from exc
                except _CONNECTION_LOST as exc:
                    await _invalidate(conn)
                    raise StoreUnavailable(f"database connection lost: {exc}") from exc
                except BaseException:
                    await _invalidate(conn)  # cancelled mid-statement: its state is unknown
                    raise
        except (sa_exc.SQLAlchemyError, *UNAVAILABLE) as exc:  # checking a connection out
            raise translate_error(exc) from exc

    async def run(self, conn: AsyncConnection, name: str, args: Sequence[Any]) -> list[Row]:
        result = await conn.exec_driver_sql(QUERIES[name], tuple(args))
        return list(result.all()) if result.returns_rows else []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._closed = True
        idle, self._hot_idle = self._hot_idle, []
        for connection in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=2)
        await self.engine.dispose()

    async def migrate(self, hooks: Sequence[SchemaHook]) -> None:
        """Upgrade to Alembic head, run the packs' schema hooks, build indexes concurrently.

        Publishers keep inserting throughout: see store/migrations/online.py for
        the locks each step takes and what concurrent starters wait on.
        """
        from eventproc.store.migrations.online import upgrade_online

        holder = f"{self.worker_name}:{uuid.uuid4().hex[:8]}"
        await upgrade_online(self.engine, hooks, holder=holder)

    async def listen(self, on_wake: Callable[[], None], wake_ups: WakeUps) -> None:
        # Probes go out through begin(), the pool publishers' INSERTs use.
        await listen(self._listen_connect_args, on_wake, wake_ups, self.begin)

    def _set_up_pool_sessions(self, settings: dict[str, str]) -> None:
        """Through a session pooler, SET the pool connections' settings once each."""
        if not settings:
            return
        arguments = session_arguments(settings)

        @event.listens_for(self.engine.sync_engine, "connect")
        def set_up(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.run_async(lambda raw: raw.execute(SET_SESSION, *arguments))

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A raw asyncpg connection for one hot statement.

        Kept apart from the SQLAlchemy pool: checking a connection out of it
        and back in (greenlets, pool events) cost more worker CPU than the
        statement itself. At most ``footprint.hot`` are open at once (a
        caller past them waits for one) and stay open between uses; one whose
        statement failed for any reason but a database error is closed
        instead, so a broken socket is never used twice.
        """
        async with self._hot_slots, self._hot_connection() as connection:
            yield connection

    @contextlib.asynccontextmanager
    async def _hot_connection(self) -> AsyncIterator[asyncpg.Connection]:
        connection = None
        while self._hot_idle and connection is None:
            connection = self._hot_idle.pop()
            if connection.is_closed():  # the server went away meanwhile
                connection = None
        try:
            if connection is None:
                connection = await connect(self._hot_connect_args, self._hot_session)
            yield connection
        except asyncpg.PostgresError as exc:
            translated_error = translate_error(exc)
            if isinstance(translated_error, StoreUnavailable):
                _discard(connection)
                connection = None
            raise translated_error from exc
        except _CONNECTION_LOST as exc:
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
                if self._closed or len(self._hot_idle) >= self.footprint.hot:
                    _discard(connection)
                else:
                    self._hot_idle.append(connection)


async def _fetch(
    connection: asyncpg.Connection, sql: str, args: Sequence[Any], *, unnamed: bool
) -> list[Row]:
    """One statement in one round trip, with asyncpg's cache on or off (``unnamed``).

    With the cache off, ``connection.fetch`` describes the unnamed
    statement in a round trip of its own every time (a trivial statement
    took 0.52 ms through PgBouncer here, 0.27 ms kept). A kept unnamed
    statement is parsed again with every execution (asyncpg marks it so
    when its cache is off), in the round trip of its Bind, so it never
    depends on the server connection it was described on, and it is
    planned with its own values each time.
    """
    if not unnamed:
        return list(await connection.fetch(sql, *args))
    statement = connection.unnamed.get(sql)
    if statement is None:
        statement = connection.unnamed[sql] = await connection.prepare(sql)
    return list(await statement.fetch(*args))


async def _invalidate(conn: AsyncConnection) -> None:
    """The pool drops this connection instead of handing it out again."""
    with contextlib.suppress(Exception):
        await conn.invalidate()


def _discard(connection: asyncpg.Connection | None) -> None:
    if connection is not None and not connection.is_closed():
        connection.terminate()
