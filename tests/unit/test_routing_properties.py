"""Properties of the filter language, over random patterns and events (hypothesis).

- ``exists: true`` and ``exists: false`` never both match, and one always does;
- a value list and its ``anything-but`` split every present scalar between them;
- a pattern always matches the event built from its own first values;
- ``explain(e).matched`` is always ``matches(e)``, on any event;
- the wildcard matcher agrees with a regular-expression reference;
- numeric ranges agree with plain arithmetic.
"""

import re
from itertools import count
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from eventproc.routing import compile

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10),
    st.floats(-10, 10, allow_nan=False),
    st.text("ab5", max_size=3),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("vwxyz"), inner, max_size=3)
    ),
    max_leaves=8,
)
events = st.dictionaries(st.sampled_from("vwxyz"), json_values, max_size=4)


@given(value=st.one_of(json_values, st.just("MISSING")))
def test_exists_true_and_false_never_both_match(value: Any) -> None:
    event = {} if value == "MISSING" else {"v": value}
    present = compile({"v": [{"exists": True}]}, fields=None).matches(event)
    absent = compile({"v": [{"exists": False}]}, fields=None).matches(event)
    assert present is not absent


@given(
    values=st.one_of(
        st.lists(st.text("ab5", max_size=3), min_size=1, max_size=3),
        st.lists(st.integers(-3, 3) | st.floats(-3, 3, allow_nan=False), min_size=1, max_size=3),
    ),
    value=scalars,
)
def test_values_and_anything_but_split_every_scalar(values: list[Any], value: Any) -> None:
    event = {"v": value}
    listed = compile({"v": values}, fields=None).matches(event)
    excluded = compile({"v": [{"anything-but": values}]}, fields=None).matches(event)
    assert listed is not excluded


# Random patterns with the event that their first values make ------------------------

_names = count()


def _key() -> str:
    return f"k{next(_names)}"  # unique, so $or branches never collide with siblings


def _witness_of(clause: Any) -> tuple[bool, Any]:
    """(present, a value the clause takes)."""
    if not isinstance(clause, dict):
        return True, clause
    ((op, spec),) = clause.items()
    if op == "exists":
        return spec, "here"
    if op == "prefix":
        return True, spec + "tail"
    if op == "suffix":
        return True, "head" + spec
    if op == "equals-ignore-case":
        return True, spec.swapcase()
    if op == "wildcard":
        return True, spec.replace("*", "any")
    if op == "numeric":
        return True, spec[1] + (0.5 if spec[0] == ">" else 0)
    values = spec if isinstance(spec, list) else [spec]  # anything-but
    return True, "".join(str(v) for v in values) + "!"


leaf_clauses = st.one_of(
    scalars,
    st.builds(lambda s: {"prefix": s}, st.text("ab", max_size=3)),
    st.builds(lambda s: {"suffix": s}, st.text("ab", max_size=3)),
    st.builds(lambda s: {"equals-ignore-case": s}, st.text("aB", max_size=3)),
    st.builds(lambda s: {"wildcard": s}, st.sampled_from(["*", "a*", "*b", "a*b*c", "x"])),
    st.builds(lambda n: {"numeric": [">", n, "<=", n + 1]}, st.integers(-5, 5)),
    st.builds(lambda n: {"numeric": [">=", n]}, st.integers(-5, 5)),
    st.builds(lambda b: {"exists": b}, st.booleans()),
    st.builds(
        lambda v: {"anything-but": v}, st.lists(st.text("ab", max_size=2), min_size=1, max_size=2)
    ),
)


def _patterns(depth: int) -> st.SearchStrategy[tuple[dict[str, Any], dict[str, Any]]]:
    """A pattern object and an event it must match."""
    leaf = st.lists(leaf_clauses, min_size=1, max_size=3).map(_leaf_member)
    members = [leaf]
    if depth > 0:
        members.append(_patterns(depth - 1).map(_nested_member))
        members.append(st.lists(_patterns(depth - 1), min_size=2, max_size=3).map(_or_member))
    return st.lists(st.one_of(*members), min_size=1, max_size=3).map(_merge)


def _leaf_member(clauses: list[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    key = _key()
    present, value = _witness_of(clauses[0])
    return {key: clauses}, ({key: value} if present else {})


def _nested_member(
    inner: tuple[dict[str, Any], dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    key = _key()
    return {key: inner[0]}, {key: inner[1]}


def _or_member(
    branches: list[tuple[dict[str, Any], dict[str, Any]]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    return {"$or": [pattern for pattern, _ in branches]}, branches[0][1]


def _merge(
    members: list[tuple[dict[str, Any], dict[str, Any]]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    pattern: dict[str, Any] = {}
    event: dict[str, Any] = {}
    for part, witness in members:
        if "$or" in part and "$or" in pattern:
            pattern = {**pattern, _key(): {"$or": part["$or"]}}  # one $or per object
            event = {**event, list(pattern)[-1]: witness}
            continue
        pattern.update(part)
        event.update(witness)
    return pattern, event


@settings(max_examples=300)
@given(case=_patterns(2))
def test_a_pattern_matches_the_event_of_its_first_values(
    case: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    pattern, event = case
    matcher = compile(pattern, fields=None)
    assert matcher.matches(event), matcher.explain(event)
    assert matcher.explain(event).matched


@settings(max_examples=300)
@given(case=_patterns(2), noise=events, data=st.data())
def test_explain_agrees_with_matches_on_any_event(
    case: tuple[dict[str, Any], dict[str, Any]], noise: dict[str, Any], data: st.DataObject
) -> None:
    pattern, witness = case
    matcher = compile(pattern, fields=None)
    keys = sorted(witness)
    dropped = data.draw(st.sets(st.sampled_from(keys)) if keys else st.just(set()))
    event = {**{k: v for k, v in witness.items() if k not in dropped}, **noise}
    for candidate in (event, noise, {k: noise.get("v") for k in keys}):
        assert matcher.explain(candidate).matched is matcher.matches(candidate)


@given(
    wildcard=st.text("ab*", max_size=6).filter(lambda w: "**" not in w),
    value=st.text("ab", max_size=8),
)
def test_wildcard_agrees_with_a_regex(wildcard: str, value: str) -> None:
    reference = re.fullmatch(".*".join(re.escape(piece) for piece in wildcard.split("*")), value)
    assert compile({"v": [{"wildcard": wildcard}]}, fields=None).matches({"v": value}) is (
        reference is not None
    )


@given(
    low=st.integers(-20, 20),
    width=st.integers(1, 20),
    value=st.integers(-30, 30) | st.floats(-30, 30, allow_nan=False),
    low_op=st.sampled_from([">", ">="]),
    high_op=st.sampled_from(["<", "<="]),
)
def test_numeric_ranges_agree_with_arithmetic(
    low: int, width: int, value: float, low_op: str, high_op: str
) -> None:
    high = low + width
    expected = (value > low if low_op == ">" else value >= low) and (
        value < high if high_op == "<" else value <= high
    )
    pattern = {"v": [{"numeric": [low_op, low, high_op, high]}]}
    assert compile(pattern, fields=None).matches({"v": value}) is expected
