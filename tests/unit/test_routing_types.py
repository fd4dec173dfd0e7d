"""Event-type patterns, routes, the router's index, and the envelope a filter sees.

Type patterns: an exact name; ``user.*`` for every type below ``user.``
(one or more further segments, never ``user`` itself); ``*`` for all. A
star anywhere else is refused (test_routing_errors.py).
"""

import uuid

import pytest

from eventproc import Event
from eventproc.routing import PatternError, Route, Router, TypeMatcher, envelope, envelope_of


@pytest.mark.parametrize(
    ("patterns", "event_type", "expected"),
    [
        (["intro.completed"], "intro.completed", True),
        (["intro.completed"], "intro.completed.v2", False),
        (["intro.completed"], "intro", False),
        (["user.*"], "user.created", True),
        (["user.*"], "user.profile.updated", True),  # one or more segments
        (["user.*"], "user", False),
        (["user.*"], "users.created", False),
        (["user.*"], "user.", False),  # nothing after the dot
        (["user.profile.*"], "user.profile.updated", True),
        (["user.profile.*"], "user.created", False),
        (["*"], "anything.at.all", True),
        (["*"], "x", True),
        (["a.b", "user.*"], "a.b", True),
        (["a.b", "user.*"], "user.x", True),
        (["a.b", "user.*"], "a.c", False),
        (["Intro.Completed"], "intro.completed", False),  # case-sensitive
    ],
)
def test_type_patterns(patterns: list[str], event_type: str, expected: bool) -> None:
    assert TypeMatcher(patterns).matches(event_type) is expected


def test_which_pattern_takes_a_type() -> None:
    matcher = TypeMatcher(["intro.completed", "intro.*", "*"])
    assert matcher.which("intro.completed") == "intro.completed"
    assert matcher.which("intro.started") == "intro.*"
    assert matcher.which("user.created") == "*"
    assert TypeMatcher(["a"]).which("b") is None


def test_an_exact_type_may_hold_any_characters_but_a_star() -> None:
    """The registry has always accepted any 1-100 characters; only * means more."""
    assert TypeMatcher(["Intro Completed/v1 (legacy)"]).matches("Intro Completed/v1 (legacy)")


def test_routes_in_registration_order_with_their_filters() -> None:
    router = Router(
        [
            Route(
                "award_credits",
                "intro.completed",
                {"payload": {"credits": [{"numeric": [">", 0]}]}},
            ),
            Route("notify_both", "intro.completed"),
            Route("analytics", "*"),
            Route("users", "user.*"),
        ]
    )
    assert router.route(envelope("intro.completed", {"credits": 5})) == [
        "award_credits",
        "notify_both",
        "analytics",
    ]
    assert router.route(envelope("intro.completed", {"credits": 0})) == ["notify_both", "analytics"]
    assert router.route(envelope("user.created", {})) == ["analytics", "users"]
    assert [route.name for route in router.candidates("intro.completed")] == [
        "award_credits",
        "notify_both",
        "analytics",
    ]
    assert router.candidates("intro.completed") is router.candidates("intro.completed")  # cached


def test_a_route_without_a_filter_takes_every_event_of_its_types() -> None:
    route = Route("h", ["a.b"])
    assert route.filter is None
    assert route.matches(envelope("a.b", {"anything": 1}))
    assert not route.matches(envelope("a.c", {}))


def test_subscription_names_are_unique() -> None:
    with pytest.raises(PatternError, match=r"names must be unique, got \['h'\] twice"):
        Router([Route("h", "a"), Route("h", "b")])


def test_the_cache_is_bounded() -> None:
    router = Router([Route("all", "*")])
    for number in range(5_000):
        router.candidates(f"type.{number}")
    assert len(router._cache) <= 4_096


def test_the_envelope() -> None:
    aggregate = uuid.UUID("00000000-0000-0000-0000-000000000007")
    event = Event(
        id=uuid.uuid4(),
        event_type="intro.completed",
        payload={"credits": 3},
        aggregate_id=aggregate,
        aggregate_type="intro",
        metadata={"region": "eu"},
        created_by="api",
    )
    assert envelope_of(event) == {
        "event_type": "intro.completed",
        "aggregate_id": "00000000-0000-0000-0000-000000000007",
        "aggregate_type": "intro",
        "created_by": "api",
        "metadata": {"region": "eu"},
        "payload": {"credits": 3},
    }
    bare = envelope_of(Event(id=uuid.uuid4(), event_type="x", payload={}))
    assert bare == {"event_type": "x", "metadata": {}, "payload": {}}  # NULL columns are missing
