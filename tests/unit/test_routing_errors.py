"""Bad patterns fail at compile time, in ONE line naming the path and the bad clause.

The registry prefixes the handler's name (``Route`` does the same with the
subscription's name). Caps: 10 levels of nesting, 100 values per field,
1,000 values per pattern, 1,024 characters per string, 256 per field name,
32 branches per $or, numbers within ±5e9.
"""

from typing import Any

import pytest

from eventproc.errors import RegistryError
from eventproc.routing import PatternError, Route, TypeMatcher, check_type_pattern, compile


def error(pattern: Any, **kwargs: Any) -> str:
    with pytest.raises(PatternError) as caught:
        compile(pattern, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (
            {"payload": {"amount": [{"numeric": ["<"]}]}},
            'payload.amount: numeric needs an operator and a number, got ["<"]',
        ),
        (
            {"payload": {"amount": [{"numeric": ["<", "10"]}]}},
            'payload.amount: numeric needs an operator and a number, got ["<", "10"]',
        ),
        (
            {"payload": {"amount": [{"numeric": ["=>", 1]}]}},
            'payload.amount: numeric operators are =, <, <=, >, >=, got ["=>", 1]',
        ),
        (
            {"payload": {"amount": [{"numeric": ["<", 10, ">", 0]}]}},
            "payload.amount: a numeric range is a lower bound (> or >=) then an upper bound "
            '(< or <=), got ["<", 10, ">", 0]',
        ),
        (
            {"payload": {"amount": [{"numeric": [">", 5, "<", 5]}]}},
            'payload.amount: numeric range is empty, got [">", 5, "<", 5]',
        ),
        (
            {"payload": {"amount": [{"numeric": [">", 6e9]}]}},
            "payload.amount: numeric: numbers must be within ±5e+09 (EventBridge's range), "
            "got 6000000000.0",
        ),
        (
            {"payload": {"plan": "pro"}},
            'payload.plan: a field takes a list of values or an object, got "pro"',
        ),
        (
            {"payload": {"plan": []}},
            "payload.plan: a field's list needs at least one value, got []",
        ),
        ({"payload": {}}, "payload: an empty object matches nothing useful: name a field"),
        ({}, "pattern: an empty object matches nothing useful: name a field"),
        ({"payload": {"plan": [["pro"]]}}, 'payload.plan: values are not lists, got ["pro"]'),
        (
            {"payload": {"plan": [{"prefix": "a", "suffix": "b"}]}},
            "payload.plan: an operator object has exactly one key, "
            'got {"prefix": "a", "suffix": "b"}',
        ),
        (
            {"payload": {"plan": [{"contains": "a"}]}},
            'payload.plan: unknown operator "contains" (supported: anything-but, '
            'equals-ignore-case, exists, numeric, prefix, suffix, wildcard), got {"contains": "a"}',
        ),
        (
            {"payload": {"plan": [{"prefix": 5}]}},
            'payload.plan: prefix needs a string or {"equals-ignore-case": string}, got 5',
        ),
        (
            {"payload": {"plan": [{"exists": "yes"}]}},
            'payload.plan: exists needs true or false, got "yes"',
        ),
        (
            {"payload": {"plan": [{"anything-but": ["a", 1]}]}},
            "payload.plan: anything-but takes a string, a number, a list of only strings or only "
            'numbers, or {"prefix"|"suffix"|"equals-ignore-case"|"wildcard": ...}, got ["a", 1]',
        ),
        (
            {"payload": {"plan": [{"anything-but": []}]}},
            "payload.plan: anything-but needs at least one value, got []",
        ),
        (
            {"payload": {"plan": [{"anything-but": {"prefix": ""}}]}},
            'payload.plan: anything-but prefix needs a non-empty string, got ""',
        ),
        (
            {"payload": {"plan": [{"anything-but": {"numeric": [">", 1]}}]}},
            "payload.plan: anything-but takes prefix, suffix, equals-ignore-case or wildcard as an "
            'operator, got {"numeric": [">", 1]}',
        ),
        (
            {"payload": {"f": [{"wildcard": "a**"}]}},
            'payload.f: wildcard: consecutive * are not allowed, got "a**"',
        ),
        (
            {"payload": {"f": [{"wildcard": "a\\b"}]}},
            'payload.f: wildcard: a backslash escapes only * or \\, got "a\\\\b"',
        ),
        (
            {"payload": {"$or": [{"a": [1]}]}},
            'payload.$or: needs a list of at least 2 patterns, got [{"a": [1]}]',
        ),
        (
            {"payload": {"$or": {"a": [1]}}},
            'payload.$or: needs a list of at least 2 patterns, got {"a": [1]}',
        ),
        (
            {"payload": {"$or": [{"a": [1]}, "b"]}},
            'payload.$or[1]: each $or branch is a pattern object, got "b"',
        ),
        (
            {"payload": {"$or": [{"a": [1]}, {"b": [{"numeric": []}]}]}},
            "payload.$or[1].b: numeric needs an operator and a number, got []",
        ),
        (
            {"$or": [{"payload": {"a": [1]}}, {"prefix": ["x"]}]},
            '$or[1].prefix: "prefix" is an operator, not a field: to OR operators on one field, '
            'list them in its array ("f": [{"prefix": "a"}, {"numeric": [">", 0]}])',
        ),
        (
            {"paylod": {"a": [1]}},
            "paylod: unknown field (the envelope has event_type, aggregate_id, aggregate_type, "
            "created_by, metadata, payload)",
        ),
        (
            {"payload": ["x"]},
            'payload: payload is an object: name its fields ({"payload": {"field": [...]}})',
        ),
        (
            {"event_type": {"a": [1]}},
            'event_type: event_type is a value: give a list ({"event_type": [...]})',
        ),
        ({"payload": {"v": [float("nan")]}}, "payload.v: a value needs a finite number, got NaN"),
        (
            {"payload": {"v": [{"numeric": ["<", True]}]}},
            'payload.v: numeric needs an operator and a number, got ["<", true]',
        ),
        (
            {"payload": {"v": [{"anything-but": True}]}},
            "payload.v: anything-but takes a string, a number, a list of only strings or only "
            'numbers, or {"prefix"|"suffix"|"equals-ignore-case"|"wildcard": ...}, got true',
        ),
        (
            {"payload": {"v": [{"anything-but": [None]}]}},
            "payload.v: anything-but takes a string, a number, a list of only strings or only "
            'numbers, or {"prefix"|"suffix"|"equals-ignore-case"|"wildcard": ...}, got [null]',
        ),
        (
            {"payload": {"v": [{"x"}]}},
            "payload.v: values are strings, numbers, booleans or null, got \"{'x'}\"",
        ),
    ],
)
def test_messages_name_the_path_and_the_clause(pattern: Any, message: str) -> None:
    assert error(pattern) == message


def test_a_pattern_is_an_object() -> None:
    assert error(["x"]) == 'a pattern is a JSON object, got ["x"]'


def test_caps() -> None:
    deep: dict[str, Any] = {"x": ["y"]}
    for _ in range(10):
        deep = {"k": deep}
    assert error({"payload": deep}).endswith("patterns nest at most 10 levels")
    compile({"payload": {"k": {"k": {"k": {"k": {"k": {"k": {"k": {"k": {"x": [1]}}}}}}}}}})
    assert "at most 100 values" in error({"payload": {"v": list(range(101))}})
    compile({"payload": {"v": list(range(100))}})
    many = {"payload": {f"f{n}": list(range(100)) for n in range(11)}}
    assert error(many).endswith("a pattern holds at most 1000 values")
    assert "capped at 1024 characters" in error({"payload": {"v": ["x" * 1025]}})
    compile({"payload": {"v": ["x" * 1024]}})
    assert "field names are 1 to 256 characters" in error({"payload": {"k" * 257: [1]}})
    branches = [{"v": [n]} for n in range(33)]
    assert error({"payload": {"$or": branches}}) == "payload.$or: takes at most 32 patterns"


def test_any_json_object_with_fields_none() -> None:
    compile({"detail": {"state": ["running"]}}, fields=None)
    compile({"payload": ["not checked"]}, fields=None)


def test_pattern_error_is_a_registry_error_with_its_parts() -> None:
    with pytest.raises(RegistryError) as caught:
        compile({"payload": {"amount": [{"numeric": ["<"]}]}})
    assert isinstance(caught.value, PatternError)
    assert caught.value.path == "payload.amount"
    assert caught.value.problem.startswith("numeric needs")


def test_a_route_names_its_subscription() -> None:
    with pytest.raises(PatternError) as caught:
        Route("award_credits", "intro.completed", {"payload": {"amount": [{"numeric": ["<"]}]}})
    assert str(caught.value) == (
        'award_credits: payload.amount: numeric needs an operator and a number, got ["<"]'
    )
    with pytest.raises(PatternError, match=r"^notify: event type: \* stands alone"):
        Route("notify", "intro.*.done")


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", 'event type: a type pattern is 1 to 100 characters, got ""'),
        ("x" * 101, "event type: a type pattern is 1 to 100 characters, got"),
        (
            "*.completed",
            "event type: * stands alone ('*') or as the whole last segment ('user.*'), got",
        ),
        ("user.*.done", "event type: * stands alone"),
        ("us*", "event type: * stands alone"),
        ("user.**", "event type: * stands alone"),
        (".*", "event type: the segments before .* must not be empty"),
        ("a..*", "event type: the segments before .* must not be empty"),
        (5, "event type: a type pattern is a string, got 5"),
    ],
)
def test_malformed_type_patterns(pattern: Any, message: str) -> None:
    with pytest.raises(PatternError) as caught:
        check_type_pattern(pattern)
    assert str(caught.value).startswith(message)


def test_a_subscription_needs_a_type() -> None:
    with pytest.raises(PatternError, match="at least one event type"):
        TypeMatcher([])
