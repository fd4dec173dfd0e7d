"""Column types that read and write the same Python values on both backends.

Packs that keep their own tables (the Yachtparty pack does) get them from
``eventproc.columns``, the public module: a pack's table defined with these
types works on PostgreSQL and on the embedded SQLite file alike.
"""

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import CHAR, JSON, DateTime, String
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["GUID", "JSONDoc", "UTCDateTime", "new_uuid", "utc_now"]

SQLITE_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# jsonb on PostgreSQL (the seed's type), JSON text on SQLite.
JSONDoc = JSON().with_variant(postgresql.JSONB(), "postgresql")


class GUID(TypeDecorator[uuid.UUID]):
    """Native ``uuid`` on PostgreSQL; the dashed text form on SQLite.

    The dashed form keeps hand-written SQL such as the seed's replay
    (``WHERE id IN ('…')``) working against the embedded file.
    """

    impl = CHAR(36)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.UUID(as_uuid=True))
        return dialect.type_descriptor(CHAR(36))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))

    def process_result_value(self, value: Any, dialect: Dialect) -> uuid.UUID | None:
        if value is None or isinstance(value, uuid.UUID):
            return value
        return uuid.UUID(str(value))


class UTCDateTime(TypeDecorator[datetime]):
    """``timestamptz`` on PostgreSQL; sortable UTC text on SQLite.

    Values always come back timezone-aware (UTC), whatever the backend.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name != "sqlite":
            return value
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return sqlite_time(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        assert isinstance(value, datetime)
        return value


def sqlite_time(value: datetime) -> str:
    """A time as SQLite's columns hold it: UTC text, naive times taken as UTC.

    Milliseconds, exactly like strftime('%f') in SQL defaults and the
    store's clock, so that times compare correctly as text.
    """
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return f"{value.strftime(SQLITE_TIME_FORMAT)}.{value.microsecond // 1000:03d}"


class utc_now(FunctionElement[datetime]):
    """The database clock as a column default, in each backend's own form."""

    type = DateTime(timezone=True)
    inherit_cache = True


class new_uuid(FunctionElement[uuid.UUID]):
    """A random uuid as a column default, for rows inserted by plain SQL."""

    type = GUID()
    inherit_cache = True


@compiles(utc_now, "postgresql")
def _utc_now_pg(element: utc_now, compiler: SQLCompiler, **kw: Any) -> str:
    return "now()"


@compiles(utc_now, "sqlite")
def _utc_now_sqlite(element: utc_now, compiler: SQLCompiler, **kw: Any) -> str:
    # Same text form as UTCDateTime writes, so values compare as times.
    return "(strftime('%Y-%m-%d %H:%M:%f', 'now'))"


@compiles(new_uuid, "postgresql")
def _new_uuid_pg(element: new_uuid, compiler: SQLCompiler, **kw: Any) -> str:
    return "gen_random_uuid()"


@compiles(new_uuid, "sqlite")
def _new_uuid_sqlite(element: new_uuid, compiler: SQLCompiler, **kw: Any) -> str:
    return (
        "(lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || "
        "substr(hex(randomblob(2)), 2) || '-' || "
        "substr('89ab', 1 + (abs(random()) % 4), 1) || "
        "substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))))"
    )
