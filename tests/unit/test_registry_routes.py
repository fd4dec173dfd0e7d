"""The Registry's subscriptions: registration, one-line errors, route(), explain() (no database)."""

import uuid
from typing import Any

import pytest

from eventproc import Event, HandlerContext, Registry
from eventproc import registry as registry_module
from eventproc.errors import RegistryError
from eventproc.registry import Handler
from eventproc.routing import envelope, envelope_of


async def noop(event: Event, ctx: HandlerContext) -> None:
    return None


def event(event_type: str, payload: dict[str, Any] | None = None, **fields: Any) -> Event:
    return Event(uuid.uuid4(), event_type, payload or {}, **fields)


def names(handlers: tuple[Handler, ...] | list[Handler]) -> list[str]:
    return [handler.name for handler in handlers]


def fan_out() -> Registry:
    """Four subscriptions, two with filters, in a deliberate registration order."""
    registry = Registry()
    registry.register("intro.completed", noop, name="credits")
    registry.register(
        "intro.completed", noop, name="pro_only", filter={"payload": {"plan": ["pro"]}}
    )
    registry.register(["user.*", "intro.*"], noop, name="analytics")
    registry.register("*", noop, name="audit", filter={"created_by": [{"prefix": "svc-"}]})
    return registry


# -- registration ---------------------------------------------------------------------


def test_a_handler_registered_as_before_keeps_its_name_and_type() -> None:
    registry = Registry()

    @registry.handler("a.b", description="does a", transactional=True, timeout_seconds=2)
    async def handle(event: Event, ctx: HandlerContext) -> None:
        return None

    [entry] = list(registry)
    assert entry.name == f"{handle.__module__}.{handle.__qualname__}"  # as before, exactly
    test_name = test_a_handler_registered_as_before_keeps_its_name_and_type.__name__
    assert entry.name == f"{__name__}.{test_name}.<locals>.handle"
    assert entry.types == ("a.b",) and entry.event_type == "a.b" and entry.filter is None
    assert entry.func is handle and entry.transactional and entry.timeout_seconds == 2
    assert entry.description == "does a" and entry.payload_model is None


def test_a_subscription_takes_several_types_a_name_and_a_filter() -> None:
    registry = Registry()
    pattern = {"payload": {"plan": ["pro", "team"]}}
    entry = registry.register(["user.*", "intro.completed"], noop, name="n", filter=pattern)
    assert entry.name == "n" and entry.types == ("user.*", "intro.completed")
    assert entry.event_type == "user.*" and entry.filter == pattern
    assert registry.subscription("n") is entry and registry.subscription("other") is None


def test_the_filter_is_a_copy_so_later_changes_to_the_callers_dict_do_nothing() -> None:
    registry = Registry()
    pattern: dict[str, Any] = {"payload": {"plan": ["pro"]}}
    entry = registry.register("a.b", noop, name="n", filter=pattern)
    pattern["payload"]["plan"].append("free")
    assert entry.filter == {"payload": {"plan": ["pro"]}}
    assert registry.route(event("a.b", {"plan": "free"})) == ()


def test_repeated_types_are_kept_once_in_order() -> None:
    entry = Registry().register(["b.x", "a.x", "b.x"], noop, name="n")
    assert entry.types == ("b.x", "a.x")


def test_handlers_compare_by_their_fields_and_hash_with_a_filter() -> None:
    one = Registry().register("a.b", noop, name="n", filter={"payload": {"k": [1]}})
    two = Registry().register("a.b", noop, name="n", filter={"payload": {"k": [1]}})
    assert one == two and hash(one) == hash(two) and len({one, two}) == 1


# -- errors: one line naming the subscription and the clause ------------------------


@pytest.mark.parametrize(
    ("types", "pattern", "message"),
    [
        (
            "a.b",
            {"payload": {"plan": "pro"}},
            "handler 'award': filter payload.plan: a field takes a list of values or an "
            'object, got "pro"',
        ),
        (
            "a.b",
            {"paylod": {"plan": ["pro"]}},
            "handler 'award': filter paylod: unknown field (the envelope has event_type, "
            "aggregate_id, aggregate_type, created_by, metadata, payload)",
        ),
        (
            "a.b",
            {"payload": {"n": [{"numeric": [">", "3"]}]}},
            "handler 'award': filter payload.n: numeric",
        ),
        (
            "a.b",
            {"payload": {"n": [{"regex": "x+"}]}},
            "handler 'award': filter payload.n: unknown operator \"regex\"",
        ),
        ("a.b", ["not", "an", "object"], "handler 'award': filter: a pattern is a JSON object"),
        ("a.b", {}, "handler 'award': filter pattern: an empty object matches nothing"),
        ("us*", None, "handler 'award': event type: * stands alone"),
        ([], None, "handler 'award': event type: a subscription needs at least one event type"),
        ("", None, "handler 'award': event type: a type pattern is 1 to 100 characters"),
        (5, None, "handler 'award': event type: types are a string or a list of strings"),
        (["a.b", 7], None, "handler 'award': event type: a type pattern is a string, got 7"),
        ([["a.b"]], None, "handler 'award': event type: a type pattern is a string, got [\"a.b\"]"),
    ],
)
def test_a_bad_type_or_filter_is_one_line_naming_the_handler_and_the_clause(
    types: Any, pattern: Any, message: str
) -> None:
    registry = Registry()
    with pytest.raises(RegistryError) as caught:
        registry.register(types, noop, name="award", filter=pattern)
    text = str(caught.value)
    assert text.startswith(message), text
    assert "\n" not in text
    assert len(registry) == 0  # nothing half-registered


def test_the_decorator_raises_the_same_error_at_import() -> None:
    registry = Registry()
    with pytest.raises(RegistryError, match=r"^handler 'x': filter payload\.k: "):

        @registry.handler("a.b", name="x", filter={"payload": {"k": 1}})
        async def handle(event: Event, ctx: HandlerContext) -> None:
            return None


def test_a_duplicate_name_is_refused_and_names_it() -> None:
    registry = Registry()
    registry.register("a.b", noop, name="credits")
    with pytest.raises(RegistryError, match=r"^handler 'credits' is registered already"):
        registry.register("c.d", noop, name="credits")
    assert names(list(registry)) == ["credits"]


@pytest.mark.parametrize("name", ["", " padded", "x\n", 3])
def test_a_name_must_be_a_plain_non_empty_string(name: Any) -> None:
    with pytest.raises(RegistryError, match="a handler's name is a non-empty string"):
        Registry().register("a.b", noop, name=name)


def test_a_timeout_must_be_positive_and_the_error_names_the_handler() -> None:
    with pytest.raises(RegistryError, match=r"^handler 'slow': timeout_seconds must be > 0"):
        Registry().register("a.b", noop, name="slow", timeout_seconds=0)


def test_include_refuses_a_clash_before_adding_anything() -> None:
    pack, app = Registry(), Registry()
    pack.register("p.x", noop, name="first")
    pack.register("p.y", noop, name="shared")
    app.register("a.b", noop, name="shared")
    with pytest.raises(RegistryError, match="registered in both registries: shared"):
        app.include(pack)
    assert names(list(app)) == ["shared"] and app.event_types == ["a.b"]


# -- route() ------------------------------------------------------------------------


def test_route_returns_the_subscriptions_taking_an_event_in_registration_order() -> None:
    registry = fan_out()
    pro = event("intro.completed", {"plan": "pro"}, created_by="svc-intros")
    assert names(registry.route(pro)) == ["credits", "pro_only", "analytics", "audit"]
    free = event("intro.completed", {"plan": "free"})
    assert names(registry.route(free)) == ["credits", "analytics"]
    assert names(registry.route(event("user.verified"))) == ["analytics"]
    assert names(registry.route(event("user"))) == []  # user.* takes what is below user only
    assert names(registry.route(event("billing.x", created_by="svc-b"))) == ["audit"]
    assert registry.route(event("billing.x")) == ()


def test_route_builds_no_envelope_when_no_candidate_has_a_filter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[str] = []

    def counting(given: Event) -> dict[str, Any]:
        built.append(given.event_type)
        return envelope_of(given)

    monkeypatch.setattr(registry_module, "envelope_of", counting)
    registry = fan_out()
    registry.register("plain.x", noop, name="plain")
    assert names(registry.route(event("plain.x"))) == ["plain"]
    assert built == ["plain.x"]  # audit ("*") has a filter: one envelope for it
    plain_only = Registry()
    plain_only.register("a.b", noop, name="one")
    plain_only.register("a.*", noop, name="two")
    for _ in range(3):
        assert names(plain_only.route(event("a.b"))) == ["one", "two"]
    assert built == ["plain.x"]  # no filter among the candidates: no envelope at all
    assert names(registry.route(event("intro.completed", {"plan": "pro"}))) == [
        "credits",
        "pro_only",
        "analytics",
    ]
    assert built == ["plain.x", "intro.completed"]  # one envelope for two filters


def test_route_caches_candidates_per_type_and_returns_the_same_tuple() -> None:
    plain = Registry()
    plain.register("a.b", noop, name="one")
    first = plain.route(event("a.b"))
    assert plain.route(event("a.b")) is first  # cached: nothing rebuilt


def test_register_and_include_invalidate_the_cache() -> None:
    registry = Registry()
    registry.register("a.b", noop, name="one")
    assert names(registry.route(event("a.b"))) == ["one"]
    assert registry.get("a.c") is None and "a.c" not in registry
    registry.register("a.*", noop, name="wide", filter={"payload": {"k": [1]}})
    assert names(registry.route(event("a.b", {"k": 1}))) == ["one", "wide"]
    assert names(registry.route(event("a.b", {"k": 2}))) == ["one"]
    assert registry.get("a.c") is not None and "a.c" in registry
    pack = Registry()
    pack.register("*", noop, name="audit")
    registry.include(pack)
    assert names(registry.route(event("a.b", {"k": 2}))) == ["one", "audit"]
    assert names(registry.route(event("z"))) == ["audit"]


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "_CACHE_LIMIT", 3)
    registry = Registry()
    registry.register("*", noop, name="all")
    for number in range(10):
        assert names(registry.route(event(f"t.{number}"))) == ["all"]
        assert len(registry._candidates) <= 3


def test_filters_see_the_whole_envelope() -> None:
    registry = Registry()
    aggregate = uuid.uuid4()
    registry.register(
        "*",
        noop,
        name="picky",
        filter={
            "aggregate_id": [str(aggregate)],
            "aggregate_type": ["user"],
            "metadata": {"source": [{"equals-ignore-case": "API"}]},
            "payload": {"n": [{"numeric": [">=", 2, "<", 5]}]},
        },
    )
    taken = event(
        "x.y", {"n": 3}, aggregate_id=aggregate, aggregate_type="user", metadata={"source": "api"}
    )
    assert names(registry.route(taken)) == ["picky"]
    missed = event("x.y", {"n": 3}, aggregate_type="user", metadata={"source": "api"})
    assert registry.route(missed) == ()


# -- get, contains, len, iter, event_types --------------------------------------------


def test_get_is_the_first_subscription_whose_types_take_the_type_filters_aside() -> None:
    registry = fan_out()
    first = registry.get("intro.completed")
    assert first is not None and first.name == "credits"
    below = registry.get("user.verified")
    assert below is not None and below.name == "analytics"
    anything = registry.get("billing.x")  # audit's filter is not asked
    assert anything is not None and anything.name == "audit"


def test_len_iter_contains_and_event_types() -> None:
    registry = fan_out()
    assert len(registry) == 4
    assert names(list(registry)) == ["credits", "pro_only", "analytics", "audit"]
    assert registry.event_types == ["intro.completed", "user.*", "intro.*", "*"]
    assert "billing.x" in registry and 5 not in registry
    narrow = Registry()
    narrow.register("user.*", noop, name="u")
    assert "user.created" in narrow and "user" not in narrow and "intro.x" not in narrow


# -- explain() --------------------------------------------------------------------------


def test_explain_names_every_subscription_and_the_clause_that_failed() -> None:
    registry = fan_out()
    given = event("intro.completed", {"plan": "free"}, created_by="web")
    explained = registry.explain(given)
    assert names([entry for entry, _ in explained]) == [
        "credits",
        "pro_only",
        "analytics",
        "audit",
    ]
    verdicts = {entry.name: why for entry, why in explained}
    assert verdicts["credits"].matched and verdicts["analytics"].matched
    [plan] = verdicts["pro_only"].failures
    assert (plan.path, plan.clause, plan.actual) == ("payload.plan", 'equals "pro"', "free")
    assert verdicts["pro_only"].reason == 'payload.plan: "free" is not "pro"'
    [prefix] = verdicts["audit"].failures
    assert prefix.path == "created_by" and "svc-" in prefix.reason
    assert [e.name for e, why in explained if why.matched] == names(registry.route(given))


def test_explain_takes_an_envelope_and_says_when_the_type_is_not_taken() -> None:
    registry = fan_out()
    explained = dict((entry.name, why) for entry, why in registry.explain(envelope("billing.x")))
    assert not explained["credits"].matched
    [check] = explained["credits"].checks  # the filter is not reached
    assert check.path == "event_type" and "not among the subscribed types" in check.reason
    assert not explained["audit"].matched and explained["audit"].failures[0].path == "created_by"
