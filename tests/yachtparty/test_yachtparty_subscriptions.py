"""The pack's subscription names: the ones existing dead letters already carry (no database)."""

import uuid

import pytest

from eventproc import Event
from yachtparty import registry

# event_dead_letters.handler as earlier releases wrote it (the function's dotted name).
RECORDED_NAMES = {
    "user.inquiry.solution_needed": "yachtparty.handlers.solution_needed",
    "community.request_needed": "yachtparty.handlers.community_request_needed",
    "user.intro_inquiry": "yachtparty.handlers.intro_inquiry",
    "user.verified": "yachtparty.handlers.user_verified",
    "user.message.received": "yachtparty.handlers.message_received",
    "user.response.recorded": "yachtparty.handlers.response_recorded",
    "conversation.intent_classified": "yachtparty.handlers.intent_classified",
    "solution.research_complete": "yachtparty.handlers.research_complete",
    "intro.completed": "yachtparty.handlers.intro_completed",
    "community.response_received": "yachtparty.handlers.response_received",
    "account_manager.processing.completed": "yachtparty.handlers.processing_completed",
}

# Split off a handler since (issue 14): a new name of its own, and its filter.
SPLIT_OFF = {
    "yachtparty.handlers.response_rejected": (
        "user.response.recorded",
        {"payload": {"responseType": ["rejection"]}},
    ),
}


def test_each_type_keeps_its_recorded_name_and_the_split_halves_have_new_ones() -> None:
    by_name = {entry.name: entry for entry in registry}
    assert set(by_name) == set(RECORDED_NAMES.values()) | set(SPLIT_OFF)
    assert len(registry) == 12
    for event_type, name in RECORDED_NAMES.items():
        # The recorded name stays on an unfiltered subscription of its type.
        assert (by_name[name].types, by_name[name].filter) == ((event_type,), None)
    for name, (event_type, pattern) in SPLIT_OFF.items():
        assert (by_name[name].types, by_name[name].filter) == ((event_type,), pattern)
    for entry in registry:
        assert entry.name == f"{entry.func.__module__}.{entry.func.__qualname__}"
        assert registry.subscription(entry.name) is entry


@pytest.mark.parametrize(
    ("response_type", "expected"),
    [
        ("rejection", ["response_recorded", "response_rejected"]),
        ("feedback", ["response_recorded"]),
        ("acceptance", ["response_recorded"]),
        ("clarification", ["response_recorded"]),
        ("Rejection", ["response_recorded"]),  # the model refuses it: one dead letter
    ],
)
def test_only_a_rejection_also_goes_to_the_rejection_half(
    response_type: str, expected: list[str]
) -> None:
    event = Event(uuid.uuid4(), "user.response.recorded", {"responseType": response_type})
    names = [entry.name for entry in registry.route(event)]
    assert names == [f"yachtparty.handlers.{name}" for name in expected]
