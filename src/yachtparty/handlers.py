"""The Yachtparty handlers, as /work/shared/yachtparty-handlers.md specifies them.

Its 11 event types are taken by 12 subscriptions: ``user.response.recorded``
by two, since logging a response and telling a conversation's owner of a
rejection are unrelated (see "One event, two subscriptions" below).

Every handler is transactional: its writes and follow-up events commit in the
transaction that marks its event processed, exactly once. Every row it
creates has a deterministic id and is inserted with on-conflict-do-nothing, so
a replay changes nothing. Failure policy:

- an invalid payload never gets here (eventproc dead-letters it at once);
- a row the handler must create whose referent is missing (a user, the
  conversation whose owner gets a task, a community request) raises
  ``LookupError``: retried, then dead-lettered;
- an UPDATE that matches no row logs a warning and the event succeeds;
- any database error propagates: retried, then dead-lettered.

Each subscription's ``name`` is written out, equal to the function's dotted
name that earlier releases recorded in ``event_dead_letters.handler``: it is
the deliveries' identity, so renaming a function no longer renames it.

One event, two subscriptions: each delivery has its own retries and dead
letter, so a handler is split where its halves are unrelated and one can
fail alone. ``response_recorded`` (the log row, under its recorded name) and
``response_rejected`` (``yachtparty.handlers.response_rejected``, filtered to
rejections, so any other response still has one subscription and runs as
before): a rejection whose conversation is missing retries and
dead-letters the owner's task alone, and the response stays logged. Not
split, on purpose:

- ``user_verified``: its task must not go out while the caches it refreshes
  could not be invalidated; a failing hook rolls the task back and retries both;
- ``response_received``: both tasks hang on the one community request, and a
  missing request (their only failure of their own) fails both alike, so a
  split would only double the dead letters; a filter cannot tell them apart
  (what decides is the stored request, not the event);
- ``processing_completed``: the log row and the urgent task have no failure
  apart (the user, the payload), and a filter on ``urgentItems`` cannot
  mirror the model's lax integers (``"3"``, ``true``), so it would drop some
  escalations;
- ``intro_completed``: its notifications go out only with the first award.
"""

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, case, func, literal, or_, select, update

from eventproc import Event, HandlerContext, NewEvent
from eventproc.columns import UTCDateTime, db_now, overlaps
from yachtparty.cache import invalidate_user_caches
from yachtparty.effects import Task, add_tasks, as_json, follow_up, payload_of, require_user
from yachtparty.ids import derived_id
from yachtparty.models import (
    CommunityRequestNeeded,
    IntentClassified,
    IntroCompleted,
    IntroInquiry,
    MessageReceived,
    ProcessingCompleted,
    ResearchComplete,
    ResponseReceived,
    ResponseRecorded,
    SolutionNeeded,
    UserVerified,
)
from yachtparty.queries import insert_once
from yachtparty.registry import registry
from yachtparty.tables import (
    agent_actions_log,
    community_requests,
    conversations,
    credit_events,
    intro_opportunities,
    solution_workflows,
    users,
)

logger = logging.getLogger(__name__)

COMMUNITY_REQUEST_TTL = timedelta(days=7)
DUPLICATE_WINDOW = timedelta(days=7)
MAX_EXPERTS = 5
VERIFIED_NOTICE_DELAY = timedelta(seconds=60)
INTENT_TASK_CONFIDENCE = 0.8
NOTIFY_PRIORITIES = "notify_user_of_priorities"


def _log_fields(event: Event) -> dict[str, Any]:
    return {"event_id": str(event.id), "event_type": event.event_type}


async def _exists(ctx: HandlerContext, table: Table, row_id: uuid.UUID) -> bool:
    found = await ctx.connection.execute(select(table.c.id).where(table.c.id == row_id))
    return found.first() is not None


# -- 1. user.inquiry.solution_needed -------------------------------------------------


@registry.handler(
    "user.inquiry.solution_needed",
    name="yachtparty.handlers.solution_needed",
    description=(
        "A member needs a solution: queue a research_solution task for Solution Saga "
        "and publish solution.research_initiated."
    ),
    payload=SolutionNeeded,
    transactional=True,
)
async def solution_needed(event: Event, ctx: HandlerContext) -> None:
    payload = payload_of(ctx, SolutionNeeded)
    await require_user(ctx, payload.userId)
    now = await db_now(ctx.connection)
    research = Task(
        "research_solution",
        "solution_saga",
        payload.userId,
        "high" if payload.urgency == "high" else "medium",
        {
            "requestDescription": payload.requestDescription,
            "description": payload.requestDescription,
            "category": payload.category,
            "urgency": payload.urgency,
        },
        about=("conversation", payload.conversationId),
    )
    [task_id] = await add_tasks(ctx, now, research)
    await ctx.publish(
        follow_up(
            event,
            "solution.research_initiated",
            aggregate_type="user",
            aggregate_id=payload.userId,
            payload={"taskId": task_id, "requestDescription": payload.requestDescription},
        )
    )


# -- 2. community.request_needed -----------------------------------------------------


async def _open_duplicate(
    ctx: HandlerContext, payload: CommunityRequestNeeded, now: datetime
) -> uuid.UUID | None:
    """The newest open request of the last 7 days, same category, overlapping expertise."""
    table = community_requests
    statement = (
        select(table.c.id)
        .where(
            table.c.status == "open",
            table.c.created_at >= now - DUPLICATE_WINDOW,
            table.c.category.is_not_distinct_from(payload.category),
            overlaps(ctx.connection, table.c.expertise_needed, payload.expertiseNeeded),
        )
        .order_by(table.c.created_at.desc(), table.c.id.desc())
        .limit(1)
    )
    found = (await ctx.connection.execute(statement)).scalar_one_or_none()
    assert found is None or isinstance(found, uuid.UUID)
    return found


async def _find_experts(ctx: HandlerContext, payload: CommunityRequestNeeded) -> list[uuid.UUID]:
    """Up to 5 verified users whose expertise overlaps, newest first, never the requester."""
    conditions = [
        users.c.verified.is_(True),
        overlaps(ctx.connection, users.c.expertise, payload.expertiseNeeded),
    ]
    if payload.requestingUserId is not None:
        conditions.append(users.c.id != payload.requestingUserId)
    statement = (
        select(users.c.id)
        .where(*conditions)
        .order_by(users.c.created_at.desc(), users.c.id.desc())
        .limit(MAX_EXPERTS)
    )
    return list((await ctx.connection.execute(statement)).scalars())


@registry.handler(
    "community.request_needed",
    name="yachtparty.handlers.community_request_needed",
    description=(
        "Ask the community: attach to an open duplicate request, or create the request "
        "and route it to up to 5 verified experts (tasks for the Account Manager)."
    ),
    payload=CommunityRequestNeeded,
    transactional=True,
)
async def community_request_needed(event: Event, ctx: HandlerContext) -> None:
    payload = payload_of(ctx, CommunityRequestNeeded)
    if payload.requestingUserId is not None:
        await require_user(ctx, payload.requestingUserId)
    now = await db_now(ctx.connection)
    request_id = derived_id(event.id, "community_request")
    recorded = await _recorded_experts(ctx, request_id)
    if recorded is not None:
        # A replay: the request exists, so route to the experts it recorded.
        experts = recorded
    else:
        duplicate = await _open_duplicate(ctx, payload, now)
        if duplicate is not None:
            await ctx.publish(_attached(event, payload, duplicate))
            return
        experts = await _find_experts(ctx, payload)
        await _create_request(event, ctx, payload, request_id, experts, now)
    await _route_request(event, ctx, payload, request_id, experts, now)


async def _recorded_experts(ctx: HandlerContext, request_id: uuid.UUID) -> list[uuid.UUID] | None:
    """The experts an existing request was routed to; None when there is no such request."""
    table = community_requests
    found = (
        await ctx.connection.execute(
            select(table.c.target_user_ids).where(table.c.id == request_id)
        )
    ).first()
    return None if found is None else list(found.target_user_ids or [])


def _attached(event: Event, payload: CommunityRequestNeeded, duplicate: uuid.UUID) -> NewEvent:
    return follow_up(
        event,
        "community.request_attached",
        aggregate_type="user" if payload.requestingUserId else event.aggregate_type,
        aggregate_id=payload.requestingUserId or event.aggregate_id,
        payload={
            "existingRequestId": duplicate,
            "newEventId": event.id,
            "question": payload.question,
        },
    )


async def _create_request(
    event: Event,
    ctx: HandlerContext,
    payload: CommunityRequestNeeded,
    request_id: uuid.UUID,
    experts: list[uuid.UUID],
    now: datetime,
) -> None:
    await insert_once(
        ctx.connection,
        community_requests,
        {
            "id": request_id,
            "requesting_agent_type": payload.requestingAgentType or event.created_by or "unknown",
            "requesting_user_id": payload.requestingUserId,
            "context_id": payload.context_uuid,
            "context_type": payload.contextType,
            "question": payload.question,
            "category": payload.category,
            "expertise_needed": payload.expertiseNeeded,
            "target_user_ids": experts,
            "status": "open",
            "requester_context": payload.requesterContext,
            "desired_outcome": payload.desiredOutcome,
            "urgency": payload.urgency,
            "request_summary": payload.requestSummary,
            "created_at": now,
            "expires_at": now + COMMUNITY_REQUEST_TTL,
        },
    )


async def _route_request(
    event: Event,
    ctx: HandlerContext,
    payload: CommunityRequestNeeded,
    request_id: uuid.UUID,
    experts: list[uuid.UUID],
    now: datetime,
) -> None:
    """A community_request_available task per expert, then routed (or no experts found)."""
    details = {
        "requestId": request_id,
        "question": payload.question,
        "category": payload.category,
        "expertiseNeeded": payload.expertiseNeeded,
        "requesterContext": payload.requesterContext,
        "desiredOutcome": payload.desiredOutcome,
        "urgency": payload.urgency,
        "requestSummary": payload.requestSummary,
        "contextId": payload.contextId,
        "contextType": payload.contextType,
    }
    about = ("community_request", request_id)
    await add_tasks(
        ctx,
        now,
        *(
            Task(
                "community_request_available",
                "account_manager",
                expert,
                "medium",
                details,
                about=about,
                key=str(expert),
            )
            for expert in experts
        ),
    )
    await ctx.publish(_routing_result(event, payload, request_id, experts))


def _routing_result(
    event: Event, payload: CommunityRequestNeeded, request_id: uuid.UUID, experts: list[uuid.UUID]
) -> NewEvent:
    """community.request_routed, or community.no_experts_found when nobody matched."""
    if experts:
        return follow_up(
            event,
            "community.request_routed",
            aggregate_type="community_request",
            aggregate_id=request_id,
            payload={
                "requestId": request_id,
                "expertsNotified": len(experts),
                "expertUserIds": experts,
                "question": payload.question,
                "category": payload.category,
            },
        )
    return follow_up(
        event,
        "community.no_experts_found",
        aggregate_type="community_request",
        aggregate_id=request_id,
        payload={
            "requestId": request_id,
            "category": payload.category,
            "expertiseNeeded": payload.expertiseNeeded,
            "question": payload.question,
        },
    )


# -- 3. user.intro_inquiry -----------------------------------------------------------


@registry.handler(
    "user.intro_inquiry",
    name="yachtparty.handlers.intro_inquiry",
    description="A member asks about an intro: queue an intro_followup_check task.",
    payload=IntroInquiry,
    transactional=True,
)
async def intro_inquiry(event: Event, ctx: HandlerContext) -> None:
    payload = payload_of(ctx, IntroInquiry)
    await require_user(ctx, payload.userId)
    now = await db_now(ctx.connection)
    check = Task(
        "intro_followup_check",
        "account_manager",
        payload.userId,
        "high",
        {
            "introId": payload.introId,
            "userQuestion": payload.userQuestion,
            "conversationId": payload.conversationId,
        },
        about=None if payload.introId is None else ("intro_opportunity", payload.introId),
    )
    await add_tasks(ctx, now, check)


# -- 4. user.verified ----------------------------------------------------------------


@registry.handler(
    "user.verified",
    name="yachtparty.handlers.user_verified",
    description=(
        "A member was verified: invalidate caches and, a minute later, tell them their "
        "priorities (notify_user_of_priorities task)."
    ),
    payload=UserVerified,
    transactional=True,
)
async def user_verified(event: Event, ctx: HandlerContext) -> None:
    payload = payload_of(ctx, UserVerified)
    await require_user(ctx, payload.userId)
    now = await db_now(ctx.connection)
    notice = Task(
        NOTIFY_PRIORITIES,
        "account_manager",
        payload.userId,
        "high",
        {"reason": "user_verified", "verificationCompletedAt": payload.verificationCompletedAt},
        delay=VERIFIED_NOTICE_DELAY,
    )
    await add_tasks(ctx, now, notice)
    await invalidate_user_caches(payload.userId, payload.pocAgentType)
    logger.info(
        "User %s verified; point of contact is now %s",
        payload.userId,
        payload.pocAgentType,
        extra=_log_fields(event),
    )


# -- 5. user.message.received --------------------------------------------------------


def _touched(column: Any, event: Event, now: datetime) -> Any:
    """``now``, unless the stored time already covers this event (a replay keeps it).

    A time at or after the event's creation was written while handling this
    event or a later one, so it stays as it is.
    """
    if event.created_at is None:
        return now
    return case(
        (or_(column.is_(None), column < event.created_at), literal(now, UTCDateTime())),
        else_=column,
    )


@registry.handler(
    "user.message.received",
    name="yachtparty.handlers.message_received",
    description="A member sent a message: mark the user and the conversation active now.",
    payload=MessageReceived,
    transactional=True,
)
async def message_received(event: Event, ctx: HandlerContext) -> None:
    payload = payload_of(ctx, MessageReceived)
    now = await db_now(ctx.connection)
    touched_user = await ctx.connection.execute(
        update(users)
        .where(users.c.id == payload.userId)
        .values(last_active_at=_touched(users.c.last_active_at, event, now))
    )
    if touched_user.rowcount == 0:
        logger.warning(
            "user.message.received: no user %s to mark active",
            payload.userId,
            extra=_log_fields(event),
        )
    touched_conversation = await ctx.connection.execute(
        update(conversations)
        .where(conversations.c.id == payload.conversationId)
        .values(last_message_at=_touched(conversations.c.last_message_at, event, now))
    )
    if touched_conversation.rowcount == 0:
        logger.warning(
            "user.message.received: no conversation %s to update",
            payload.conversationId,
            extra=_log_fields(event),
        )


# -- 6. user.response.recorded -------------------------------------------------------


async def _conversation_owner(ctx: HandlerContext, conversation_id: uuid.UUID) -> uuid.UUID:
    """The user a conversation belongs to; ``LookupError`` if there is no such conversation."""
    owner = (
        await ctx.connection.execute(
            select(conversations.c.user_id).where(conversations.c.id == conversation_id)
        )
    ).scalar_one_or_none()
    if owner is None:
        raise LookupError(f"Conversation {conversation_id} not found")
    assert isinstance(owner, uuid.UUID)
    return owner


@registry.handler(
    "user.response.recorded",
    name="yachtparty.handlers.response_recorded",
    description="Log a member's response to an agent (agent_actions_log).",
    payload=ResponseRecorded,
    transactional=True,
)
async def response_recorded(event: Event, ctx: HandlerContext) -> None:
    payload = payload_of(ctx, ResponseRecorded)
    await require_user(ctx, payload.userId)
    now = await db_now(ctx.connection)
    await insert_once(
        ctx.connection,
        agent_actions_log,
        {
            "id": derived_id(event.id, "agent_actions_log"),
            "agent_type": "system",
            "action_type": "user_response_recorded",
            "user_id": payload.userId,
            "context_id": payload.conversationId,
            "context_type": "conversation",
            "input_data": as_json(
                {
                    "responseType": payload.responseType,
                    "context": payload.context,
                    "response": payload.response,
                    "eventId": event.id,
                }
            ),
            "created_at": now,
        },
    )


REJECTIONS = {"payload": {"responseType": ["rejection"]}}
"""Only a rejection needs the owner told; the other responses are logged only."""


@registry.handler(
    "user.response.recorded",
    name="yachtparty.handlers.response_rejected",
    filter=REJECTIONS,
    description=(
        "A member rejected what an agent offered: queue a notify_user_of_priorities "
        "task for the conversation's owner."
    ),
    payload=ResponseRecorded,
    transactional=True,
)
async def response_rejected(event: Event, ctx: HandlerContext) -> None:
    """Its own subscription: a missing conversation retries this alone, not the log row."""
    payload = payload_of(ctx, ResponseRecorded)
    if payload.responseType != "rejection":
        return  # REJECTIONS routes none here; a delivery made by hand does nothing
    # The responder must exist, as for the log row: a response from nobody notifies nobody.
    await require_user(ctx, payload.userId)
    owner = await _conversation_owner(ctx, payload.conversationId)
    now = await db_now(ctx.connection)
    notice = Task(
        NOTIFY_PRIORITIES,
        "account_manager",
        owner,
        "medium",
        {
            "reason": "user_rejection",
            "conversationId": payload.conversationId,
            "context": payload.context,
            "response": payload.response,
        },
        about=("conversation", payload.conversationId),
    )
    await add_tasks(ctx, now, notice)


# -- 7. conversation.intent_classified -----------------------------------------------


@registry.handler(
    "conversation.intent_classified",
    name="yachtparty.handlers.intent_classified",
    description=(
        "Record a conversation's classified intent in conversations.metadata; a confident "
        "one (> 0.8) queues a notify_user_of_priorities task."
    ),
    payload=IntentClassified,
    transactional=True,
)
async def intent_classified(event: Event, ctx: HandlerContext) -> None:
    payload = payload_of(ctx, IntentClassified)
    now = await db_now(ctx.connection)
    row = (
        await ctx.connection.execute(
            select(conversations.c.user_id, conversations.c.metadata)
            .where(conversations.c.id == payload.conversationId)
            .with_for_update()
        )
    ).first()
    if row is None:
        logger.warning(
            "conversation.intent_classified: no conversation %s to update",
            payload.conversationId,
            extra=_log_fields(event),
        )
    else:
        current = row.metadata if isinstance(row.metadata, dict) else {}
        # intent_event_id marks the event the intent came from: a replay of it
        # leaves the metadata (and its intent_classified_at) as they are.
        if current.get("intent_event_id") != str(event.id):
            merged = current | as_json(
                {
                    "last_intent": payload.intent,
                    "intent_confidence": payload.confidence,
                    "intent_classified_at": now,
                    "intent_context": payload.context,
                    "intent_event_id": event.id,
                }
            )
            await ctx.connection.execute(
                update(conversations)
                .where(conversations.c.id == payload.conversationId)
                .values(metadata=merged, updated_at=now)
            )
    if payload.confidence <= INTENT_TASK_CONFIDENCE:
        return
    if row is None:
        raise LookupError(f"Conversation {payload.conversationId} not found")
    notice = Task(
        NOTIFY_PRIORITIES,
        "account_manager",
        row.user_id,
        "medium",
        {"reason": payload.intent, "conversationId": payload.conversationId},
        about=("conversation", payload.conversationId),
    )
    await add_tasks(ctx, now, notice)


# -- 8. solution.research_complete ---------------------------------------------------


async def _active_conversation(ctx: HandlerContext, user_id: uuid.UUID) -> uuid.UUID:
    """The user's most recently active ``active`` conversation."""
    activity = func.coalesce(conversations.c.last_message_at, conversations.c.created_at)
    found = (
        await ctx.connection.execute(
            select(conversations.c.id)
            .where(conversations.c.user_id == user_id, conversations.c.status == "active")
            .order_by(
                activity.desc().nulls_last(),
                conversations.c.created_at.desc().nulls_last(),
                conversations.c.id.desc(),
            )
            .limit(1)
        )
    ).scalar_one_or_none()
    if found is None:
        raise LookupError(f"No active conversation found for user {user_id}")
    assert isinstance(found, uuid.UUID)
    return found


@registry.handler(
    "solution.research_complete",
    name="yachtparty.handlers.research_complete",
    description=(
        "Solution research finished: have the Concierge deliver the findings in the user's "
        "active conversation and mark the workflow completed."
    ),
    payload=ResearchComplete,
    transactional=True,
)
async def research_complete(event: Event, ctx: HandlerContext) -> None:
    payload = payload_of(ctx, ResearchComplete)
    await require_user(ctx, payload.userId)
    now = await db_now(ctx.connection)
    conversation_id = await _active_conversation(ctx, payload.userId)
    delivery = Task(
        "solution_workflow_timeout",
        "concierge",
        payload.userId,
        "high",
        {
            "workflowId": payload.workflowId,
            "requestDescription": payload.requestDescription,
            # Stored as sent: the model only checked its shape.
            "findings": event.payload["findings"],
            "conversationId": conversation_id,
        },
        about=("solution_workflow", payload.workflowId),
    )
    await add_tasks(ctx, now, delivery)
    table = solution_workflows
    already = table.c.status.is_not_distinct_from("completed") & (
        table.c.completed_at.is_not_distinct_from(payload.completedAt)
    )
    completed = await ctx.connection.execute(
        update(table)
        .where(table.c.id == payload.workflowId, ~already)
        .values(status="completed", completed_at=payload.completedAt, updated_at=now)
    )
    if completed.rowcount == 0 and not await _exists(ctx, table, payload.workflowId):
        logger.warning(
            "solution.research_complete: no solution workflow %s to complete",
            payload.workflowId,
            extra=_log_fields(event),
        )


# -- 9. intro.completed --------------------------------------------------------------


async def _complete_intro(
    event: Event, ctx: HandlerContext, payload: IntroCompleted, now: datetime
) -> None:
    """Mark the intro completed; an intro completed before keeps its first completion time."""
    table = intro_opportunities
    already = table.c.status.is_not_distinct_from("completed") & (
        table.c.intro_completed_at.is_not(None)
    )
    result = await ctx.connection.execute(
        update(table)
        .where(table.c.id == payload.introId, ~already)
        .values(
            status="completed",
            intro_completed_at=payload.completedAt,
            updated_at=now,
        )
    )
    if result.rowcount == 0 and not await _exists(ctx, table, payload.introId):
        logger.warning(
            "intro.completed: no intro opportunity %s to complete",
            payload.introId,
            extra=_log_fields(event),
        )


@registry.handler(
    "intro.completed",
    name="yachtparty.handlers.intro_completed",
    description=(
        "An intro happened: mark it completed, award the connector's credits once per intro "
        "(credit_events -> users.credit_balance), and queue notifications."
    ),
    payload=IntroCompleted,
    transactional=True,
)
async def intro_completed(event: Event, ctx: HandlerContext) -> None:
    payload = payload_of(ctx, IntroCompleted)
    await require_user(ctx, payload.connectorUserId)
    if payload.innovatorId is not None:
        await require_user(ctx, payload.innovatorId)
    now = await db_now(ctx.connection)
    await _complete_intro(event, ctx, payload, now)
    if not await _award_credits(event, ctx, payload, now):
        # This intro's completion was handled already (by this event or another).
        logger.info(
            "intro.completed: credits for intro %s were already awarded; nothing to do",
            payload.introId,
            extra=_log_fields(event),
        )
        return
    about = ("intro_opportunity", payload.introId)
    reason = {"reason": "intro_completed"}
    tasks = [
        Task(
            NOTIFY_PRIORITIES,
            "concierge",
            payload.connectorUserId,
            "medium",
            reason | {"creditsAwarded": payload.creditsAwarded, "introId": payload.introId},
            about=about,
            key="connector",
        )
    ]
    if payload.innovatorId is not None:
        tasks.append(
            Task(
                NOTIFY_PRIORITIES,
                "innovator",
                payload.innovatorId,
                "high",
                reason | {"introId": payload.introId, "prospectId": payload.prospectId},
                about=about,
                key="innovator",
            )
        )
    await add_tasks(ctx, now, *tasks)


async def _award_credits(
    event: Event, ctx: HandlerContext, payload: IntroCompleted, now: datetime
) -> bool:
    """The connector's credits for this intro, once per intro; False if awarded before."""
    credits = payload.creditsAwarded
    return await insert_once(
        ctx.connection,
        credit_events,
        {
            "id": derived_id(event.id, "credit_event"),
            "user_id": payload.connectorUserId,
            "event_type": "intro_completed",
            "amount": credits,
            "reference_type": "intro_opportunity",
            "reference_id": payload.introId,
            "idempotency_key": f"intro_completed:{payload.introId}",
            "description": f"Intro completed - {credits} credits earned",
            "created_at": now,
            "processed": True,
        },
    )


# -- 10. community.response_received --------------------------------------------------


@registry.handler(
    "community.response_received",
    name="yachtparty.handlers.response_received",
    description=(
        "An expert answered a community request: hand it to Solution Saga (for a workflow's "
        "request) and tell the requester's Account Manager."
    ),
    payload=ResponseReceived,
    transactional=True,
)
async def response_received(event: Event, ctx: HandlerContext) -> None:
    payload = payload_of(ctx, ResponseReceived)
    table = community_requests
    request = (
        await ctx.connection.execute(
            select(table.c.context_id, table.c.context_type, table.c.requesting_user_id).where(
                table.c.id == payload.requestId
            )
        )
    ).first()
    if request is None:
        raise LookupError(f"Community request {payload.requestId} not found")
    now = await db_now(ctx.connection)
    tasks = []
    if request.context_type == "solution_workflow" and request.context_id is not None:
        tasks.append(
            Task(
                "process_community_response",
                "solution_saga",
                request.requesting_user_id,
                "medium",
                {"responseId": payload.responseId, "requestId": payload.requestId},
                about=("solution_workflow", request.context_id),
            )
        )
    if request.requesting_user_id is not None:
        tasks.append(
            Task(
                "community_response_available",
                "account_manager",
                request.requesting_user_id,
                "high",
                {
                    "responseId": payload.responseId,
                    "requestId": payload.requestId,
                    "expertUserId": payload.expertUserId,
                    "responseSummary": payload.responseSummary,
                },
                about=("community_response", payload.responseId),
            )
        )
    await add_tasks(ctx, now, *tasks)


# -- 11. account_manager.processing.completed -----------------------------------------


@registry.handler(
    "account_manager.processing.completed",
    name="yachtparty.handlers.processing_completed",
    description=(
        "Log an Account Manager run; urgent items queue an urgent "
        "notify_user_of_priorities task for the Concierge."
    ),
    payload=ProcessingCompleted,
    transactional=True,
)
async def processing_completed(event: Event, ctx: HandlerContext) -> None:
    payload = payload_of(ctx, ProcessingCompleted)
    await require_user(ctx, payload.userId)
    now = await db_now(ctx.connection)
    await insert_once(
        ctx.connection,
        agent_actions_log,
        {
            "id": derived_id(event.id, "agent_actions_log"),
            "agent_type": "account_manager",
            "action_type": "processing_completed",
            "user_id": payload.userId,
            "output_data": as_json(
                {
                    "processedEvents": payload.processedEvents,
                    "urgentItems": payload.urgentItems,
                    "prioritiesUpdated": payload.prioritiesUpdated,
                    "tasksCreated": payload.tasksCreated,
                    "completedAt": payload.completedAt,
                    "eventId": event.id,
                }
            ),
            "created_at": now,
        },
    )
    if payload.urgentItems > 0:
        reason = {"reason": "urgent_priorities_detected", "urgentCount": payload.urgentItems}
        await add_tasks(
            ctx, now, Task(NOTIFY_PRIORITIES, "concierge", payload.userId, "urgent", reason)
        )
