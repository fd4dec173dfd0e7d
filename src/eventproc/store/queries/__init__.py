"""Named queries: every statement of an event's lifecycle, one ``.sql`` file per backend.

Each file holds blocks that start with ``-- name: <name>``; the text up to
the next header is the statement, sent as it stands (nothing is assembled
from pieces). Both backends define the same names (tests/store hold them to
it). A header ``-- name: <name> = <other>`` says that this backend runs the
same statement for both names, where the other backend needs two.
"""

import re
import sqlite3
from importlib import resources
from types import MappingProxyType
from typing import Literal

Backend = Literal["postgresql", "sqlite"]

_HEADER = re.compile(r"^--\s*name:\s*(?P<name>\w+)(?:\s*=\s*(?P<alias>\w+))?\s*$")


def parse(source: str) -> dict[str, str]:
    """The named statements of one file's text (comments kept out of each body)."""
    bodies: dict[str, list[str]] = {}
    aliases: dict[str, str] = {}
    current: list[str] | None = None
    for line in source.splitlines():
        header = _HEADER.match(line.strip())
        if header:
            name = header["name"]
            if name in bodies or name in aliases:
                raise ValueError(f"query {name!r} is defined twice")
            if header["alias"]:
                aliases[name], current = header["alias"], None
            else:
                current = bodies[name] = []
        elif current is not None and not line.lstrip().startswith("--"):
            current.append(line)
    queries = {name: "\n".join(lines).strip().rstrip(";") for name, lines in bodies.items()}
    for name, target in aliases.items():
        if target not in queries:
            raise ValueError(f"query {name!r} names {target!r}, which is not defined")
        queries[name] = queries[target]
    empty = [name for name, text in queries.items() if not text]
    if empty:
        raise ValueError(f"queries without a statement: {', '.join(empty)}")
    return queries


def load(backend: Backend) -> MappingProxyType[str, str]:
    """The backend's queries, read from the package once (callers keep the result)."""
    source = resources.files(__package__).joinpath(f"{backend}.sql").read_text("utf-8")
    return MappingProxyType(parse(source))


def sqlite_statements(text: str) -> list[str]:
    """The statements of a SQLite text, cut where SQLite says one is complete.

    SQLite runs one statement per call, so a query that needs two there (a
    write PostgreSQL does in one data-modifying CTE) and a file of triggers
    (whose bodies hold semicolons of their own) are run piece by piece.
    Comment lines are left out; each statement comes without its ``;``.
    """
    statements: list[str] = []
    current = ""
    for piece in text.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            body = "\n".join(
                line for line in current.splitlines() if not line.lstrip().startswith("--")
            ).strip()
            if body != ";":
                statements.append(body.removesuffix(";").rstrip())
            current = ""
    return statements


def claim_query(*, ordered: bool, block_on_dead_letters: bool, carrying: bool) -> str:
    """The name of the claim statement for these options (the same on both backends)."""
    name = "event_claim"
    if ordered:
        name += "_ordered_blocking" if block_on_dead_letters else "_ordered"
    return name + ("_carrying" if carrying else "")


def claim_one_query(*, ordered: bool, block_on_dead_letters: bool) -> str:
    """The name of the manual trigger's claim for these options."""
    if not ordered:
        return "event_claim_one"
    return (
        "event_claim_one_ordered_blocking" if block_on_dead_letters else "event_claim_one_ordered"
    )
