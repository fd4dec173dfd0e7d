"""End-to-end Yachtparty stories through the real processor, on both backends."""

import uuid
from typing import Any

import pytest

from eventproc import NewEvent
from yachtparty.ids import derived_id
from yachtparty.tables import (
    agent_tasks,
    community_requests,
    credit_events,
    intro_opportunities,
    solution_workflows,
    users,
)


@pytest.mark.parametrize(("urgency", "priority"), [("high", "high"), ("medium", "medium")])
async def test_solution_inquiry_becomes_research_then_delivery(
    yp: Any, urgency: str, priority: str
) -> None:
    user_id = await yp.add_user()
    conversation_id = await yp.add_conversation(user_id)
    workflow_id = await yp.add_workflow(user_id)
    inquiry = await yp.publish(
        "user.inquiry.solution_needed",
        {
            "userId": str(user_id),
            "conversationId": str(conversation_id),
            "requestDescription": "SOC 2 tooling",
            "urgency": urgency,
        },
        aggregate_type="user",
        aggregate_id=user_id,
    )
    await yp.process()

    assert (await yp.event(inquiry)).outcome == "succeeded"
    [task] = await yp.rows(agent_tasks)
    assert (task["task_type"], task["agent_type"], task["priority"]) == (
        "research_solution",
        "solution_saga",
        priority,
    )
    [initiated] = await yp.events_of_type("solution.research_initiated")
    assert initiated.payload["taskId"] == str(task["id"])
    assert initiated.outcome == "skipped"  # designed: no handler for it

    done = await yp.publish(
        "solution.research_complete",
        {
            "workflowId": str(workflow_id),
            "userId": str(user_id),
            "requestDescription": "SOC 2 tooling",
            "findings": {"matchedInnovators": [{"name": "Vanta"}]},
            "completedAt": "2025-06-10T10:00:00Z",
        },
    )
    await yp.process()
    assert (await yp.event(done)).outcome == "succeeded"
    workflow = await yp.one(solution_workflows, solution_workflows.c.id == workflow_id)
    assert workflow["status"] == "completed"
    delivery = await yp.one(agent_tasks, agent_tasks.c.task_type == "solution_workflow_timeout")
    assert delivery["context_json"]["conversationId"] == str(conversation_id)


async def test_community_request_is_routed_then_a_duplicate_attached(yp: Any) -> None:
    requester = await yp.add_expert(["security", "devops"])  # an expert, but never their own
    security = await yp.add_expert(["security"])
    await yp.add_expert(["devops", "ai"])  # no overlap with what is asked
    await yp.add_expert(["marketing"])
    await yp.add_user(expertise=["security"])  # unverified
    first = await yp.publish(
        "community.request_needed",
        {
            "question": "Who has passed SOC 2 recently?",
            "expertiseNeeded": ["security"],
            "requestingUserId": str(requester),
            "category": "compliance",
        },
    )
    await yp.process()

    request_id = derived_id(first, "community_request")
    request = await yp.one(community_requests, community_requests.c.id == request_id)
    assert request["target_user_ids"] == [security]  # (fix) not the requester
    routed = await yp.rows(agent_tasks, agent_tasks.c.task_type == "community_request_available")
    assert [t["user_id"] for t in routed] == [security]
    [routed_event] = await yp.events_of_type("community.request_routed")
    assert routed_event.payload["expertsNotified"] == 1

    second = await yp.publish(
        "community.request_needed",
        {
            "question": "Any SOC 2 auditors to recommend?",
            "expertiseNeeded": ["security", "audit"],
            "requestingUserId": str(requester),
            "category": "compliance",
        },
    )
    await yp.process()
    assert (await yp.event(second)).outcome == "succeeded"
    assert len(await yp.rows(community_requests)) == 1  # no second request
    [attached] = await yp.events_of_type("community.request_attached")
    assert attached.payload == {
        "existingRequestId": str(request_id),
        "newEventId": str(second),
        "question": "Any SOC 2 auditors to recommend?",
    }
    assert len(await yp.rows(agent_tasks)) == 1  # nobody notified twice

    answer = await yp.publish(
        "community.response_received",
        {
            "responseId": str(uuid.uuid4()),
            "requestId": str(request_id),
            "responderId": str(security),
            "responseSummary": "Use Drata",
        },
    )
    await yp.process()
    assert (await yp.event(answer)).outcome == "succeeded"
    available = await yp.one(agent_tasks, agent_tasks.c.task_type == "community_response_available")
    assert available["user_id"] == requester


@pytest.mark.parametrize("same_aggregate", [True, False])
async def test_intro_completion_awards_credits_once(yp: Any, same_aggregate: bool) -> None:
    connector = await yp.add_user()
    innovator = await yp.add_expert(["ai"])
    intro_id = await yp.add_intro(connector, innovator_id=innovator)
    other_intro = await yp.add_intro(connector)
    payload = {
        "introId": str(intro_id),
        "connectorUserId": str(connector),
        "innovatorId": str(innovator),
        "completedAt": "2025-06-05T15:00:00Z",
        "creditsAwarded": 50,
    }
    aggregate = {"aggregate_type": "intro_opportunity", "aggregate_id": intro_id}
    twice = [
        NewEvent("intro.completed", payload, **(aggregate if same_aggregate else {}))
        for _ in range(2)
    ]
    # Two different event ids for one intro, in one batch (concurrent unless ordered).
    await yp.store.event_insert_many(twice)
    await yp.process()

    assert [(await yp.event(e.id)).outcome for e in twice] == ["succeeded", "succeeded"]
    [credit] = await yp.rows(credit_events)
    assert (credit["amount"], credit["idempotency_key"]) == (50, f"intro_completed:{intro_id}")
    assert (await yp.one(users, users.c.id == connector))["credit_balance"] == 50
    intro = await yp.one(intro_opportunities, intro_opportunities.c.id == intro_id)
    assert intro["status"] == "completed"
    assert len(await yp.rows(agent_tasks)) == 2  # connector + innovator, once

    # Replaying both, and a third copy later, still award nothing more.
    await yp.store.event_replay([e.id for e in twice])
    await yp.process()
    await yp.handle("intro.completed", payload)
    assert len(await yp.rows(credit_events)) == 1
    assert (await yp.one(users, users.c.id == connector))["credit_balance"] == 50

    # Another intro of the same connector adds to the balance.
    await yp.handle(
        "intro.completed",
        {
            "introId": str(other_intro),
            "connectorUserId": str(connector),
            "completedAt": "2025-06-06T15:00:00Z",
            "creditsAwarded": 25,
        },
    )
    assert (await yp.one(users, users.c.id == connector))["credit_balance"] == 75


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        (
            "user.inquiry.solution_needed",
            {"conversationId": str(uuid.uuid4()), "requestDescription": "CRM"},
        ),
        (
            "community.request_needed",
            {"question": "q", "expertiseNeeded": ["ai"]},
        ),
        (
            "account_manager.processing.completed",
            {
                "processedEvents": 1,
                "urgentItems": 0,
                "prioritiesUpdated": 0,
                "tasksCreated": 0,
                "completedAt": "2025-06-01T00:00:00Z",
            },
        ),
    ],
)
async def test_missing_user_is_retried_then_dead_lettered(
    yp: Any, event_type: str, payload: dict[str, Any]
) -> None:
    ghost = uuid.uuid4()
    key = "requestingUserId" if event_type == "community.request_needed" else "userId"
    payload = {**payload, key: str(ghost)}
    event = await yp.handle(event_type, payload)

    assert (event.processed, event.outcome, event.attempts) == (True, "dead_lettered", 3)
    assert event.metadata["retry_count"] == 3
    assert f"User {ghost} not found" in event.metadata["last_error"]
    letter = await yp.dead_letter(event.id)
    assert letter.retry_count == 3
    # The count lives in retry_count (issue 11): equal failures read and group alike.
    assert letter.error_message == f"LookupError: User {ghost} not found"
    assert letter.error_fingerprint == "LookupError: User <uuid> not found"
    snapshot = await yp.snapshot()
    assert [row["id"] for row in snapshot["events"]] == [event.id]
    assert all(rows == [] for name, rows in snapshot.items() if name != "events")

    # Once the user exists, replaying the dead letter succeeds.
    await yp.add_user(id=ghost)
    await yp.replay(event.id)
    assert (await yp.event(event.id)).outcome == "succeeded"
