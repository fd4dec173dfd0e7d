"""An invalid payload is dead-lettered at once, naming the bad field, and writes nothing."""

import uuid
from typing import Any

import pytest

from yachtparty.tables import metadata


def _id() -> str:
    return str(uuid.uuid4())


VALID: dict[str, dict[str, Any]] = {
    "user.inquiry.solution_needed": {
        "userId": _id(),
        "conversationId": _id(),
        "requestDescription": "Need a CRM",
    },
    "community.request_needed": {"question": "q", "expertiseNeeded": ["ai"]},
    "user.intro_inquiry": {"userId": _id(), "userQuestion": "?", "conversationId": _id()},
    "user.verified": {
        "userId": _id(),
        "verificationCompletedAt": "2025-06-01T12:00:00Z",
        "pocAgentType": "concierge",
    },
    "user.message.received": {
        "userId": _id(),
        "conversationId": _id(),
        "message": "hi",
        "phoneNumber": "+15550000000",
        "messageId": "SM1",
    },
    "user.response.recorded": {
        "userId": _id(),
        "conversationId": _id(),
        "responseType": "feedback",
        "context": "offer",
        "response": "ok",
    },
    "conversation.intent_classified": {"conversationId": _id(), "intent": "x", "confidence": 0.5},
    "solution.research_complete": {
        "workflowId": _id(),
        "userId": _id(),
        "requestDescription": "r",
        "findings": {"matchedInnovators": []},
        "completedAt": "2025-06-01T12:00:00Z",
    },
    "intro.completed": {
        "introId": _id(),
        "connectorUserId": _id(),
        "completedAt": "2025-06-01T12:00:00Z",
        "creditsAwarded": 10,
    },
    "community.response_received": {
        "responseId": _id(),
        "requestId": _id(),
        "expertUserId": _id(),
        "responseSummary": "s",
    },
    "account_manager.processing.completed": {
        "userId": _id(),
        "processedEvents": 1,
        "urgentItems": 0,
        "prioritiesUpdated": 0,
        "tasksCreated": 0,
        "completedAt": "2025-06-01T12:00:00Z",
    },
}

MISSING = object()

# (event type, field, bad value or MISSING, the name the message must give)
CASES = [
    ("user.inquiry.solution_needed", "requestDescription", MISSING, "requestDescription"),
    ("user.inquiry.solution_needed", "userId", "not-a-uuid", "userId"),
    ("user.inquiry.solution_needed", "urgency", "extreme", "urgency"),
    ("community.request_needed", "expertiseNeeded", "ai", "expertiseNeeded"),
    ("community.request_needed", "question", MISSING, "question"),
    ("community.request_needed", "requestingUserId", "42", "requestingUserId"),
    ("user.intro_inquiry", "introId", "nope", "introId"),
    ("user.intro_inquiry", "userQuestion", MISSING, "userQuestion"),
    ("user.verified", "pocAgentType", "robot", "pocAgentType"),
    ("user.verified", "verificationCompletedAt", "yesterday", "verificationCompletedAt"),
    ("user.message.received", "messageId", MISSING, "messageId"),
    ("user.message.received", "conversationId", "c-1", "conversationId"),
    ("user.response.recorded", "responseType", "maybe", "responseType"),
    ("user.response.recorded", "response", MISSING, "response"),
    ("conversation.intent_classified", "confidence", 1.5, "confidence"),
    ("conversation.intent_classified", "conversationId", MISSING, "conversationId"),
    ("solution.research_complete", "findings", {"notes": "x"}, "findings.matchedInnovators"),
    ("solution.research_complete", "workflowId", "wf-1", "workflowId"),
    ("intro.completed", "creditsAwarded", -5, "creditsAwarded"),
    ("intro.completed", "introId", MISSING, "introId"),
    ("community.response_received", "requestId", "r-1", "requestId"),
    ("community.response_received", "expertUserId", MISSING, "expertUserId"),
    ("account_manager.processing.completed", "userId", "u-1", "userId"),
    ("account_manager.processing.completed", "urgentItems", "many", "urgentItems"),
]


def test_every_handler_has_invalid_payload_cases() -> None:
    assert {case[0] for case in CASES} == set(VALID)


@pytest.mark.parametrize(
    ("event_type", "field", "value", "named"), CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES]
)
async def test_invalid_payload_is_dead_lettered_at_once(
    yp: Any, event_type: str, field: str, value: object, named: str
) -> None:
    payload = dict(VALID[event_type])
    if value is MISSING:
        del payload[field]
    else:
        payload[field] = value
    event = await yp.handle(event_type, payload)
    assert (event.outcome, event.attempts) == ("dead_lettered", 1)
    letter = await yp.dead_letter(event.id)
    assert letter.error_message.startswith(f"Invalid payload for {event_type}: ")
    assert f"{named}:" in letter.error_message
    assert letter.retry_count == 1
    assert letter.payload == payload
    snapshot = await yp.snapshot()
    assert all(snapshot[table.name] == [] for table in metadata.sorted_tables)
    assert [row["id"] for row in snapshot["events"]] == [event.id]  # no follow-ups
