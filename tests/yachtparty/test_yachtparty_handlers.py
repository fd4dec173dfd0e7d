"""Each of the 11 handlers through the real processor, on SQLite and PostgreSQL.

For every handler: the rows it writes (every column the contract names), the
follow-up events it publishes, and that a replay of the same event changes
nothing. Invalid payloads are in test_yachtparty_invalid.py, the multi-step
stories in test_yachtparty_workflows.py.
"""

import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from yachtparty import cache
from yachtparty.ids import derived_id
from yachtparty.tables import (
    agent_actions_log,
    agent_tasks,
    community_requests,
    conversations,
    credit_events,
    intro_opportunities,
    solution_workflows,
    users,
)

TASK_DEFAULTS = {
    "status": "pending",
    "created_by": "event_processor",
    "retry_count": 0,
    "max_retries": 3,
    "result_json": None,
    "error_log": None,
    "completed_at": None,
}


async def assert_task(yp: Any, event_id: uuid.UUID, purpose: str, **expected: Any) -> dict:
    """The task the event created for ``purpose``, checked column by column."""
    row = await yp.one(agent_tasks, agent_tasks.c.id == derived_id(event_id, f"task:{purpose}"))
    expected.setdefault("context_id", None)
    expected.setdefault("context_type", None)
    for key, value in (TASK_DEFAULTS | expected).items():
        assert row[key] == value, f"agent_tasks.{key}"
    assert row["context_json"]["eventId"] == str(event_id)
    return row


async def assert_follow_up(
    yp: Any,
    source_id: uuid.UUID,
    event_type: str,
    *,
    aggregate_type: str | None,
    aggregate_id: uuid.UUID | None,
    payload: dict[str, Any],
) -> None:
    event = await yp.event(derived_id(source_id, f"event:{event_type}"))
    assert event.event_type == event_type
    assert (event.aggregate_type, event.aggregate_id) == (aggregate_type, aggregate_id)
    assert event.payload == payload
    assert (event.created_by, event.version) == ("event_processor", 1)
    assert event.outcome == "skipped"  # the pack has no handler for its follow-ups


async def tasks(yp: Any) -> list[dict]:
    return await yp.rows(agent_tasks)


async def succeeded(yp: Any, event_type: str, payload: dict[str, Any], **fields: Any) -> Any:
    event = await yp.handle(event_type, payload, **fields)
    assert event.outcome == "succeeded", event.metadata
    assert event.attempts == 1
    return event


def in_window(value: datetime, before: datetime, after: datetime) -> bool:
    return before <= value <= after


# -- 1. user.inquiry.solution_needed --------------------------------------------------


@pytest.mark.parametrize(
    ("urgency", "priority"), [("high", "high"), ("low", "medium"), (None, "medium")]
)
async def test_solution_needed_creates_a_research_task(
    yp: Any, urgency: str | None, priority: str
) -> None:
    user_id = await yp.add_user()
    conversation_id = await yp.add_conversation(user_id)
    before = await yp.db_now()
    payload = {
        "userId": str(user_id),
        "conversationId": str(conversation_id),
        "description": "Need a CRM",  # the accepted alias
        "category": "crm",
        "urgency": urgency,
    }
    event = await succeeded(yp, "user.inquiry.solution_needed", payload)
    after = await yp.db_now()

    task = await assert_task(
        yp,
        event.id,
        "research_solution",
        task_type="research_solution",
        agent_type="solution_saga",
        user_id=user_id,
        context_id=conversation_id,
        context_type="conversation",
        priority=priority,
        context_json={
            "requestDescription": "Need a CRM",
            "description": "Need a CRM",
            "category": "crm",
            "urgency": urgency,
            "eventId": str(event.id),
        },
    )
    assert in_window(task["created_at"], before, after)
    assert task["scheduled_for"] == task["created_at"]
    await assert_follow_up(
        yp,
        event.id,
        "solution.research_initiated",
        aggregate_type="user",
        aggregate_id=user_id,
        payload={"taskId": str(task["id"]), "requestDescription": "Need a CRM"},
    )
    await yp.assert_replay_changes_nothing(event.id)


# -- 2. community.request_needed ------------------------------------------------------


async def test_community_request_routes_to_the_five_newest_matching_experts(yp: Any) -> None:
    base = datetime(2025, 1, 1, tzinfo=UTC)
    requester = await yp.add_expert(["ai"], created_at=base + timedelta(days=30))
    experts = [
        await yp.add_expert(
            ["ai", "saas"] if n % 2 else ["fintech", "ai"], created_at=base + timedelta(days=n)
        )
        for n in range(6)
    ]
    await yp.add_expert(["marketing"], created_at=base + timedelta(days=20))  # no overlap
    await yp.add_user(expertise=["ai"], created_at=base + timedelta(days=21))  # not verified
    workflow_id = await yp.add_workflow(requester)
    before = await yp.db_now()
    payload = {
        "question": "Who has shipped an LLM feature?",
        "expertiseNeeded": ["ai", "nlp"],
        "requestingAgentType": "solution_saga",
        "requestingUserId": str(requester),
        "contextId": str(workflow_id),
        "contextType": "solution_workflow",
        "category": "engineering",
        "requesterContext": "Evaluating vendors",
        "requestSummary": "s" * 140,
    }
    event = await succeeded(yp, "community.request_needed", payload, created_by="concierge")
    after = await yp.db_now()

    chosen = list(reversed(experts))[:5]  # newest first, the requester excluded
    request_id = derived_id(event.id, "community_request")
    request = await yp.one(community_requests, community_requests.c.id == request_id)
    assert in_window(request["created_at"], before, after)
    assert request == {
        "id": request_id,
        "requesting_agent_type": "solution_saga",
        "requesting_user_id": requester,
        "context_id": workflow_id,
        "context_type": "solution_workflow",
        "question": payload["question"],
        "category": "engineering",
        "expertise_needed": ["ai", "nlp"],
        "target_user_ids": chosen,
        "status": "open",
        "responses_count": 0,
        "requester_context": "Evaluating vendors",
        "desired_outcome": "backchannel",
        "urgency": "medium",
        "request_summary": "s" * 100,
        "created_at": request["created_at"],
        "expires_at": request["created_at"] + timedelta(days=7),
    }
    assert len(await tasks(yp)) == 5
    for expert in chosen:
        await assert_task(
            yp,
            event.id,
            f"community_request_available:{expert}",
            task_type="community_request_available",
            agent_type="account_manager",
            user_id=expert,
            context_id=request_id,
            context_type="community_request",
            priority="medium",
            context_json={
                "requestId": str(request_id),
                "question": payload["question"],
                "category": "engineering",
                "expertiseNeeded": ["ai", "nlp"],
                "requesterContext": "Evaluating vendors",
                "desiredOutcome": "backchannel",
                "urgency": "medium",
                "requestSummary": "s" * 100,
                "contextId": str(workflow_id),
                "contextType": "solution_workflow",
                "eventId": str(event.id),
            },
        )
    await assert_follow_up(
        yp,
        event.id,
        "community.request_routed",
        aggregate_type="community_request",
        aggregate_id=request_id,
        payload={
            "requestId": str(request_id),
            "expertsNotified": 5,
            "expertUserIds": [str(expert) for expert in chosen],
            "question": payload["question"],
            "category": "engineering",
        },
    )
    await yp.assert_replay_changes_nothing(event.id)


async def test_community_request_without_experts_reports_none_found(yp: Any) -> None:
    await yp.add_expert(["ai"])
    payload = {
        "question": "Anyone into quantum catering?",
        "expertiseNeeded": ["quantum_catering"],
        "contextId": "not-a-uuid",
        "contextType": "conversation",
    }
    event = await succeeded(
        yp, "community.request_needed", payload, created_by="innovator", aggregate_id=None
    )
    request_id = derived_id(event.id, "community_request")
    request = await yp.one(community_requests, community_requests.c.id == request_id)
    assert request["target_user_ids"] == []
    assert request["requesting_agent_type"] == "innovator"  # the event's created_by
    assert request["requesting_user_id"] is None
    assert (request["context_id"], request["context_type"]) == (None, "conversation")
    assert (request["category"], request["request_summary"]) == (None, None)
    assert await tasks(yp) == []
    await assert_follow_up(
        yp,
        event.id,
        "community.no_experts_found",
        aggregate_type="community_request",
        aggregate_id=request_id,
        payload={
            "requestId": str(request_id),
            "category": None,
            "expertiseNeeded": ["quantum_catering"],
            "question": payload["question"],
        },
    )
    await yp.assert_replay_changes_nothing(event.id)


@pytest.mark.parametrize(
    ("existing", "payload_category", "attached"),
    [
        ({"category": "crm"}, "crm", True),
        ({"category": None}, None, True),  # (fix) absent equals absent
        ({"category": "crm"}, None, False),
        ({"category": None}, "crm", False),
        ({"category": "crm", "status": "closed"}, "crm", False),
        ({"category": "crm", "age_days": 8}, "crm", False),
        ({"category": "crm", "expertise_needed": ["sales"]}, "crm", False),
    ],
)
async def test_community_request_duplicate_check(
    yp: Any, existing: dict[str, Any], payload_category: str | None, attached: bool
) -> None:
    existing = dict(existing)  # the parameter is shared by both backends' runs
    requester = await yp.add_user()
    await yp.add_expert(["ai"])
    now = await yp.db_now()
    age = timedelta(days=existing.pop("age_days", 1))
    existing.setdefault("expertise_needed", ["ai", "saas"])
    older = await yp.add_request(created_at=now - age - timedelta(hours=1), **existing)
    newer = await yp.add_request(created_at=now - age, **existing)
    payload = {
        "question": "CRM for a small team?",
        "expertiseNeeded": ["saas"],
        "requestingUserId": str(requester),
        "category": payload_category,
    }
    event = await succeeded(yp, "community.request_needed", payload)
    created = await yp.rows(
        community_requests,
        community_requests.c.id == derived_id(event.id, "community_request"),
    )
    if not attached:
        assert len(created) == 1
        return
    assert created == []
    assert await tasks(yp) == []
    assert newer != older
    await assert_follow_up(
        yp,
        event.id,
        "community.request_attached",
        aggregate_type="user",
        aggregate_id=requester,
        payload={
            "existingRequestId": str(newer),
            "newEventId": str(event.id),
            "question": payload["question"],
        },
    )
    await yp.assert_replay_changes_nothing(event.id)


async def test_attached_request_without_requester_uses_the_events_aggregate(yp: Any) -> None:
    await yp.add_request(category=None, expertise_needed=["ai"])
    aggregate_id = uuid.uuid4()
    payload = {"question": "q", "expertiseNeeded": ["ai"]}
    event = await succeeded(
        yp,
        "community.request_needed",
        payload,
        aggregate_type="conversation",
        aggregate_id=aggregate_id,
    )
    attached = await yp.event(derived_id(event.id, "event:community.request_attached"))
    assert (attached.aggregate_type, attached.aggregate_id) == ("conversation", aggregate_id)


# -- 3. user.intro_inquiry ------------------------------------------------------------


async def test_intro_inquiry_creates_a_followup_check(yp: Any) -> None:
    user_id = await yp.add_user()
    intro_id = await yp.add_intro(user_id)
    conversation_id = await yp.add_conversation(user_id)
    payload = {
        "userId": str(user_id),
        "introId": str(intro_id),
        "userQuestion": "Did Pat reply?",
        "conversationId": str(conversation_id),
    }
    event = await succeeded(yp, "user.intro_inquiry", payload)
    task = await assert_task(
        yp,
        event.id,
        "intro_followup_check",
        task_type="intro_followup_check",
        agent_type="account_manager",
        user_id=user_id,
        context_id=intro_id,
        context_type="intro_opportunity",
        priority="high",
        context_json={
            "introId": str(intro_id),
            "userQuestion": "Did Pat reply?",
            "conversationId": str(conversation_id),
            "eventId": str(event.id),
        },
    )
    assert task["scheduled_for"] == task["created_at"]
    assert len(await tasks(yp)) == 1
    await yp.assert_replay_changes_nothing(event.id)


async def test_intro_inquiry_without_intro_has_no_context(yp: Any) -> None:
    user_id = await yp.add_user()
    conversation_id = uuid.uuid4()
    payload = {"userId": str(user_id), "userQuestion": "?", "conversationId": str(conversation_id)}
    event = await succeeded(yp, "user.intro_inquiry", payload)
    task = await assert_task(
        yp,
        event.id,
        "intro_followup_check",
        task_type="intro_followup_check",
        agent_type="account_manager",
        user_id=user_id,
        priority="high",
    )
    assert task["context_json"]["introId"] is None


# -- 4. user.verified -----------------------------------------------------------------


async def test_user_verified_schedules_priorities_and_invalidates_caches(
    yp: Any, caplog: pytest.LogCaptureFixture, restore_cache_invalidator: None
) -> None:
    calls: list[tuple[uuid.UUID, str]] = []

    async def record(user_id: uuid.UUID, poc_agent_type: str) -> None:
        calls.append((user_id, poc_agent_type))

    cache.set_cache_invalidator(record)
    user_id = await yp.add_user()
    payload = {
        "userId": str(user_id),
        "verificationCompletedAt": "2025-06-01T12:30:00Z",
        "pocAgentType": "innovator",
    }
    with caplog.at_level(logging.INFO, logger="yachtparty.handlers"):
        event = await succeeded(yp, "user.verified", payload)
    task = await assert_task(
        yp,
        event.id,
        "notify_user_of_priorities",
        task_type="notify_user_of_priorities",
        agent_type="account_manager",
        user_id=user_id,
        priority="high",
        context_json={
            "reason": "user_verified",
            "verificationCompletedAt": "2025-06-01T12:30:00Z",
            "eventId": str(event.id),
        },
    )
    assert task["scheduled_for"] == task["created_at"] + timedelta(seconds=60)
    assert calls == [(user_id, "innovator")]
    assert any("innovator" in record.getMessage() for record in caplog.records)
    await yp.assert_replay_changes_nothing(event.id)


async def test_a_failing_cache_hook_retries_the_event(
    yp: Any, restore_cache_invalidator: None
) -> None:
    async def broken(user_id: uuid.UUID, poc_agent_type: str) -> None:
        raise ConnectionError("cache down")

    cache.set_cache_invalidator(broken)
    user_id = await yp.add_user()
    payload = {
        "userId": str(user_id),
        "verificationCompletedAt": "2025-06-01T12:30:00Z",
        "pocAgentType": "concierge",
    }
    event = await yp.handle("user.verified", payload)
    assert (event.outcome, event.attempts) == ("dead_lettered", 3)
    assert "cache down" in (await yp.dead_letter(event.id)).error_message
    assert await tasks(yp) == []  # rolled back with the failed attempts


async def test_default_cache_hook_is_a_no_op() -> None:
    assert await cache.invalidate_user_caches(uuid.uuid4(), "concierge") is None


# -- 5. user.message.received ---------------------------------------------------------


async def test_message_received_marks_user_and_conversation_active(yp: Any) -> None:
    user_id = await yp.add_user()
    conversation_id = await yp.add_conversation(user_id)
    old = datetime(2025, 1, 1, tzinfo=UTC)
    other = await yp.add_conversation(user_id, last_message_at=old)
    payload = {
        "userId": str(user_id),
        "conversationId": str(conversation_id),
        "message": "hi",
        "phoneNumber": "+15550000000",
        "messageId": "SM123",
    }
    before = await yp.db_now()
    event = await succeeded(yp, "user.message.received", payload)
    after = await yp.db_now()
    user = await yp.one(users, users.c.id == user_id)
    conversation = await yp.one(conversations, conversations.c.id == conversation_id)
    assert in_window(user["last_active_at"], before, after)
    assert conversation["last_message_at"] == user["last_active_at"]
    untouched = await yp.one(conversations, conversations.c.id == other)
    assert untouched["last_message_at"] == old
    await yp.assert_replay_changes_nothing(event.id)


async def test_message_for_unknown_rows_warns_and_succeeds(
    yp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    payload = {
        "userId": str(uuid.uuid4()),
        "conversationId": str(uuid.uuid4()),
        "message": "hi",
        "phoneNumber": "+15550000000",
        "messageId": "SM124",
    }
    with caplog.at_level(logging.WARNING, logger="yachtparty.handlers"):
        await succeeded(yp, "user.message.received", payload)
    warnings = [r.getMessage() for r in caplog.records if r.name == "yachtparty.handlers"]
    assert any("no user" in message for message in warnings)
    assert any("no conversation" in message for message in warnings)


# -- 6. user.response.recorded --------------------------------------------------------


@pytest.mark.parametrize("response_type", ["feedback", "acceptance", "clarification", "rejection"])
async def test_response_recorded_logs_and_handles_rejection(yp: Any, response_type: str) -> None:
    owner = await yp.add_user()
    responder = await yp.add_user()
    conversation_id = await yp.add_conversation(owner)
    payload = {
        "userId": str(responder),
        "conversationId": str(conversation_id),
        "responseType": response_type,
        "context": {"offer": "intro to Acme"},
        "response": "No thanks",
    }
    before = await yp.db_now()
    event = await succeeded(yp, "user.response.recorded", payload)
    after = await yp.db_now()
    log = await yp.one(agent_actions_log)
    assert in_window(log.pop("created_at"), before, after)
    assert log == {
        "id": derived_id(event.id, "agent_actions_log"),
        "agent_type": "system",
        "action_type": "user_response_recorded",
        "user_id": responder,
        "context_id": conversation_id,
        "context_type": "conversation",
        "input_data": {
            "responseType": response_type,
            "context": {"offer": "intro to Acme"},
            "response": "No thanks",
            "eventId": str(event.id),
        },
        "output_data": None,
        "error": None,
    }
    if response_type != "rejection":
        assert await tasks(yp) == []
    else:
        await assert_task(
            yp,
            event.id,
            "notify_user_of_priorities",
            task_type="notify_user_of_priorities",
            agent_type="account_manager",
            user_id=owner,  # the conversation's owner
            context_id=conversation_id,
            context_type="conversation",
            priority="medium",
            context_json={
                "reason": "user_rejection",
                "conversationId": str(conversation_id),
                "context": {"offer": "intro to Acme"},
                "response": "No thanks",
                "eventId": str(event.id),
            },
        )
    await yp.assert_replay_changes_nothing(event.id)


# -- 7. conversation.intent_classified ------------------------------------------------


@pytest.mark.parametrize(("confidence", "task"), [(0.95, True), (0.8, False), (0.3, False)])
async def test_intent_classified_merges_metadata(yp: Any, confidence: float, task: bool) -> None:
    owner = await yp.add_user()
    conversation_id = await yp.add_conversation(
        owner, metadata={"channel": "sms", "last_intent": "small_talk"}
    )
    payload = {
        "conversationId": str(conversation_id),
        "intent": "solution_inquiry",
        "confidence": confidence,
        "context": {"keywords": ["crm"]},
    }
    before = await yp.db_now()
    event = await succeeded(yp, "conversation.intent_classified", payload)
    after = await yp.db_now()
    stored = (await yp.one(conversations, conversations.c.id == conversation_id))["metadata"]
    classified_at = datetime.fromisoformat(stored.pop("intent_classified_at"))
    assert in_window(classified_at, before, after)
    assert stored == {
        "channel": "sms",  # other keys survive
        "last_intent": "solution_inquiry",
        "intent_confidence": confidence,
        "intent_context": {"keywords": ["crm"]},
        "intent_event_id": str(event.id),
    }
    if task:
        await assert_task(
            yp,
            event.id,
            "notify_user_of_priorities",
            task_type="notify_user_of_priorities",
            agent_type="account_manager",
            user_id=owner,
            context_id=conversation_id,
            context_type="conversation",
            priority="medium",
            context_json={
                "reason": "solution_inquiry",
                "conversationId": str(conversation_id),
                "eventId": str(event.id),
            },
        )
    else:
        assert await tasks(yp) == []
    await yp.assert_replay_changes_nothing(event.id)


async def test_intent_for_a_conversation_without_metadata(yp: Any) -> None:
    owner = await yp.add_user()
    conversation_id = await yp.add_conversation(owner)
    payload = {"conversationId": str(conversation_id), "intent": "x", "confidence": 0.5}
    await succeeded(yp, "conversation.intent_classified", payload)
    stored = (await yp.one(conversations, conversations.c.id == conversation_id))["metadata"]
    assert (stored["last_intent"], stored["intent_context"]) == ("x", None)


async def test_intent_for_a_missing_conversation(yp: Any, caplog: pytest.LogCaptureFixture) -> None:
    low = {"conversationId": str(uuid.uuid4()), "intent": "x", "confidence": 0.5}
    with caplog.at_level(logging.WARNING, logger="yachtparty.handlers"):
        await succeeded(yp, "conversation.intent_classified", low)
    assert any("no conversation" in r.getMessage() for r in caplog.records)
    # A confident intent needs the owner for its task: retried, then dead-lettered.
    high = {"conversationId": str(uuid.uuid4()), "intent": "x", "confidence": 0.9}
    event = await yp.handle("conversation.intent_classified", high)
    assert (event.outcome, event.attempts) == ("dead_lettered", 3)
    assert (
        f"Conversation {high['conversationId']} not found"
        in (await yp.dead_letter(event.id)).error_message
    )


# -- 8. solution.research_complete ----------------------------------------------------


FINDINGS = {
    "matchedInnovators": [{"userId": "u1", "score": 0.9}],
    "potentialVendors": ["Acme"],
    "communityInsights": [{"text": "use Acme"}],
    "clarifyingQuestions": [],
    "notes": "extra keys are stored too",
}


async def test_research_complete_delivers_findings_and_completes_the_workflow(yp: Any) -> None:
    user_id = await yp.add_user()
    now = await yp.db_now()
    await yp.add_conversation(user_id, status="active", last_message_at=now - timedelta(days=3))
    recent = await yp.add_conversation(
        user_id, status="active", last_message_at=now - timedelta(hours=1)
    )
    await yp.add_conversation(user_id, status="closed", last_message_at=now)
    workflow_id = await yp.add_workflow(user_id)
    payload = {
        "workflowId": str(workflow_id),
        "userId": str(user_id),
        "requestDescription": "Find a CRM",
        "findings": FINDINGS,
        "completedAt": "2025-06-02T08:00:00Z",
    }
    event = await succeeded(yp, "solution.research_complete", payload)
    await assert_task(
        yp,
        event.id,
        "solution_workflow_timeout",
        task_type="solution_workflow_timeout",
        agent_type="concierge",
        user_id=user_id,
        context_id=workflow_id,
        context_type="solution_workflow",
        priority="high",
        context_json={
            "workflowId": str(workflow_id),
            "requestDescription": "Find a CRM",
            "findings": FINDINGS,
            "conversationId": str(recent),  # (fix) the most recent active one
            "eventId": str(event.id),
        },
    )
    workflow = await yp.one(solution_workflows, solution_workflows.c.id == workflow_id)
    assert workflow["status"] == "completed"
    assert workflow["completed_at"] == datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
    await yp.assert_replay_changes_nothing(event.id)


async def test_research_complete_without_active_conversation_is_dead_lettered(yp: Any) -> None:
    user_id = await yp.add_user()
    await yp.add_conversation(user_id, status="closed")
    workflow_id = await yp.add_workflow(user_id)
    payload = {
        "workflowId": str(workflow_id),
        "userId": str(user_id),
        "requestDescription": "Find a CRM",
        "findings": {"matchedInnovators": []},
        "completedAt": "2025-06-02T08:00:00Z",
    }
    event = await yp.handle("solution.research_complete", payload)
    assert (event.outcome, event.attempts) == ("dead_lettered", 3)
    letter = await yp.dead_letter(event.id)
    assert f"No active conversation found for user {user_id}" in letter.error_message
    workflow = await yp.one(solution_workflows, solution_workflows.c.id == workflow_id)
    assert workflow["status"] == "in_progress"  # nothing kept from failed attempts
    assert await tasks(yp) == []


async def test_research_complete_for_a_missing_workflow_warns(
    yp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    user_id = await yp.add_user()
    await yp.add_conversation(user_id)
    payload = {
        "workflowId": str(uuid.uuid4()),
        "userId": str(user_id),
        "requestDescription": "Find a CRM",
        "findings": {"matchedInnovators": []},
        "completedAt": "2025-06-02T08:00:00Z",
    }
    with caplog.at_level(logging.WARNING, logger="yachtparty.handlers"):
        await succeeded(yp, "solution.research_complete", payload)
    assert any("no solution workflow" in r.getMessage() for r in caplog.records)
    assert len(await tasks(yp)) == 1


# -- 9. intro.completed ---------------------------------------------------------------


@pytest.mark.parametrize("with_innovator", [True, False])
async def test_intro_completed_awards_credits_and_notifies(yp: Any, with_innovator: bool) -> None:
    connector = await yp.add_user()
    innovator = await yp.add_expert(["ai"]) if with_innovator else None
    intro_id = await yp.add_intro(connector, innovator_id=innovator)
    prospect = uuid.uuid4()
    payload = {
        "introId": str(intro_id),
        "connectorUserId": str(connector),
        "innovatorId": str(innovator) if innovator else None,
        "prospectId": str(prospect),
        "completedAt": "2025-06-03T09:15:00Z",
        "creditsAwarded": 50,
    }
    event = await succeeded(yp, "intro.completed", payload)

    intro = await yp.one(intro_opportunities, intro_opportunities.c.id == intro_id)
    assert intro["status"] == "completed"
    assert intro["intro_completed_at"] == datetime(2025, 6, 3, 9, 15, tzinfo=UTC)
    credit = await yp.one(credit_events)
    assert credit == {
        "id": derived_id(event.id, "credit_event"),
        "user_id": connector,
        "event_type": "intro_completed",
        "amount": 50,
        "reference_type": "intro_opportunity",
        "reference_id": intro_id,
        "idempotency_key": f"intro_completed:{intro_id}",
        "description": "Intro completed - 50 credits earned",
        "created_at": credit["created_at"],
        "processed": True,
    }
    assert (await yp.one(users, users.c.id == connector))["credit_balance"] == 50
    await assert_task(
        yp,
        event.id,
        "notify_user_of_priorities:connector",
        task_type="notify_user_of_priorities",
        agent_type="concierge",
        user_id=connector,
        context_id=intro_id,
        context_type="intro_opportunity",
        priority="medium",
        context_json={
            "reason": "intro_completed",
            "creditsAwarded": 50,
            "introId": str(intro_id),
            "eventId": str(event.id),
        },
    )
    if innovator:
        await assert_task(
            yp,
            event.id,
            "notify_user_of_priorities:innovator",
            task_type="notify_user_of_priorities",
            agent_type="innovator",
            user_id=innovator,
            context_id=intro_id,
            context_type="intro_opportunity",
            priority="high",
            context_json={
                "reason": "intro_completed",
                "introId": str(intro_id),
                "prospectId": str(prospect),
                "eventId": str(event.id),
            },
        )
    assert len(await tasks(yp)) == (2 if innovator else 1)
    await yp.assert_replay_changes_nothing(event.id)


async def test_intro_completed_for_a_missing_intro_still_awards(
    yp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    connector = await yp.add_user()
    payload = {
        "introId": str(uuid.uuid4()),
        "connectorUserId": str(connector),
        "completedAt": "2025-06-03T09:15:00Z",
        "creditsAwarded": 20,
    }
    with caplog.at_level(logging.WARNING, logger="yachtparty.handlers"):
        await succeeded(yp, "intro.completed", payload)
    assert any("no intro opportunity" in r.getMessage() for r in caplog.records)
    assert (await yp.one(users, users.c.id == connector))["credit_balance"] == 20


# -- 10. community.response_received --------------------------------------------------


async def test_response_received_for_a_workflow_request(yp: Any) -> None:
    requester = await yp.add_user()
    expert = await yp.add_expert(["ai"])
    workflow_id = await yp.add_workflow(requester)
    request_id = await yp.add_request(
        requesting_user_id=requester, context_id=workflow_id, context_type="solution_workflow"
    )
    response_id = uuid.uuid4()
    payload = {
        "responseId": str(response_id),
        "requestId": str(request_id),
        "responderId": str(expert),  # the accepted alias
        "responseSummary": "Use Acme",
        "verbatimAnswer": "We use Acme and love it.",
    }
    event = await succeeded(yp, "community.response_received", payload)
    await assert_task(
        yp,
        event.id,
        "process_community_response",
        task_type="process_community_response",
        agent_type="solution_saga",
        user_id=requester,
        context_id=workflow_id,
        context_type="solution_workflow",
        priority="medium",
        context_json={
            "responseId": str(response_id),
            "requestId": str(request_id),
            "eventId": str(event.id),
        },
    )
    await assert_task(
        yp,
        event.id,
        "community_response_available",
        task_type="community_response_available",
        agent_type="account_manager",
        user_id=requester,
        context_id=response_id,
        context_type="community_response",
        priority="high",
        context_json={
            "responseId": str(response_id),
            "requestId": str(request_id),
            "expertUserId": str(expert),
            "responseSummary": "Use Acme",
            "eventId": str(event.id),
        },
    )
    assert len(await tasks(yp)) == 2
    await yp.assert_replay_changes_nothing(event.id)


async def test_response_received_without_workflow_or_requester(yp: Any) -> None:
    requester = await yp.add_user()
    with_requester = await yp.add_request(requesting_user_id=requester)
    without = await yp.add_request()
    base = {"responseSummary": "s", "expertUserId": str(uuid.uuid4())}
    first = await succeeded(
        yp,
        "community.response_received",
        {**base, "responseId": str(uuid.uuid4()), "requestId": str(with_requester)},
    )
    assert [t["task_type"] for t in await tasks(yp)] == ["community_response_available"]
    await succeeded(
        yp,
        "community.response_received",
        {**base, "responseId": str(uuid.uuid4()), "requestId": str(without)},
    )
    assert len(await tasks(yp)) == 1
    await yp.assert_replay_changes_nothing(first.id)


async def test_response_for_a_missing_request_is_dead_lettered(yp: Any) -> None:
    request_id = uuid.uuid4()
    payload = {
        "responseId": str(uuid.uuid4()),
        "requestId": str(request_id),
        "expertUserId": str(uuid.uuid4()),
        "responseSummary": "s",
    }
    event = await yp.handle("community.response_received", payload)
    assert (event.outcome, event.attempts) == ("dead_lettered", 3)
    letter = await yp.dead_letter(event.id)
    assert f"Community request {request_id} not found" in letter.error_message


# -- 11. account_manager.processing.completed -----------------------------------------


@pytest.mark.parametrize("urgent", [0, 3])
async def test_processing_completed_logs_and_escalates(yp: Any, urgent: int) -> None:
    user_id = await yp.add_user()
    payload = {
        "userId": str(user_id),
        "processedEvents": 12,
        "urgentItems": urgent,
        "prioritiesUpdated": 4,
        "tasksCreated": 2,
        "completedAt": "2025-06-04T10:00:00Z",
    }
    event = await succeeded(yp, "account_manager.processing.completed", payload)
    log = await yp.one(agent_actions_log)
    del log["created_at"]
    assert log == {
        "id": derived_id(event.id, "agent_actions_log"),
        "agent_type": "account_manager",
        "action_type": "processing_completed",
        "user_id": user_id,
        "context_id": None,
        "context_type": None,
        "input_data": None,
        "output_data": {  # (fix) the counts are kept
            "processedEvents": 12,
            "urgentItems": urgent,
            "prioritiesUpdated": 4,
            "tasksCreated": 2,
            "completedAt": "2025-06-04T10:00:00Z",
            "eventId": str(event.id),
        },
        "error": None,
    }
    if urgent:
        await assert_task(
            yp,
            event.id,
            "notify_user_of_priorities",
            task_type="notify_user_of_priorities",
            agent_type="concierge",
            user_id=user_id,
            priority="urgent",
            context_json={
                "reason": "urgent_priorities_detected",
                "urgentCount": urgent,
                "eventId": str(event.id),
            },
        )
    else:
        assert await tasks(yp) == []
    await yp.assert_replay_changes_nothing(event.id)


# -- the same event id published twice ------------------------------------------------


async def test_publishing_the_same_event_id_twice_handles_it_once(yp: Any) -> None:
    user_id = await yp.add_user()
    payload = {
        "userId": str(user_id),
        "processedEvents": 1,
        "urgentItems": 1,
        "prioritiesUpdated": 0,
        "tasksCreated": 0,
        "completedAt": "2025-06-04T10:00:00Z",
    }
    event_id = uuid.uuid4()
    await yp.publish("account_manager.processing.completed", payload, id=event_id)
    await yp.publish("account_manager.processing.completed", payload, id=event_id)
    await yp.process()
    assert (await yp.event(event_id)).outcome == "succeeded"
    assert len(await yp.rows(agent_actions_log)) == 1
    assert len(await tasks(yp)) == 1
