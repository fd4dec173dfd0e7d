"""The few query pieces PostgreSQL and SQLite spell differently.

The database clock, the conflict-ignoring insert and the array-overlap test;
everything else the handlers write is portable SQLAlchemy Core.
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Insert, Table, Text, exists, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from yachtparty.tables import SQLITE_TIME_FORMAT, Timestamp


async def db_now(connection: AsyncConnection) -> datetime:
    """The database's clock (timezone-aware UTC): PostgreSQL ``now()``, SQLite ``strftime``.

    On PostgreSQL this is the transaction's start, so every row a handler
    writes carries the same time; handlers read it once and reuse it.
    """
    if connection.dialect.name == "postgresql":
        clock: ColumnElement[datetime] = func.now(type_=Timestamp())
    else:
        clock = func.strftime(SQLITE_TIME_FORMAT, "now", type_=Timestamp())
    value = (await connection.execute(select(clock))).scalar_one()
    assert isinstance(value, datetime)
    return value


def insert_ignoring_conflicts(connection: AsyncConnection, table: Table) -> Insert:
    """``INSERT ... ON CONFLICT DO NOTHING`` (any unique key), in the connection's dialect."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


async def insert_once(connection: AsyncConnection, table: Table, values: dict[str, Any]) -> bool:
    """Insert one row unless its id (or another unique key) exists; True if inserted."""
    result = await connection.execute(insert_ignoring_conflicts(connection, table), values)
    return result.rowcount == 1


def overlaps(
    connection: AsyncConnection, column: ColumnElement[Any], values: Sequence[str]
) -> ColumnElement[bool]:
    """The array ``column`` shares at least one element with ``values``.

    PostgreSQL: ``column && ARRAY[...]``; SQLite: an ``EXISTS`` over
    ``json_each(column)``.
    """
    items = [str(value) for value in values]
    if connection.dialect.name == "postgresql":
        return column.op("&&", is_comparison=True)(literal(items, postgresql.ARRAY(Text())))
    element = func.json_each(column).table_valued("value")
    return exists(select(literal(1)).select_from(element).where(element.c.value.in_(items)))
