"""The writes every handler shares: agent tasks, follow-up events, referent checks.

Each takes the handler's context, so that everything lands in the event's own
transaction, and derives its ids from the event (:mod:`yachtparty.ids`), so
that running a handler twice inserts nothing new.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
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


@dataclass(frozen=True, slots=True)
class Task:
    """One ``agent_tasks`` row a handler queues: which agent does what, for whom, about what.

    ``about`` is the ``(context_type, context_id)`` the task refers to, if
    any. ``key`` tells apart several tasks of one type queued for one event
    (one per expert, say): the task's id is derived from the event and
    ``task_type[:key]``, so a replay queues nothing new. ``delay``: due that
    long after the handler's ``now``.
    """

    task_type: str
    agent_type: str
    user_id: uuid.UUID | None
    priority: str
    context_json: dict[str, Any]
    about: tuple[str, uuid.UUID] | None = None
    key: str | None = None
    delay: timedelta = timedelta(0)

    @property
    def purpose(self) -> str:
        return self.task_type if self.key is None else f"{self.task_type}:{self.key}"


async def add_tasks(ctx: HandlerContext, now: datetime, *tasks: Task) -> list[uuid.UUID]:
    """Insert each task once (pending, created by the event processor); their ids.

    ``now`` is the database clock the handler read: the tasks' creation time,
    and their due time plus ``delay``. ``context_json`` always gets the
    event's id as ``eventId``.
    """
    ids = []
    for task in tasks:
        task_id = derived_id(ctx.event.id, f"task:{task.purpose}")
        context_type, context_id = task.about or (None, None)
        await insert_once(
            ctx.connection,
            agent_tasks,
            {
                "id": task_id,
                "task_type": task.task_type,
                "agent_type": task.agent_type,
                "user_id": task.user_id,
                "context_id": context_id,
                "context_type": context_type,
                "scheduled_for": now + task.delay,
                "priority": task.priority,
                "status": "pending",
                "context_json": as_json({**task.context_json, "eventId": ctx.event.id}),
                "created_at": now,
                "created_by": CREATED_BY,
            },
        )
        ids.append(task_id)
    return ids


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
