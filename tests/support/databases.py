"""Throwaway PostgreSQL databases for tests (never skipped: unreachable means fail)."""

import asyncio
import os
import uuid

import asyncpg
import pytest
from sqlalchemy.engine import make_url

ADMIN_URL = os.environ.get(
    "EVENTPROC_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _recreate(name: str) -> None:
    try:
        admin = await asyncpg.connect(_dsn(ADMIN_URL), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {ADMIN_URL} ({exc}). Start it (scripts/test does) "
            "or set EVENTPROC_TEST_DATABASE_URL. PostgreSQL tests are never skipped.",
            pytrace=False,
        )
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


def make_database(prefix: str) -> str:
    """Create a fresh database and return its URL (for tests that need their own)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"{prefix}_{worker}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_recreate(name))
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    async def drop() -> None:
        admin = await asyncpg.connect(_dsn(ADMIN_URL), timeout=10)
        try:
            name = make_url(url).database
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(drop())
