"""Every operator on the eventproc envelope, with the odd cases written down.

Where EventBridge's documentation says what happens, the case follows it;
where it is silent, the docstring says what eventproc decided:

- types are never crossed: ``"5"`` is not ``5``, ``true`` is not ``1``,
  ``null`` is not ``""`` and not missing; numbers compare by value
  (``5`` is ``5.0``, as Event Ruler compiles a number both ways);
- a missing field matches ``exists: false`` and nothing else (not
  ``anything-but``, not ``[null]``);
- ``null`` is a present value: ``exists: true`` and ``anything-but "x"``
  take it (Event Ruler reads it as the value ``null``);
- an array matches if any element does; nested arrays are flattened; an
  empty array holds no values, so it behaves as missing (``exists: false``
  takes it); an object is never a leaf value;
- an object pattern over an array of objects must match within ONE element
  (array consistency); ``exists: false`` inside it is also per element
  (EventBridge does not document this case; per element is the consistent
  reading);
- string operators see strings only, ``numeric`` JSON numbers only, within
  ±5e9.
"""

from typing import Any

import pytest

from eventproc.routing import compile, envelope


def hit(pattern: dict[str, Any], payload: dict[str, Any], **columns: Any) -> bool:
    matcher = compile(pattern)
    event = envelope(columns.pop("event_type", "intro.completed"), payload, **columns)
    result = matcher.matches(event)
    assert matcher.explain(event).matched is result
    return result


def field(clauses: list[Any]) -> dict[str, Any]:
    return {"payload": {"v": clauses}}


@pytest.mark.parametrize(
    ("clauses", "value", "expected"),
    [
        (["5"], 5, False),
        ([5], "5", False),
        ([5], 5.0, True),
        ([5.0], 5, True),
        ([1], True, False),
        ([True], 1, False),
        ([0], False, False),
        ([False], False, True),
        ([None], None, True),
        ([None], "", False),
        ([""], None, False),
        ([""], "", True),
        (["a"], ["b", "a"], True),
        (["a"], ["b", ["c", ["a"]]], True),  # nested arrays are flattened
        (["a"], [], False),
        (["a"], [{"x": "a"}], False),  # objects are not leaf values
        (["a"], {"x": "a"}, False),
        ([12345678901234567890], 12345678901234567890, True),  # beyond ±5e9: still by value
    ],
)
def test_plain_values_are_typed(clauses: list[Any], value: Any, expected: bool) -> None:
    """Exact values: typed equality, any element of an array, objects never."""
    assert hit(field(clauses), {"v": value}) is expected


def test_a_missing_field_matches_only_exists_false() -> None:
    """Missing: [null] does not take it, anything-but does not take it, exists: false does."""
    for clauses, expected in [
        ([None], False),
        ([""], False),
        ([{"anything-but": "x"}], False),
        ([{"anything-but": {"prefix": "x"}}], False),
        ([{"exists": True}], False),
        ([{"exists": False}], True),
        ([{"exists": False}, "a"], True),
        ([{"prefix": ""}], False),
        ([{"numeric": [">", 0]}], False),
        ([{"wildcard": "*"}], False),
    ]:
        assert hit(field(clauses), {"other": 1}) is expected, clauses


@pytest.mark.parametrize(
    ("value", "exists"),
    [
        (None, True),  # null is a value
        ("", True),
        (0, True),
        (False, True),
        ([], False),  # no values
        ([[]], False),
        ([None], True),
        ({}, False),  # an object is not a leaf
        ({"deeper": 1}, False),
        ([{"deeper": 1}], False),
    ],
)
def test_exists_true_and_false_are_complements(value: Any, exists: bool) -> None:
    """exists: true takes present leaf values (null included); false takes the rest."""
    assert hit(field([{"exists": True}]), {"v": value}) is exists
    assert hit(field([{"exists": False}]), {"v": value}) is not exists


@pytest.mark.parametrize(
    ("clause", "value", "expected"),
    [
        ({"prefix": "ord-"}, "ord-123", True),
        ({"prefix": "ord-"}, "ORD-123", False),
        ({"prefix": "ord-"}, 123, False),  # strings only
        ({"prefix": ""}, "anything", True),
        ({"prefix": ""}, None, False),
        ({"prefix": {"equals-ignore-case": "ORD-"}}, "ord-1", True),
        ({"suffix": "@example.com"}, "bob@example.com", True),
        ({"suffix": "@example.com"}, "bob@example.org", False),
        ({"suffix": {"equals-ignore-case": ".PNG"}}, "a.png", True),
        ({"suffix": "5"}, 5, False),
        ({"equals-ignore-case": "alice"}, "ALICE", True),
        ({"equals-ignore-case": "alice"}, "alicia", False),
        ({"equals-ignore-case": "1"}, 1, False),
        ({"prefix": "a"}, ["b", "ab"], True),
    ],
)
def test_string_operators_see_only_strings(clause: Any, value: Any, expected: bool) -> None:
    assert hit(field([clause]), {"v": value}) is expected


@pytest.mark.parametrize(
    ("wildcard", "value", "expected"),
    [
        ("*", "", True),
        ("*", "anything", True),
        ("*", 1, False),
        ("a*", "a", True),
        ("*a", "ba", True),
        ("a*b*c", "abc", True),
        ("a*b*c", "aXXbYYc", True),
        ("a*b*c", "acb", False),
        ("*/lib/*", "/usr/lib/x", True),
        ("a*ab", "aab", True),  # the pieces may not overlap: "a" then "ab"
        ("a*ab", "ab", False),
        ("ab*ba", "aba", False),
        ("*b*b*", "bb", True),
        ("*b*b*", "b", False),
        ("x*y*z*", "xyz", True),
        ("literal", "literal", True),
        ("literal", "literals", False),
        (r"a\*b", "a*b", True),  # an escaped star is a star
        (r"a\*b", "aXb", False),
        (r"a\\*", "a\\zzz", True),  # an escaped backslash, then a real star
        ("user.*.done", "user.x.y.done", True),
    ],
)
def test_wildcard_with_several_stars_and_escapes(wildcard: str, value: Any, expected: bool) -> None:
    assert hit(field([{"wildcard": wildcard}]), {"v": value}) is expected


@pytest.mark.parametrize(
    ("clause", "value", "expected"),
    [
        ({"anything-but": "x"}, "y", True),
        ({"anything-but": "x"}, "x", False),
        ({"anything-but": "x"}, None, True),  # null is present and is not "x"
        ({"anything-but": "x"}, 5, True),
        ({"anything-but": "5"}, 5, True),  # the number 5 is not the string "5"
        ({"anything-but": 5}, "5", True),
        ({"anything-but": 5}, 5.0, False),
        ({"anything-but": 1}, True, True),  # true is not 1
        ({"anything-but": ["a", "b"]}, ["a", "b"], False),
        ({"anything-but": ["a", "b"]}, ["a", "c"], True),  # one element is neither
        ({"anything-but": ["a"]}, [], False),  # no values: as missing
        ({"anything-but": "a"}, {"x": 1}, False),  # an object is not a value
        ({"anything-but": {"prefix": "us-"}}, "eu-west-1", True),
        ({"anything-but": {"prefix": "us-"}}, "us-east-1", False),
        ({"anything-but": {"prefix": "us-"}}, 3, True),  # not a string: not excluded
        ({"anything-but": {"suffix": ".png"}}, "a.png", False),
        ({"anything-but": {"equals-ignore-case": ["a", "B"]}}, "b", False),
        ({"anything-but": {"equals-ignore-case": ["a", "B"]}}, "c", True),
        ({"anything-but": {"wildcard": ["*/lib/*", "*.tmp"]}}, "x.tmp", False),
        ({"anything-but": {"wildcard": ["*/lib/*", "*.tmp"]}}, "x.txt", True),
    ],
)
def test_anything_but(clause: Any, value: Any, expected: bool) -> None:
    """A value must be present; anything-but excludes only values of its own type."""
    assert hit(field([clause]), {"v": value}) is expected


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        (["<", 10], 9.999, True),
        (["<", 10], 10, False),
        (["<=", 10], 10, True),
        ([">", 0, "<", 5], 0, False),
        ([">=", 0, "<", 5], 0, True),
        ([">=", 0, "<", 5], 5, False),
        ([">=", 5, "<=", 5], 5, True),
        (["=", 3], 3.0, True),
        (["=", 3], "3", False),  # numeric reads JSON numbers only
        (["=", 1], True, False),  # booleans are not numbers
        ([">", 0], None, False),
        ([">", 0], [-1, 2], True),
        ([">", 0], [-1, -2], False),
        ([">", 0], 6e9, False),  # beyond EventBridge's ±5e9 no number matches
        (["<", 0], -6e9, False),
        ([">=", -5e9, "<=", 5e9], 5e9, True),
    ],
)
def test_numeric(spec: list[Any], value: Any, expected: bool) -> None:
    assert hit(field([{"numeric": spec}]), {"v": value}) is expected


def test_the_values_of_one_field_are_ored_and_fields_are_anded() -> None:
    pattern = {
        "aggregate_type": ["user"],
        "payload": {"plan": ["pro", {"prefix": "ent"}, {"numeric": [">", 100]}]},
    }
    assert hit(pattern, {"plan": "enterprise"}, aggregate_type="user")
    assert hit(pattern, {"plan": 101}, aggregate_type="user")
    assert not hit(pattern, {"plan": "free"}, aggregate_type="user")
    assert not hit(pattern, {"plan": "pro"}, aggregate_type="team")
    assert not hit(pattern, {"plan": "pro"})  # no aggregate_type: missing


def test_envelope_columns() -> None:
    """aggregate_id is matched as a string; NULL columns are missing."""
    pattern = {"aggregate_id": [{"prefix": "00000000-"}], "created_by": [{"exists": False}]}
    assert hit(pattern, {}, aggregate_id="00000000-0000-0000-0000-000000000001")
    assert not hit(pattern, {}, aggregate_id="10000000-0000-0000-0000-000000000001")
    assert not hit(pattern, {}, aggregate_id="00000000-1", created_by="svc")
    assert hit({"event_type": [{"wildcard": "intro.*"}]}, {})
    assert hit(
        {"metadata": {"retry_count": [{"numeric": ["<", 3]}]}}, {}, metadata={"retry_count": 2}
    )


def test_nested_objects_to_any_depth() -> None:
    pattern = {"payload": {"a": {"b": {"c": {"d": {"e": {"f": ["deep"]}}}}}}}
    assert hit(pattern, {"a": {"b": {"c": {"d": {"e": {"f": "deep"}}}}}})
    assert not hit(pattern, {"a": {"b": {"c": {"d": {"e": {"f": "shallow"}}}}}})
    assert not hit(pattern, {"a": {"b": "c"}})
    only_absent = {"payload": {"a": {"b": {"c": [{"exists": False}]}}}}
    assert hit(only_absent, {})  # every level missing: c is missing
    assert hit(only_absent, {"a": "not an object"})
    assert not hit(only_absent, {"a": {"b": {"c": 1}}})


def test_objects_in_arrays_match_within_one_element() -> None:
    pattern = {"payload": {"items": {"sku": ["A"], "qty": [{"numeric": [">", 1]}]}}}
    assert hit(pattern, {"items": [{"sku": "B", "qty": 5}, {"sku": "A", "qty": 2}]})
    assert not hit(pattern, {"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 5}]})
    assert hit(pattern, {"items": [[{"sku": "A", "qty": 3}]]})
    assert not hit(pattern, {"items": []})
    assert not hit(pattern, {"items": ["A", 2]})  # values, not objects
    per_element = {"payload": {"items": {"gift": [{"exists": False}]}}}
    assert hit(per_element, {"items": [{"gift": True}, {"sku": "A"}]})
    assert not hit(per_element, {"items": [{"gift": True}]})
    assert hit(per_element, {"items": []})


def test_or_nested_and_inside_objects() -> None:
    pattern = {
        "payload": {
            "$or": [
                {"plan": ["pro"]},
                {"$or": [{"seats": [{"numeric": [">=", 10]}]}, {"trial": [True]}]},
            ]
        },
        "$or": [{"aggregate_type": ["user"]}, {"metadata": {"source": ["import"]}}],
    }
    assert hit(pattern, {"plan": "pro"}, aggregate_type="user")
    assert hit(pattern, {"seats": 12}, metadata={"source": "import"})
    assert hit(pattern, {"trial": True}, aggregate_type="user")
    assert not hit(pattern, {"trial": "true"}, aggregate_type="user")
    assert not hit(pattern, {"plan": "pro"}, aggregate_type="team")


def test_keys_with_dots_are_literal() -> None:
    """Event Ruler joins nested keys with dots, so {"a.b": ...} and {"a": {"b": ...}}
    collide there ("should not be relied upon"); here a key is a key."""
    assert hit({"payload": {"a.b": ["x"]}}, {"a.b": "x"})
    assert not hit({"payload": {"a.b": ["x"]}}, {"a": {"b": "x"}})
    assert not hit({"payload": {"a": {"b": ["x"]}}}, {"a.b": "x"})


def test_a_field_named_like_an_operator_is_a_field_outside_or() -> None:
    assert hit({"payload": {"prefix": ["x"]}}, {"prefix": "x"})
