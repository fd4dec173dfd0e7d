"""README's "Subscriptions and routing": every example is run, so the section cannot drift."""

import json
from pathlib import Path
from typing import Any

import pytest

from eventproc import Registry
from eventproc.cli import _route_lines
from eventproc.errors import RegistryError
from eventproc.routing import compile, envelope
from eventproc.routing.clauses import OPERATORS

README = Path(__file__).resolve().parents[2] / "README.md"


def section() -> str:
    text = README.read_text()
    start = text.index("\n## Subscriptions and routing\n")
    return text[start : text.index("\n## ", start + 1)]


def blocks(kind: str) -> list[str]:
    """The section's fenced blocks opened with ```kind (``""``: no language), in order."""
    found: list[tuple[str, list[str]]] = []
    inside = False
    for line in section().splitlines():
        if line.startswith("```"):
            inside = not inside
            if inside:
                found.append((line[3:], []))
        elif inside:
            found[-1][1].append(line)
    return ["\n".join(lines) for language, lines in found if language == kind]


def the_example_registry() -> Registry:
    scope: dict[str, Any] = {}
    exec(blocks("python")[0], scope)  # the README's own example
    registry = scope["registry"]
    assert isinstance(registry, Registry)
    return registry


def table() -> list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]]:
    rows = []
    for line in section().splitlines():
        if not line.startswith("| ") or line.startswith(("| Operator", "| ---")):
            continue
        operator, *cells = line.strip("| ").split(" | ")
        pattern, yes, no = (json.loads(cell.strip().strip("`")) for cell in cells)
        rows.append((operator, pattern, yes, no))
    return rows


def test_the_table_covers_every_operator() -> None:
    operators = " ".join(operator for operator, *_ in table())
    for name in (*OPERATORS, "$or"):
        assert f"`{name}" in operators, name
    assert len(table()) == 18


@pytest.mark.parametrize(("operator", "pattern", "yes", "no"), table())
def test_each_table_row_matches_as_it_says(
    operator: str, pattern: dict[str, Any], yes: dict[str, Any], no: dict[str, Any]
) -> None:
    matcher = compile(pattern)
    taken, refused = envelope("x.y", yes), envelope("x.y", no)
    assert matcher.matches(taken) and matcher.explain(taken).matched, operator
    assert not matcher.matches(refused) and not matcher.explain(refused).matched, operator


def test_the_registration_example_registers_three_subscriptions() -> None:
    registry = the_example_registry()
    assert [entry.name for entry in registry] == [
        "award_credits",
        "notify_paying_members",
        "analytics",
    ]
    assert registry.event_types == ["intro.completed", "user.*", "intro.*"]


def test_the_start_up_error_is_the_one_shown() -> None:
    [shown] = [block.strip() for block in blocks("") if block.startswith("error: ")]

    async def handle(event: object, ctx: object) -> None:
        return None

    with pytest.raises(RegistryError) as caught:
        Registry().register(
            "intro.completed",
            handle,
            name="notify_paying_members",
            filter={"payload": {"plan": "pro"}},
        )
    assert shown == f"error: {caught.value}"


def test_the_route_test_output_is_what_the_command_prints() -> None:
    [shown] = [block for block in blocks("") if block.startswith("$ eventproc route test")]
    lines = shown.splitlines()
    printed = lines[2:]  # the command takes two lines
    given = json.loads(" ".join(line.strip() for line in lines[:2]).split("'")[1])
    made = envelope(given["event_type"], given["payload"], created_by=given["created_by"])
    assert _route_lines(the_example_registry().explain(made)) == printed
