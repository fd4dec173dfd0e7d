"""Named queries: both backends define the same names, and every statement prepares."""

import re
import sqlite3
from pathlib import Path

import asyncpg
import pytest

from eventproc.store import queries
from support.databases import _dsn


def test_both_backends_define_the_same_names() -> None:
    assert set(queries.load("postgresql")) == set(queries.load("sqlite"))


def _highest(pattern: str, text: str) -> int:
    return max((int(n) for n in re.findall(pattern, text)), default=0)


def test_both_backends_take_the_same_arguments_in_the_same_positions() -> None:
    # The store builds one argument list per operation for both backends.
    postgresql, sqlite = queries.load("postgresql"), queries.load("sqlite")
    for name, text in postgresql.items():
        assert _highest(r"\$(\d+)", text) == _highest(r"\?(\d+)", sqlite[name]), name
        assert not re.search(r"(?<!:):[a-z_]+", sqlite[name].replace("'", "")), name


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("block", [True, False])
@pytest.mark.parametrize("carrying", [True, False])
def test_every_claim_the_processor_can_ask_for_is_named(
    ordered: bool, block: bool, carrying: bool
) -> None:
    name = queries.claim_query(ordered=ordered, block_on_dead_letters=block, carrying=carrying)
    for backend in ("postgresql", "sqlite"):
        assert name in queries.load(backend)


def test_no_statement_is_assembled_in_python() -> None:
    store = Path(queries.__file__).parents[1]
    for module in store.rglob("*.py"):
        source = module.read_text()
        for match in re.finditer(r'f"""|f\'\'\'', source):
            line = source.count("\n", 0, match.start()) + 1
            pytest.fail(f"{module.name}:{line}: an f-string SQL template; use a named query")


def test_sqlite_statements_cut_where_a_statement_is_complete() -> None:
    text = "INSERT INTO t SELECT ';' FROM x;\nUPDATE t SET a = 1;\n"
    assert queries.sqlite_statements(text) == [
        "INSERT INTO t SELECT ';' FROM x",
        "UPDATE t SET a = 1",
    ]
    assert queries.sqlite_statements("SELECT 1") == ["SELECT 1"]


def test_parse_reads_headers_aliases_and_refuses_mistakes() -> None:
    parsed = queries.parse("-- a comment\n-- name: one\n-- why\nSELECT 1;\n\n-- name: two = one\n")
    assert parsed == {"one": "SELECT 1", "two": "SELECT 1"}
    with pytest.raises(ValueError, match="defined twice"):
        queries.parse("-- name: a\nSELECT 1;\n-- name: a\nSELECT 2;\n")
    with pytest.raises(ValueError, match="not defined"):
        queries.parse("-- name: a = b\n")
    with pytest.raises(ValueError, match="without a statement"):
        queries.parse("-- name: a\n-- only a comment\n")


async def test_every_postgresql_query_prepares(pg_url: str) -> None:
    connection = await asyncpg.connect(_dsn(pg_url))
    try:
        for name, text in queries.load("postgresql").items():
            try:
                await connection.prepare(text)
            except asyncpg.PostgresError as exc:
                pytest.fail(f"{name}: {exc}")
    finally:
        await connection.close()


async def test_every_sqlite_query_prepares(sqlite_store: object, sqlite_url: str) -> None:
    connection = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    try:
        for name, text in queries.load("sqlite").items():
            for statement in queries.sqlite_statements(text):
                params = [None] * _highest(r"\?(\d+)", statement)
                try:
                    connection.execute(f"EXPLAIN {statement}", params)
                except sqlite3.Error as exc:
                    pytest.fail(f"{name}: {exc}")
    finally:
        connection.close()


_TABLE_REFERENCE = re.compile(
    r"\b(?:FROM|JOIN|UPDATE)\s+(events|event_\w+)\b(?:\s+(?:AS\s+)?(\w+))?"
)
_NOT_ALIASES = {"WHERE", "SET", "ON", "JOIN", "LEFT", "ORDER", "GROUP", "USING", "RETURNING"}


def _full_scans(plan: list[tuple[int, int, int, str]], statement: str) -> list[str]:
    """The plan's steps that read a whole table (SCAN without an index) of ours."""
    tables: set[str] = set()
    for table, alias in _TABLE_REFERENCE.findall(statement):
        tables.add(table)
        if alias and alias.upper() not in _NOT_ALIASES:
            tables.add(alias)
    return [
        step[3]
        for step in plan
        if step[3].startswith("SCAN ") and step[3].split()[1] in tables and "USING" not in step[3]
    ]


async def test_no_sqlite_lifecycle_query_reads_a_whole_table(
    sqlite_store: object, sqlite_url: str
) -> None:
    # SQLite's planner gives up on a partial index when a clause ORs two
    # conditions: the aggregate gate and the runs then scanned the table.
    connection = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    try:
        scans = {}
        for name, text in queries.load("sqlite").items():
            if not name.startswith(("event_", "delivery_")):
                continue
            for statement in queries.sqlite_statements(text):
                params = [None] * _highest(r"\?(\d+)", statement)
                plan = connection.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
                if found := _full_scans(plan, statement):
                    scans[name] = found
        assert scans == {}
    finally:
        connection.close()
