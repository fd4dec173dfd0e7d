"""Alembic migrations for PostgreSQL (SQLite files are created from schema.py).

The version table is ``eventproc_alembic_version`` so that a database whose
application already uses Alembic keeps its own ``alembic_version`` untouched.
"""

from importlib import resources
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

VERSION_TABLE = "eventproc_alembic_version"


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Run inside the caller's transaction (which holds the migration lock)."""
    command.upgrade(alembic_config(connection), revision)


def sql_file_statements(name: str) -> list[str]:
    """The statements of ``store/sql/<name>``, split outside ``$$`` bodies.

    asyncpg prepares each statement, so a file cannot be sent in one piece.
    """
    source = resources.files("eventproc.store").joinpath("sql", name)
    text = "\n".join(
        line
        for line in source.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("--")
    )
    statements: list[str] = []
    current: list[str] = []
    for index, piece in enumerate(text.split("$$")):
        if index % 2:  # inside a $$ body: keep it whole
            current.append(f"$${piece}$$")
            continue
        *complete, rest = piece.split(";")
        for part in complete:
            current.append(part)
            statements.append("".join(current).strip())
            current = []
        current.append(rest)
    tail = "".join(current).strip()
    if tail:
        statements.append(tail)
    return [statement for statement in statements if statement]
