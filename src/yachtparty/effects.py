"""The writes every handler shares: agent tasks, follow-up events, referent checks.

Each takes the handler's context, so that everything lands in the event's own
transaction, and derives its ids from the event (:mod:`yachtparty.ids`), so
that running a handler twice inserts nothing new.
"""

import uuid
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python
from sqlalchemy import select

from eventproc import Event, HandlerContext, NewEvent, PermanentError
from yachtparty.ids import derived_id
from yachtparty.queries import insert_once
from yachtparty.tables import agent_tasks, users

CREATED_BY = "event_processor"

M = TypeVar("M", bound=BaseModel)


def payload_of(ctx: HandlerContext, model: type[M]) -> M:
    """The validated payload (eventproc validates it before the call)."""
    if isinstance(ctx.payload, model):
        return ctx.payload
    try:
        return model.model_validate(ctx.payload)
    except ValidationError as exc:
        raise PermanentError(f"Invalid payload for {ctx.event.event_type}: {exc}") from exc


def as_json(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` with uuids and datetimes as strings, ready for a JSON column or payload."""
    converted = to_jsonable_python(value)
    assert isinstance(converted, dict)
    return converted


async def require_user(ctx: HandlerContext, user_id: uuid.UUID) -> None:
    """Raise ``LookupError`` (retried, then dead-lettered) if the user does not exist.

    A user who is referenced before their row is visible may just be late, so
    this is an ordinary failure, not a permanent one.
    """
    found = await ctx.connection.execute(select(users.c.id).where(users.c.id == user_id))
    if found.first() is None:
        raise LookupError(f"User {user_id} not found")


async def add_task(
    ctx: HandlerContext,
    *,
    purpose: str,
    task_type: str,
    agent_type: str,
    user_id: uuid.UUID | None,
    priority: str,
    context_json: dict[str, Any],
    now: datetime,
    scheduled_for: datetime | None = None,
    context_id: uuid.UUID | None = None,
    context_type: str | None = None,
) -> uuid.UUID:
    """Insert one ``agent_tasks`` row (once): pending, created by the event processor.

    ``now`` is the database clock the handler read; the task is due then
    unless ``scheduled_for`` says otherwise. ``context_json`` always gets the
    event's id as ``eventId``.
    """
    task_id = derived_id(ctx.event.id, f"task:{purpose}")
    await insert_once(
        ctx.connection,
        agent_tasks,
        {
            "id": task_id,
            "task_type": task_type,
            "agent_type": agent_type,
            "user_id": user_id,
            "context_id": context_id,
            "context_type": context_type,
            "scheduled_for": scheduled_for or now,
            "priority": priority,
            "status": "pending",
            "context_json": as_json({**context_json, "eventId": ctx.event.id}),
            "created_at": now,
            "created_by": CREATED_BY,
        },
    )
    return task_id


def follow_up(
    event: Event,
    event_type: str,
    *,
    aggregate_type: str | None,
    aggregate_id: uuid.UUID | None,
    payload: dict[str, Any],
) -> NewEvent:
    """A follow-up event with a deterministic id (one per type per source event)."""
    return NewEvent(
        id=derived_id(event.id, f"event:{event_type}"),
        event_type=event_type,
        payload=as_json(payload),
        aggregate_id=aggregate_id,
        aggregate_type=aggregate_type,
        created_by=CREATED_BY,
        version=1,
    )
