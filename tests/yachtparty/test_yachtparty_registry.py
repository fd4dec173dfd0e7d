"""The pack's registry and payload models (no database)."""

import uuid

import pytest
from pydantic import ValidationError

from eventproc.registry import load_registry
from yachtparty import registry
from yachtparty.ids import NAMESPACE, derived_id
from yachtparty.models import (
    CommunityRequestNeeded,
    IntroCompleted,
    ResponseReceived,
    SolutionNeeded,
)

EVENT_TYPES = {
    "user.inquiry.solution_needed",
    "community.request_needed",
    "user.intro_inquiry",
    "user.verified",
    "user.message.received",
    "user.response.recorded",
    "conversation.intent_classified",
    "solution.research_complete",
    "intro.completed",
    "community.response_received",
    "account_manager.processing.completed",
}


def test_registry_has_the_11_event_types_each_described() -> None:
    assert set(registry.event_types) == EVENT_TYPES
    assert len(registry) == 12  # user.response.recorded has two subscriptions
    for handler in registry:
        assert handler.description.strip(), handler.event_type
        assert handler.transactional, handler.event_type
        assert handler.payload_model is not None, handler.event_type


def test_intent_classified_is_registered() -> None:
    # (fix) the replaced service had this handler but never registered it.
    assert "conversation.intent_classified" in registry


def test_registry_loads_by_its_default_import_path() -> None:
    assert load_registry("yachtparty:registry") is registry
    assert len(registry.schema_hooks) == 1


def test_derived_ids_are_uuid5_of_event_and_purpose() -> None:
    event_id = uuid.uuid4()
    assert derived_id(event_id, "x") == uuid.uuid5(NAMESPACE, f"{event_id}:x")
    assert derived_id(event_id, "x") == derived_id(event_id, "x")
    assert derived_id(event_id, "x") != derived_id(event_id, "y")
    assert derived_id(event_id, "x") != derived_id(uuid.uuid4(), "x")


def test_description_is_an_alias_of_request_description() -> None:
    ids = {"userId": str(uuid.uuid4()), "conversationId": str(uuid.uuid4())}
    by_alias = SolutionNeeded.model_validate({**ids, "description": "a"})
    by_name = SolutionNeeded.model_validate({**ids, "requestDescription": "b"})
    assert (by_alias.requestDescription, by_name.requestDescription) == ("a", "b")
    with pytest.raises(ValidationError) as caught:
        SolutionNeeded.model_validate(ids)
    assert caught.value.errors()[0]["loc"] == ("requestDescription",)


def test_responder_id_is_an_alias_of_expert_user_id() -> None:
    expert = uuid.uuid4()
    base = {"responseId": str(uuid.uuid4()), "requestId": str(uuid.uuid4()), "responseSummary": "s"}
    assert ResponseReceived.model_validate({**base, "responderId": str(expert)}).expertUserId == (
        expert
    )
    assert ResponseReceived.model_validate({**base, "expertUserId": str(expert)}).expertUserId == (
        expert
    )


def test_bad_uuid_fails_validation() -> None:
    with pytest.raises(ValidationError) as caught:
        SolutionNeeded.model_validate(
            {"userId": "nope", "conversationId": str(uuid.uuid4()), "description": "x"}
        )
    assert caught.value.errors()[0]["loc"] == ("userId",)


def test_request_summary_is_truncated_not_rejected() -> None:
    model = CommunityRequestNeeded.model_validate(
        {"question": "q", "expertiseNeeded": ["ai"], "requestSummary": "x" * 250}
    )
    assert model.requestSummary == "x" * 100
    assert model.desiredOutcome == "backchannel"
    assert model.urgency == "medium"


def test_explicit_nulls_take_the_defaults() -> None:
    model = CommunityRequestNeeded.model_validate(
        {"question": "q", "expertiseNeeded": [], "desiredOutcome": None, "urgency": None}
    )
    assert (model.desiredOutcome, model.urgency) == ("backchannel", "medium")


@pytest.mark.parametrize(
    ("context_id", "expected"),
    [
        ("6a1b0c3e-2f44-4d55-8e66-7f8899aabbcc", uuid.UUID("6a1b0c3e-2f44-4d55-8e66-7f8899aabbcc")),
        ("conversation-42", None),
        (None, None),
    ],
)
def test_context_id_is_kept_only_when_a_uuid(context_id: str | None, expected: object) -> None:
    model = CommunityRequestNeeded.model_validate(
        {"question": "q", "expertiseNeeded": ["ai"], "contextId": context_id}
    )
    assert model.context_uuid == expected


def test_credits_must_be_a_non_negative_int() -> None:
    base = {
        "introId": str(uuid.uuid4()),
        "connectorUserId": str(uuid.uuid4()),
        "completedAt": "2025-06-01T12:00:00Z",
    }
    assert IntroCompleted.model_validate({**base, "creditsAwarded": 0}).creditsAwarded == 0
    with pytest.raises(ValidationError):
        IntroCompleted.model_validate({**base, "creditsAwarded": -1})
    naive = IntroCompleted.model_validate(
        {**base, "completedAt": "2025-06-01T12:00:00", "creditsAwarded": 5}
    )
    assert naive.completedAt.utcoffset() is not None
