"""Explanations: why a pattern matched, or which clause failed and why.

Words a person reads (one line per check) and a structure an admin API can
return as JSON (path, clause, expected, actual, present, matched, reason;
``branches`` for $or and for arrays of objects). Every check is reported, not
only the first failure, and ``explain(e).matched`` is ``matches(e)``.
"""

import json
from typing import Any

from eventproc.routing import Route, Router, compile, envelope


def explain(pattern: dict[str, Any], payload: dict[str, Any], **columns: Any) -> Any:
    matcher = compile(pattern)
    event = envelope("intro.completed", payload, **columns)
    explanation = matcher.explain(event)
    assert explanation.matched is matcher.matches(event)
    json.dumps(explanation.as_dict())  # always JSON
    return explanation


def test_the_issue_examples() -> None:
    explanation = explain(
        {"payload": {"plan": ["pro", "team"]}, "metadata": {"region": [{"exists": True}]}},
        {"plan": "free"},
    )
    assert not explanation
    assert [check.reason for check in explanation.checks] == [
        'payload.plan: "free" is not one of ["pro", "team"]',
        "metadata.region: missing (exists: true)",
    ]
    assert explanation.reason == 'payload.plan: "free" is not one of ["pro", "team"]'
    first = explanation.as_dict()["checks"][0]
    assert first == {
        "path": "payload.plan",
        "clause": 'one of ["pro", "team"]',
        "matched": False,
        "reason": 'payload.plan: "free" is not one of ["pro", "team"]',
        "expected": ["pro", "team"],
        "actual": "free",
        "present": True,
    }
    missing = explanation.as_dict()["checks"][1]
    assert (missing["present"], missing["actual"], missing["expected"]) == (
        False,
        None,
        [{"exists": True}],
    )


def test_why_it_matched() -> None:
    explanation = explain(
        {
            "payload": {
                "plan": ["pro", {"prefix": "ent"}],
                "seats": [{"numeric": [">", 0, "<=", 50]}],
            }
        },
        {"plan": "enterprise", "seats": 12},
    )
    assert explanation.matched and explanation.failures == ()
    assert explanation.reason == (
        'matched: payload.plan: "enterprise" starts with "ent"; payload.seats: 12 is > 0 and <= 50'
    )
    assert str(explanation).splitlines() == [
        "matched",
        '  pass  payload.plan: "enterprise" starts with "ent"',
        "  pass  payload.seats: 12 is > 0 and <= 50",
    ]


def test_one_reason_per_operator() -> None:
    cases = [
        ([{"numeric": ["<", 10]}], 12, "payload.v: 12 is not < 10"),
        ([{"numeric": ["=", 3]}], 4, "payload.v: 4 is not equal to 3"),
        ([{"numeric": ["<", 10]}], "5", 'payload.v: "5" is not a number (numeric < 10)'),
        (
            [{"numeric": [">", 0]}],
            6e9,
            "payload.v: 6000000000.0 is outside ±5e+09, where numeric matching stops (numeric > 0)",
        ),
        ([5], "5", 'payload.v: "5" is not 5 (a string never equals a number, boolean or null)'),
        (["5"], 5, 'payload.v: 5 is not "5" (a number, boolean or null never equals a string)'),
        ([{"prefix": "ord-"}], "inv-1", 'payload.v: "inv-1" does not start with "ord-"'),
        ([{"prefix": "ord-"}], 7, 'payload.v: 7 is not a string (prefix "ord-")'),
        (
            [{"suffix": {"equals-ignore-case": ".PNG"}}],
            "a.jpg",
            'payload.v: "a.jpg" does not end with ".PNG" (ignoring case)',
        ),
        (
            [{"equals-ignore-case": "alice"}],
            "bob",
            'payload.v: "bob" is not "alice" (ignoring case)',
        ),
        (
            [{"wildcard": "dir/*.png"}],
            "x.png",
            'payload.v: "x.png" does not match wildcard "dir/*.png"',
        ),
        ([{"anything-but": ["a", "b"]}], "b", 'payload.v: "b" is one of ["a", "b"] (anything-but)'),
        (
            [{"anything-but": {"prefix": "us-"}}],
            "us-east-1",
            'payload.v: "us-east-1" starts with "us-" (anything-but)',
        ),
        ([{"exists": False}], 1, "payload.v: 1 is present (exists: false)"),
        (["a", {"prefix": "b"}], "c", 'payload.v: "c" is not "a" and does not start with "b"'),
        (["a"], ["x", "y"], 'payload.v: no element of ["x", "y"] matches equals "a"'),
        (["a"], [], 'payload.v: [] holds no values (equals "a")'),
        (["a"], {"k": 1}, 'payload.v: an object, not a value (equals "a")'),
    ]
    for clauses, value, reason in cases:
        explanation = explain({"payload": {"v": clauses}}, {"v": value})
        assert not explanation.matched
        assert explanation.reason == reason


def test_missing_fields_say_what_was_asked() -> None:
    explanation = explain({"payload": {"state": [{"anything-but": "initializing"}]}}, {})
    assert explanation.reason == (
        'payload.state: missing (anything-but "initializing"); '
        "anything-but needs the field to be present"
    )
    assert explain({"payload": {"v": [{"exists": False}]}}, {}).reason == (
        "matched: payload.v: missing (exists: false)"
    )


def test_or_reports_every_branch() -> None:
    explanation = explain(
        {"payload": {"$or": [{"plan": ["pro"]}, {"seats": [{"numeric": [">=", 10]}]}]}},
        {"plan": "free", "seats": 3},
    )
    assert explanation.reason == "payload.$or: none of its 2 branches matched"
    assert str(explanation).splitlines() == [
        "did not match",
        "  FAIL  payload.$or: none of its 2 branches matched",
        "        #1:",
        '          FAIL  payload.plan: "free" is not "pro"',
        "        #2:",
        "          FAIL  payload.seats: 3 is not >= 10",
    ]
    branches = explanation.as_dict()["checks"][0]["branches"]
    assert [[check["path"] for check in branch] for branch in branches] == [
        ["payload.plan"],
        ["payload.seats"],
    ]
    matched = explain(
        {"payload": {"$or": [{"plan": ["pro"]}, {"seats": [{"numeric": [">=", 10]}]}]}},
        {"plan": "free", "seats": 30},
    )
    assert matched.reason == "matched: payload.$or: branch #2 of 2 matched"


def test_arrays_of_objects_name_the_element() -> None:
    pattern = {"payload": {"items": {"sku": ["A"], "qty": [{"numeric": [">", 1]}]}}}
    found = explain(pattern, {"items": [{"sku": "B", "qty": 5}, {"sku": "A", "qty": 2}]})
    assert [check.path for check in found.checks] == [
        "payload.items[1].sku",
        "payload.items[1].qty",
    ]
    none = explain(pattern, {"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 5}]})
    assert none.reason == "payload.items: none of its 2 objects matches"
    (check,) = none.checks
    assert [[c.matched for c in element] for element in check.branches] == [
        [True, False],
        [False, True],
    ]
    many = explain(pattern, {"items": [{"sku": "B"}] * 7})
    assert many.reason == "payload.items: none of its 7 objects matches (the first 5 are shown)"
    assert len(many.checks[0].branches) == 5


def test_long_values_are_cut() -> None:
    explanation = explain({"payload": {"v": ["x"]}}, {"v": "y" * 500})
    assert len(explanation.reason) < 120
    assert explanation.reason.endswith('… is not "x"')
    assert explanation.checks[0].actual == "y" * 500  # the structure keeps it whole


def test_a_router_explains_every_subscription() -> None:
    router = Router(
        [
            Route(
                "award_credits",
                "intro.completed",
                {"payload": {"credits": [{"numeric": [">", 0]}]}},
            ),
            Route("notify", ["intro.*"]),
            Route("analytics", "*"),
            Route("webhook", "user.*", {"payload": {"plan": ["pro"]}}),
        ]
    )
    event = envelope("intro.completed", {"credits": 0})
    assert router.route(event) == ["notify", "analytics"]
    explained = router.explain(event)
    assert {name: e.matched for name, e in explained.items()} == {
        "award_credits": False,
        "notify": True,
        "analytics": True,
        "webhook": False,
    }
    assert [c.reason for c in explained["award_credits"].checks] == [
        'event_type: "intro.completed" is subscribed',
        "payload.credits: 0 is not > 0",
    ]
    assert explained["notify"].reason == 'matched: event_type: "intro.completed" matches "intro.*"'
    assert explained["webhook"].reason == (
        'event_type: "intro.completed" is not among the subscribed types ["user.*"]'
    )
    assert len(explained["webhook"].checks) == 1  # the filter is not consulted
    json.dumps({name: e.as_dict() for name, e in explained.items()})
