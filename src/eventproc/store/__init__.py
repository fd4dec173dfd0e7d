"""Storage: ``open_store(url)`` picks the backend from the URL scheme."""

from eventproc.store.protocol import (
    BlockedAggregate,
    BlockedSummary,
    ClaimPolicy,
    EventFilter,
    Kind,
    Lease,
    Store,
    StoreStats,
    WriteBack,
)
from eventproc.store.sqlstore import SqlStore


def open_store(
    url: str,
    *,
    worker_name: str = "eventproc",
    pool_size: int = 10,
    async_commit: bool = True,
) -> SqlStore:
    """Build (not connect) the store for ``url``: postgresql://… or sqlite:///…

    ``async_commit``: see PostgresStore (SQLite's WAL with synchronous=NORMAL
    already makes the same trade).
    """
    scheme = url.split(":", 1)[0].split("+", 1)[0]
    if scheme in ("postgresql", "postgres"):
        from eventproc.store.postgres import PostgresStore

        return PostgresStore(
            url, worker_name=worker_name, pool_size=pool_size, async_commit=async_commit
        )
    if scheme == "sqlite":
        from eventproc.store.sqlite import SqliteStore

        return SqliteStore(url, worker_name=worker_name)
    raise ValueError(f"unsupported database URL scheme {scheme!r}")


__all__ = [
    "BlockedAggregate",
    "BlockedSummary",
    "ClaimPolicy",
    "EventFilter",
    "Kind",
    "Lease",
    "SqlStore",
    "Store",
    "StoreStats",
    "WriteBack",
    "open_store",
]
