"""Portable SQL for code that writes its own queries (handler packs): one call, two spellings.

This is the engine's portability layer for SQL written outside the store,
and so one of the few places where checking ``dialect.name`` belongs: a pack
calls these and never asks which database it runs on. Packs import them from
:mod:`eventproc.columns`, not from here.

Arrays are native on PostgreSQL (``text[]``, ``uuid[]``) and JSON arrays on
SQLite; :func:`overlaps` knows both forms.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    ColumnElement,
    Connection,
    Insert,
    Table,
    Text,
    exists,
    func,
    literal,
    select,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeDecorator, TypeEngine

from eventproc.store.types import UTCDateTime, utc_now

__all__ = [
    "TextArray",
    "UUIDArray",
    "db_clock",
    "db_now",
    "insert_ignoring_conflicts",
    "overlaps",
]

AnyConnection = AsyncConnection | Connection


class TextArray(TypeDecorator[list[str]]):
    """``text[]`` on PostgreSQL; a JSON array of strings on SQLite."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(Text()))
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        return None if value is None else [str(item) for item in value]

    def process_result_value(self, value: Any, dialect: Dialect) -> list[str] | None:
        return None if value is None else [str(item) for item in value]


class UUIDArray(TypeDecorator[list[uuid.UUID]]):
    """``uuid[]`` on PostgreSQL; a JSON array of dashed uuid strings on SQLite."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(postgresql.UUID(as_uuid=True)))
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        items = [item if isinstance(item, uuid.UUID) else uuid.UUID(str(item)) for item in value]
        return items if dialect.name == "postgresql" else [str(item) for item in items]

    def process_result_value(self, value: Any, dialect: Dialect) -> list[uuid.UUID] | None:
        if value is None:
            return None
        return [item if isinstance(item, uuid.UUID) else uuid.UUID(str(item)) for item in value]


def db_clock() -> ColumnElement[datetime]:
    """The database's clock as an expression that reads back timezone-aware (UTC).

    PostgreSQL ``now()`` (the transaction's start), SQLite ``strftime`` with
    milliseconds: the same clock and text form as :class:`UTCDateTime` writes,
    so the values compare as times on both.
    """
    return type_coerce(utc_now(), UTCDateTime())


async def db_now(connection: AsyncConnection) -> datetime:
    """Read :func:`db_clock` once.

    On PostgreSQL every call in one transaction returns the same time, so
    the rows a handler writes can share it; a handler reads it once and reuses it.
    """
    value = (await connection.execute(select(db_clock()))).scalar_one()
    assert isinstance(value, datetime)
    return value


def insert_ignoring_conflicts(
    connection: AnyConnection, table: Table, *, index_elements: Sequence[str] | None = None
) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` in the connection's dialect.

    Without ``index_elements`` a conflict on any unique key is ignored;
    with them, only a conflict on that key (other violations still raise).
    """
    target = list(index_elements) if index_elements is not None else None
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=target)
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=target)


def overlaps(
    connection: AnyConnection, column: ColumnElement[Any], values: Sequence[str]
) -> ColumnElement[bool]:
    """The :class:`TextArray` ``column`` shares at least one element with ``values``.

    PostgreSQL: ``column && ARRAY[...]``; SQLite: an ``EXISTS`` over
    ``json_each(column)``.
    """
    items = [str(value) for value in values]
    if connection.dialect.name == "postgresql":
        return column.op("&&", is_comparison=True)(literal(items, postgresql.ARRAY(Text())))
    element = func.json_each(column).table_valued("value")
    return exists(select(literal(1)).select_from(element).where(element.c.value.in_(items)))
