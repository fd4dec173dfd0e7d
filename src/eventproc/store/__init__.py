"""Storage: ``open_store(url)`` picks the backend from the URL scheme."""

from typing import TYPE_CHECKING

from eventproc.store.protocol import (
    BlockedAggregate,
    BlockedSummary,
    ClaimPolicy,
    EventFilter,
    Kind,
    Lease,
    StoreStats,
    WriteBack,
)
from eventproc.store.store import Store

if TYPE_CHECKING:
    from eventproc.store.postgres.url import Pooler


def open_store(
    url: str,
    *,
    worker_name: str = "eventproc",
    pool_size: int | None = None,
    listen: bool = True,
    async_commit: bool = True,
    pooler: "Pooler | None" = None,
) -> Store:
    """Build (not connect) the store for ``url``: postgresql://… or sqlite:///…

    ``pool_size``: the most connections this process opens (PostgreSQL; see
    store/postgres/footprint.py), ``listen`` whether one of them is for LISTEN.
    ``async_commit``: see PostgresDriver (SQLite's WAL with synchronous=NORMAL
    already makes the same trade). ``pooler``: POOLER (PostgreSQL; None: as
    the URL's ``pgbouncer=`` says, see store/postgres/url.py).
    """
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme in ("postgresql", "postgres"):
        from eventproc.store.postgres.driver import DEFAULT_POOL_SIZE, PostgresDriver

        driver = PostgresDriver(
            url,
            worker_name=worker_name,
            pool_size=pool_size or DEFAULT_POOL_SIZE,
            listen=listen,
            async_commit=async_commit,
            pooler=pooler,
        )
        return Store(driver, worker_name=worker_name)
    if scheme == "sqlite":
        from eventproc.store.sqlite.driver import SqliteDriver

        return Store(SqliteDriver(url), worker_name=worker_name)
    raise ValueError(f"unsupported database URL scheme {scheme!r}")


__all__ = [
    "BlockedAggregate",
    "BlockedSummary",
    "ClaimPolicy",
    "EventFilter",
    "Kind",
    "Lease",
    "Store",
    "StoreStats",
    "WriteBack",
    "open_store",
]
