"""The split handler: each half of ``user.response.recorded`` fails, retries and dead-letters alone.

Through the real processor on SQLite and PostgreSQL: a rejection goes to two
subscriptions (the log row, the owner's task), each with its own delivery;
any other response still runs on the event's own row, as before the split.
"""

import uuid
from typing import Any

import pytest
from sqlalchemy import select

from eventproc.store.schema import deliveries
from yachtparty import handlers
from yachtparty.ids import derived_id
from yachtparty.tables import agent_actions_log, agent_tasks

LOG = "yachtparty.handlers.response_recorded"
REJECTED = "yachtparty.handlers.response_rejected"


async def deliveries_of(yp: Any, event_id: uuid.UUID) -> dict[str, tuple[str, str | None, int]]:
    """Per subscription: (status, outcome, attempts) of the event's delivery rows."""
    statement = select(
        deliveries.c.handler, deliveries.c.status, deliveries.c.outcome, deliveries.c.attempts
    ).where(deliveries.c.event_id == event_id)
    async with yp.store.engine.connect() as conn:
        found = (await conn.execute(statement)).all()
    return {row.handler: (row.status, row.outcome, row.attempts) for row in found}


def response(responder: uuid.UUID, conversation: uuid.UUID, kind: str) -> dict[str, Any]:
    return {
        "userId": str(responder),
        "conversationId": str(conversation),
        "responseType": kind,
        "context": "priority_intro_offer",
        "response": "No thanks",
    }


async def owners_tasks(yp: Any, owner: uuid.UUID) -> list[dict[str, Any]]:
    return await yp.rows(agent_tasks, agent_tasks.c.user_id == owner)


async def test_a_missing_conversation_dead_letters_the_owners_task_alone(yp: Any) -> None:
    responder, owner = await yp.add_user(), await yp.add_user()
    conversation = uuid.uuid4()  # not there yet
    event = await yp.handle(
        "user.response.recorded", response(responder, conversation, "rejection")
    )

    assert (event.processed, event.outcome, event.attempts) == (True, "partial", 3)
    assert await deliveries_of(yp, event.id) == {
        LOG: ("done", "succeeded", 1),  # logged once, not retried with the task
        REJECTED: ("done", "dead_lettered", 3),
    }
    log = await yp.one(agent_actions_log)
    assert log["id"] == derived_id(event.id, "agent_actions_log")
    letter = await yp.dead_letter(event.id)
    assert letter.handler == REJECTED
    assert f"Conversation {conversation} not found" in letter.error_message
    assert await yp.rows(agent_tasks) == []

    # Once the conversation exists, replaying that delivery alone tells its owner.
    await yp.add_conversation(owner, id=conversation)
    assert await yp.store.delivery_replay(event.id, REJECTED)
    await yp.process()
    assert (await yp.event(event.id)).outcome == "succeeded"
    [task] = await owners_tasks(yp, owner)
    assert task["id"] == derived_id(event.id, "task:notify_user_of_priorities")
    assert await yp.rows(agent_actions_log) == [log]
    assert (await deliveries_of(yp, event.id))[LOG] == ("done", "succeeded", 1)


async def test_a_failing_log_row_dead_letters_alone_and_the_owner_is_told_once(
    yp: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    responder, owner = await yp.add_user(), await yp.add_user()
    conversation = await yp.add_conversation(owner)
    real_insert, real_owner = handlers.insert_once, handlers._conversation_owner
    owner_reads: list[uuid.UUID] = []

    async def log_down(connection: Any, table: Any, values: dict[str, Any]) -> bool:
        if table is agent_actions_log:
            raise ConnectionError("audit log down")
        return await real_insert(connection, table, values)

    async def counted_owner(ctx: Any, conversation_id: uuid.UUID) -> uuid.UUID:
        owner_reads.append(conversation_id)
        return await real_owner(ctx, conversation_id)

    monkeypatch.setattr(handlers, "insert_once", log_down)
    monkeypatch.setattr(handlers, "_conversation_owner", counted_owner)
    event = await yp.handle(
        "user.response.recorded", response(responder, conversation, "rejection")
    )

    assert (event.processed, event.outcome) == (True, "partial")
    assert await deliveries_of(yp, event.id) == {
        LOG: ("done", "dead_lettered", 3),
        REJECTED: ("done", "succeeded", 1),
    }
    assert owner_reads == [conversation]  # the owner's half ran once, not with each retry
    assert len(await owners_tasks(yp, owner)) == 1
    assert await yp.rows(agent_actions_log) == []
    letter = await yp.dead_letter(event.id)
    assert (letter.handler, letter.error_message) == (LOG, "ConnectionError: audit log down")

    # With the log back, replaying the log's delivery writes it; nobody is told twice.
    monkeypatch.setattr(handlers, "insert_once", real_insert)
    assert await yp.store.delivery_replay(event.id, LOG)
    await yp.process()
    assert (await yp.event(event.id)).outcome == "succeeded"
    assert len(await yp.rows(agent_actions_log)) == 1
    assert len(await owners_tasks(yp, owner)) == 1
    assert owner_reads == [conversation]


async def test_a_response_that_is_no_rejection_still_runs_on_the_events_row(yp: Any) -> None:
    responder = await yp.add_user()
    conversation = await yp.add_conversation(await yp.add_user())
    event = await yp.handle("user.response.recorded", response(responder, conversation, "feedback"))
    assert (event.outcome, event.attempts) == ("succeeded", 1)
    assert await deliveries_of(yp, event.id) == {}  # one subscription: no delivery rows
    assert event.metadata.get("handled_by") == LOG
    assert len(await yp.rows(agent_actions_log)) == 1
    assert await yp.rows(agent_tasks) == []


async def test_a_rejection_from_a_missing_user_is_dead_lettered_by_each_half(yp: Any) -> None:
    ghost = uuid.uuid4()
    conversation = await yp.add_conversation(await yp.add_user())
    event = await yp.handle("user.response.recorded", response(ghost, conversation, "rejection"))
    assert (event.outcome, event.attempts) == ("dead_lettered", 3)
    letters = [d for d in await yp.store.dead_letter_list(1000) if d.event_id == event.id]
    assert sorted(letter.handler for letter in letters) == [LOG, REJECTED]
    assert all(f"User {ghost} not found" in letter.error_message for letter in letters)
    assert await yp.rows(agent_actions_log) == [] and await yp.rows(agent_tasks) == []
