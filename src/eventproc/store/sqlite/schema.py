"""SQLite's schema: create what is missing, add columns added since, triggers.

SQLite has no Alembic history here: ``migrate`` makes the file match
store/schema.py, whatever release wrote it.
"""

from importlib import resources
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.store import queries
from eventproc.store.schema import metadata

TRIGGERS_FILE = "sqlite_triggers_v3.sql"


async def create_schema(conn: AsyncConnection) -> None:
    """Tables, columns added since, indexes, triggers, then NULL ``processed`` fixed.

    A file written by an earlier release gets the new (nullable) columns
    with ``ALTER TABLE ... ADD COLUMN`` before the indexes that use them.
    """
    await conn.run_sync(_add_missing_columns)
    await conn.run_sync(metadata.create_all)
    for statement in _trigger_statements():
        await conn.exec_driver_sql(statement)
    await conn.exec_driver_sql("UPDATE events SET processed = 0 WHERE processed IS NULL")


def _add_missing_columns(connection: Any) -> None:
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    for table in metadata.sorted_tables:
        if table.name not in present:
            continue  # create_all makes it whole
        have = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in have:
                continue
            if not column.nullable and column.server_default is None:
                raise RuntimeError(f"cannot add NOT NULL column {table.name}.{column.name}")
            kind = column.type.compile(dialect=connection.dialect)
            connection.exec_driver_sql(
                f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}'
            )


def _trigger_statements() -> list[str]:
    """The statements of ``store/sql/<TRIGGERS_FILE>``."""
    source = resources.files("eventproc.store").joinpath("sql", TRIGGERS_FILE).read_text("utf-8")
    return queries.sqlite_statements(source)
