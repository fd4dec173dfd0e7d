"""The pack's subscription names: the ones existing dead letters already carry (no database)."""

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


def test_each_type_has_one_subscription_under_its_recorded_name() -> None:
    assert {entry.event_type: entry.name for entry in registry} == RECORDED_NAMES
    for entry in registry:
        assert entry.types == (entry.event_type,) and entry.filter is None
        assert entry.name == f"{entry.func.__module__}.{entry.func.__qualname__}"
        assert registry.subscription(entry.name) is entry
