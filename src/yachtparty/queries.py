"""The insert every handler uses to create a row at most once.

Built on :mod:`eventproc.columns` (the conflict-ignoring insert, spelled for
each backend there, with the database clock and the array-overlap test);
everything else the handlers write is portable SQLAlchemy Core.
"""

from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.columns import insert_ignoring_conflicts


async def insert_once(connection: AsyncConnection, table: Table, values: dict[str, Any]) -> bool:
    """Insert one row unless its id (or another unique key) exists; True if inserted."""
    result = await connection.execute(insert_ignoring_conflicts(connection, table), values)
    return result.rowcount == 1
