"""Sample Yachtparty data and traffic, for ``eventproc demo``, tests and benchmarks.

The demo gets them through the registry's sample hook (:func:`demo_sample`,
registered with ``registry.on_sample``), never by importing this module.

:func:`load_sample_data` inserts a small, consistent world (users, some of
them verified experts; active conversations; solution workflows; intro
opportunities; open community requests). :func:`traffic` turns that world into
a realistic stream of all 11 event types, plus a share of bad events so that
the skip and dead-letter paths show too. Both are deterministic for a given
seed (event ids aside: they are fresh, time-ordered uuids, so the same traffic
can be published again).

Every event says what it is in ``metadata["sample"]``; :func:`expected_outcome`
gives the outcome it must end with once processed:

==================== ============================================= ===============
``metadata.sample``  what it is                                    final outcome
==================== ============================================= ===============
``ok``               a valid event                                 succeeded
``bad_unknown_type`` an event type nobody handles                  skipped
``bad_missing_field`` a required payload field left out            dead_lettered at once
``bad_invalid_uuid`` a uuid field that is not a uuid               dead_lettered at once
``bad_missing_user`` a valid payload naming a user who does not    dead_lettered after
                     exist                                         every retry
==================== ============================================= ===============

For the two invalid-payload kinds ``metadata["field"]`` names the bad field;
``bad_missing_user`` events carry the missing ``metadata["userId"]``. Bad
events never share an aggregate with good ones, so a dead letter (which, with
``AGGREGATE_FAILURE=block``, holds its aggregate back) never stalls good traffic.
"""

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc import Event, NewEvent, Outcome, Sample
from eventproc.columns import db_now, insert_ignoring_conflicts
from yachtparty.effects import CREATED_BY
from yachtparty.registry import registry
from yachtparty.tables import (
    community_requests,
    conversations,
    intro_opportunities,
    solution_workflows,
)
from yachtparty.tables import users as users_table

OK = "ok"
BAD_UNKNOWN_TYPE = "bad_unknown_type"
BAD_MISSING_FIELD = "bad_missing_field"
BAD_INVALID_UUID = "bad_invalid_uuid"
BAD_MISSING_USER = "bad_missing_user"
BAD_KINDS = (BAD_UNKNOWN_TYPE, BAD_MISSING_FIELD, BAD_INVALID_UUID, BAD_MISSING_USER)

EXPECTED_OUTCOMES: dict[str, Outcome] = {
    OK: Outcome.SUCCEEDED,
    BAD_UNKNOWN_TYPE: Outcome.SKIPPED,
    BAD_MISSING_FIELD: Outcome.DEAD_LETTERED,
    BAD_INVALID_UUID: Outcome.DEAD_LETTERED,
    BAD_MISSING_USER: Outcome.DEAD_LETTERED,
}

UNKNOWN_EVENT_TYPE = "yachtparty.sample.unknown"

EXPERTISE = (
    "ai",
    "saas",
    "fintech",
    "marketing",
    "sales",
    "security",
    "devops",
    "healthcare",
    "logistics",
    "climate",
    "data_engineering",
    "hr_tech",
)
NO_EXPERT_TOPICS = ("underwater_basket_weaving", "quantum_catering")
CATEGORIES = ("crm", "analytics", "hiring", "fundraising", "infrastructure", None)
FIRST_NAMES = ("Ada", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivo", "Jun")
LAST_NAMES = ("Okafor", "Lindqvist", "Moreau", "Tanaka", "Silva", "Novak", "Haddad", "Reyes")
PROBLEMS = (
    "a CRM that works for a 12-person sales team",
    "SOC 2 readiness tooling",
    "a data warehouse that our analysts can run themselves",
    "an applicant tracking system for engineering hiring",
    "carbon accounting for our logistics fleet",
    "fraud detection for card-not-present payments",
)
MESSAGES = (
    "Thanks, that helps!",
    "Can you find someone who has done this before?",
    "Not interested, sorry.",
    "What did the vendor say?",
    "Let's set up the intro.",
)


def kind_of(event: NewEvent | Event) -> str:
    """The sample kind of an event: its ``metadata["sample"]`` (``ok`` when absent)."""
    return str((event.metadata or {}).get("sample", OK))


def expected_outcome(event: NewEvent | Event) -> Outcome:
    """The outcome a sample event must end with (from its ``metadata["sample"]``)."""
    return EXPECTED_OUTCOMES[kind_of(event)]


# -- the world -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SampleUser:
    id: uuid.UUID
    phone_number: str
    first_name: str
    last_name: str
    verified: bool
    expertise: tuple[str, ...]
    conversation_id: uuid.UUID
    """The user's most recently active ``active`` conversation."""


@dataclass(frozen=True, slots=True)
class SampleWorkflow:
    id: uuid.UUID
    user_id: uuid.UUID
    request_description: str


@dataclass(frozen=True, slots=True)
class SampleIntro:
    id: uuid.UUID
    connector_user_id: uuid.UUID
    innovator_id: uuid.UUID | None
    prospect_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class SampleRequest:
    id: uuid.UUID
    requesting_user_id: uuid.UUID
    workflow_id: uuid.UUID | None
    expertise_needed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SampleWorld:
    """What :func:`load_sample_data` inserted: the ids traffic may refer to."""

    users: tuple[SampleUser, ...]
    workflows: tuple[SampleWorkflow, ...]
    intros: tuple[SampleIntro, ...]
    requests: tuple[SampleRequest, ...]

    @property
    def experts(self) -> tuple[SampleUser, ...]:
        """Verified users with expertise."""
        return tuple(user for user in self.users if user.verified and user.expertise)

    def user(self, user_id: uuid.UUID) -> SampleUser:
        return next(user for user in self.users if user.id == user_id)


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


async def _insert(connection: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        await connection.execute(insert_ignoring_conflicts(connection, table), rows)


async def load_sample_data(
    connection: AsyncConnection, *, users: int = 40, seed: int = 7
) -> SampleWorld:
    """Insert a sample world (idempotently: loading the same seed twice adds nothing).

    Run it in a transaction of a migrated database, e.g.
    ``async with store.engine.begin() as connection``. Needs ``users >= 4``.
    """
    if users < 4:
        raise ValueError("users must be >= 4")
    rng = random.Random(seed)
    now = await db_now(connection)
    people = _make_users(rng, users)
    world_users, conversation_rows = _users_and_conversations(rng, people, now)
    experts = [user for user in world_users if user.verified and user.expertise]
    workflows = [
        SampleWorkflow(_uuid(rng), user.id, f"Find {rng.choice(PROBLEMS)}")
        for index, user in enumerate(world_users)
        if index == 0 or rng.random() < 0.35
    ]
    intros = _make_intros(rng, world_users, experts, max(2, users // 2))
    requests = _make_requests(rng, world_users, workflows, max(2, users // 8))
    world = SampleWorld(tuple(world_users), tuple(workflows), tuple(intros), tuple(requests))
    await _insert(connection, users_table, [_user_row(person, now) for person in people])
    await _insert(connection, conversations, conversation_rows)
    await _insert(connection, solution_workflows, [_workflow_row(w, now) for w in workflows])
    await _insert(
        connection, intro_opportunities, [_intro_row(rng, intro, now) for intro in intros]
    )
    await _insert(
        connection,
        community_requests,
        [_request_row(rng, request, now) for request in requests],
    )
    return world


def _users_and_conversations(
    rng: random.Random, people: list[dict[str, Any]], now: datetime
) -> tuple[list[SampleUser], list[dict[str, Any]]]:
    """Each person as a SampleUser with a current conversation; some get older ones too."""
    conversation_rows: list[dict[str, Any]] = []
    world_users: list[SampleUser] = []
    for index, person in enumerate(people):
        current = _uuid(rng)
        conversation_rows.append(_conversation(current, person, "active", now - timedelta(hours=1)))
        if index % 7 == 3:  # an older conversation that is still active
            older = _conversation(_uuid(rng), person, "active", now - timedelta(days=2))
            conversation_rows.append(older)
        if index % 5 == 1:  # and one that is closed
            closed = _conversation(_uuid(rng), person, "closed", now - timedelta(minutes=5))
            conversation_rows.append(closed)
        world_users.append(SampleUser(**person, conversation_id=current))
    return world_users, conversation_rows


def _make_intros(
    rng: random.Random, world_users: list[SampleUser], experts: list[SampleUser], count: int
) -> list[SampleIntro]:
    intros = []
    for _ in range(count):
        connector = rng.choice(world_users)
        innovators = [expert for expert in experts if expert.id != connector.id]
        innovator = rng.choice(innovators) if innovators and rng.random() < 0.7 else None
        intros.append(
            SampleIntro(_uuid(rng), connector.id, innovator.id if innovator else None, _uuid(rng))
        )
    return intros


def _make_requests(
    rng: random.Random,
    world_users: list[SampleUser],
    workflows: list[SampleWorkflow],
    count: int,
) -> list[SampleRequest]:
    requests = []
    for _ in range(count):
        requester = rng.choice(world_users)
        own = [workflow for workflow in workflows if workflow.user_id == requester.id]
        requests.append(
            SampleRequest(
                _uuid(rng),
                requester.id,
                own[0].id if own and rng.random() < 0.6 else None,
                tuple(rng.sample(EXPERTISE, 2)),
            )
        )
    return requests


def _workflow_row(workflow: SampleWorkflow, now: datetime) -> dict[str, Any]:
    return {
        "id": workflow.id,
        "user_id": workflow.user_id,
        "request_description": workflow.request_description,
        "current_step": "research",
        "status": "in_progress",
        "created_at": now,
        "updated_at": now,
    }


def _make_users(rng: random.Random, count: int) -> list[dict[str, Any]]:
    people = []
    for index in range(count):
        user_id = _uuid(rng)
        expert = index % 3 == 0  # a third are verified experts
        people.append(
            {
                "id": user_id,
                "phone_number": f"+1555{user_id.int % 10**10:010d}",
                "first_name": rng.choice(FIRST_NAMES),
                "last_name": rng.choice(LAST_NAMES),
                "verified": expert or rng.random() < 0.2,
                "expertise": tuple(rng.sample(EXPERTISE, rng.randint(2, 4))) if expert else (),
            }
        )
    return people


def _user_row(person: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {**person, "expertise": list(person["expertise"]), "created_at": now, "updated_at": now}


def _conversation(
    conversation_id: uuid.UUID, person: dict[str, Any], status: str, last_message_at: datetime
) -> dict[str, Any]:
    return {
        "id": conversation_id,
        "user_id": person["id"],
        "phone_number": person["phone_number"],
        "status": status,
        "last_message_at": last_message_at,
        "metadata": {},
        "created_at": last_message_at - timedelta(days=1),
        "updated_at": last_message_at,
    }


def _intro_row(rng: random.Random, intro: SampleIntro, now: datetime) -> dict[str, Any]:
    return {
        "id": intro.id,
        "connector_user_id": intro.connector_user_id,
        "innovator_id": intro.innovator_id,
        "prospect_id": intro.prospect_id,
        "first_name": rng.choice(FIRST_NAMES),
        "last_name": rng.choice(LAST_NAMES),
        "status": "open",
        "bounty_credits": 50,
        "created_at": now,
        "updated_at": now,
    }


def _request_row(rng: random.Random, request: SampleRequest, now: datetime) -> dict[str, Any]:
    return {
        "id": request.id,
        "requesting_agent_type": "solution_saga",
        "requesting_user_id": request.requesting_user_id,
        "context_id": request.workflow_id,
        "context_type": "solution_workflow" if request.workflow_id else None,
        "question": f"Has anyone used {rng.choice(PROBLEMS)}?",
        "category": rng.choice(CATEGORIES),
        "expertise_needed": list(request.expertise_needed),
        "target_user_ids": [],
        "status": "open",
        "urgency": "medium",
        "created_at": now,
        "expires_at": now + timedelta(days=7),
    }


# -- traffic ---------------------------------------------------------------------

Payload = tuple[dict[str, Any], str | None, uuid.UUID | None, str]
"""(payload, aggregate_type, aggregate_id, created_by)."""


def _when(rng: random.Random) -> str:
    moment = datetime(2025, 6, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(86_400 * 30))
    return moment.isoformat().replace("+00:00", "Z")


class _Traffic:
    """Builds one payload per event type from the world and a seeded rng."""

    def __init__(self, world: SampleWorld, rng: random.Random) -> None:
        if not (world.users and world.experts and world.workflows and world.intros):
            raise ValueError("the world needs users, experts, workflows and intros")
        if not world.requests:
            raise ValueError("the world needs community requests")
        self.world = world
        self.rng = rng
        self.builders: dict[str, Callable[[], Payload]] = {
            "user.inquiry.solution_needed": self.solution_needed,
            "community.request_needed": self.community_request,
            "user.intro_inquiry": self.intro_inquiry,
            "user.verified": self.user_verified,
            "user.message.received": self.message_received,
            "user.response.recorded": self.response_recorded,
            "conversation.intent_classified": self.intent_classified,
            "solution.research_complete": self.research_complete,
            "intro.completed": self.intro_completed,
            "community.response_received": self.response_received,
            "account_manager.processing.completed": self.processing_completed,
        }

    def user(self) -> SampleUser:
        return self.rng.choice(self.world.users)

    def solution_needed(self) -> Payload:
        user = self.user()
        key = "description" if self.rng.random() < 0.3 else "requestDescription"
        payload = {
            "userId": str(user.id),
            "conversationId": str(user.conversation_id),
            key: f"Looking for {self.rng.choice(PROBLEMS)}",
            "category": self.rng.choice(CATEGORIES),
            "urgency": self.rng.choice(("low", "medium", "high")),
        }
        return payload, "user", user.id, "concierge"

    def community_request(self) -> Payload:
        user = self.user()
        if self.rng.random() < 0.15:
            expertise = [self.rng.choice(NO_EXPERT_TOPICS)]
        else:
            expertise = self.rng.sample(EXPERTISE, self.rng.randint(1, 2))
        workflows = [w for w in self.world.workflows if w.user_id == user.id]
        payload: dict[str, Any] = {
            "question": f"Who has experience with {' and '.join(expertise)}?",
            "expertiseNeeded": expertise,
            "requestingAgentType": "solution_saga",
            "requestingUserId": str(user.id),
            "category": self.rng.choice(CATEGORIES),
            "requesterContext": f"{user.first_name} is evaluating {self.rng.choice(PROBLEMS)}",
            "urgency": self.rng.choice(("low", "medium", "high")),
            "requestSummary": f"Experience with {', '.join(expertise)} " * 8,
        }
        if workflows:
            payload |= {"contextId": str(workflows[0].id), "contextType": "solution_workflow"}
        return payload, "user", user.id, "solution_saga"

    def intro_inquiry(self) -> Payload:
        intro = self.rng.choice(self.world.intros)
        user = self.world.user(intro.connector_user_id)
        payload = {
            "userId": str(user.id),
            "introId": str(intro.id),
            "userQuestion": "Did the intro happen yet?",
            "conversationId": str(user.conversation_id),
        }
        return payload, "user", user.id, "concierge"

    def user_verified(self) -> Payload:
        user = self.user()
        payload = {
            "userId": str(user.id),
            "verificationCompletedAt": _when(self.rng),
            "pocAgentType": self.rng.choice(("concierge", "innovator")),
        }
        return payload, "user", user.id, "concierge"

    def message_received(self) -> Payload:
        user = self.user()
        payload = {
            "userId": str(user.id),
            "conversationId": str(user.conversation_id),
            "message": self.rng.choice(MESSAGES),
            "phoneNumber": user.phone_number,
            "messageId": f"SM{self.rng.getrandbits(64):016x}",
        }
        return payload, "conversation", user.conversation_id, "twilio_webhook"

    def response_recorded(self) -> Payload:
        user = self.user()
        payload = {
            "userId": str(user.id),
            "conversationId": str(user.conversation_id),
            "responseType": self.rng.choice(
                ("feedback", "acceptance", "rejection", "clarification")
            ),
            "context": "priority_intro_offer",
            "response": self.rng.choice(MESSAGES),
        }
        return payload, "conversation", user.conversation_id, "concierge"

    def intent_classified(self) -> Payload:
        user = self.user()
        payload = {
            "conversationId": str(user.conversation_id),
            "intent": self.rng.choice(("solution_inquiry", "intro_request", "small_talk")),
            "confidence": round(self.rng.uniform(0.4, 1.0), 2),
            "context": {"messageCount": self.rng.randint(1, 30)},
        }
        return payload, "conversation", user.conversation_id, "concierge"

    def research_complete(self) -> Payload:
        workflow = self.rng.choice(self.world.workflows)
        innovators = self.rng.sample(self.world.experts, min(2, len(self.world.experts)))
        payload = {
            "workflowId": str(workflow.id),
            "userId": str(workflow.user_id),
            "requestDescription": workflow.request_description,
            "findings": {
                "matchedInnovators": [
                    {"userId": str(expert.id), "expertise": list(expert.expertise)}
                    for expert in innovators
                ],
                "potentialVendors": ["Acme", "Globex"],
                "communityInsights": [],
                "clarifyingQuestions": ["What is the budget?"],
            },
            "completedAt": _when(self.rng),
        }
        return payload, "solution_workflow", workflow.id, "solution_saga"

    def intro_completed(self) -> Payload:
        intro = self.rng.choice(self.world.intros)
        payload = {
            "introId": str(intro.id),
            "connectorUserId": str(intro.connector_user_id),
            "innovatorId": str(intro.innovator_id) if intro.innovator_id else None,
            "prospectId": str(intro.prospect_id),
            "completedAt": _when(self.rng),
            "creditsAwarded": self.rng.choice((25, 50, 100)),
        }
        return payload, "intro_opportunity", intro.id, "account_manager"

    def response_received(self) -> Payload:
        request = self.rng.choice(self.world.requests)
        expert = self.rng.choice(self.world.experts or self.world.users)
        key = "responderId" if self.rng.random() < 0.3 else "expertUserId"
        payload = {
            "responseId": str(_uuid(self.rng)),
            "requestId": str(request.id),
            key: str(expert.id),
            "responseSummary": "We rolled this out last year; happy to share notes.",
            "verbatimAnswer": "Took us 6 weeks, start with the data model.",
        }
        return payload, "community_request", request.id, "concierge"

    def processing_completed(self) -> Payload:
        user = self.user()
        payload = {
            "userId": str(user.id),
            "processedEvents": self.rng.randint(1, 20),
            "urgentItems": self.rng.choice((0, 0, 0, 1, 2)),
            "prioritiesUpdated": self.rng.randint(0, 5),
            "tasksCreated": self.rng.randint(0, 3),
            "completedAt": _when(self.rng),
        }
        return payload, "user", user.id, "account_manager"


EVENT_WEIGHTS: dict[str, int] = {
    "user.message.received": 30,
    "conversation.intent_classified": 12,
    "user.response.recorded": 10,
    "user.inquiry.solution_needed": 8,
    "account_manager.processing.completed": 8,
    "community.request_needed": 6,
    "community.response_received": 6,
    "user.intro_inquiry": 6,
    "solution.research_complete": 5,
    "intro.completed": 5,
    "user.verified": 4,
}
"""How often each type shows up in sample traffic (after one of each)."""

# Which payload fields invalid-payload samples break, per event type.
_REQUIRED = {
    "user.inquiry.solution_needed": ("userId", "conversationId"),
    "user.verified": ("userId", "verificationCompletedAt", "pocAgentType"),
    "intro.completed": ("introId", "connectorUserId", "completedAt", "creditsAwarded"),
    "community.request_needed": ("question", "expertiseNeeded"),
    "conversation.intent_classified": ("conversationId", "intent", "confidence"),
}
_UUIDS = {
    "user.inquiry.solution_needed": ("userId", "conversationId"),
    "user.verified": ("userId",),
    "intro.completed": ("introId", "connectorUserId"),
    "community.response_received": ("responseId", "requestId"),
    "account_manager.processing.completed": ("userId",),
}
# Types whose handler needs the user to exist, and the field naming that user.
_USER_FIELDS = {
    "user.inquiry.solution_needed": "userId",
    "user.intro_inquiry": "userId",
    "user.verified": "userId",
    "account_manager.processing.completed": "userId",
    "intro.completed": "connectorUserId",
}


def traffic(
    world: SampleWorld, n: int, *, bad_share: float = 0.05, seed: int = 11
) -> list[NewEvent]:
    """``n`` sample events over ``world``: every type once, then a weighted mix.

    About ``bad_share`` of them are bad, cycling through the bad kinds (so
    any 4 or more bad events include each kind). Publish them with
    ``store.event_insert_many``; check each with :func:`expected_outcome`.
    """
    if n < 0 or not 0 <= bad_share <= 1:
        raise ValueError("need n >= 0 and 0 <= bad_share <= 1")
    rng = random.Random(seed)
    builder = _Traffic(world, rng)
    bad_count = min(n, round(n * bad_share))
    good_count = n - bad_count
    types = list(EVENT_WEIGHTS)
    plan = types[:good_count] + rng.choices(
        types, weights=list(EVENT_WEIGHTS.values()), k=max(good_count - len(types), 0)
    )
    plan += [BAD_KINDS[index % len(BAD_KINDS)] for index in range(bad_count)]
    rng.shuffle(plan)
    # Built in publishing order, so that the time-ordered ids follow it too.
    return [_bad(builder, item) if item in BAD_KINDS else _good(builder, item) for item in plan]


def _event(
    event_type: str, built: Payload, metadata: dict[str, Any], priority: int = 0
) -> NewEvent:
    payload, aggregate_type, aggregate_id, created_by = built
    return NewEvent(
        event_type=event_type,
        payload=payload,
        aggregate_type=aggregate_type,
        aggregate_id=aggregate_id,
        created_by=created_by,
        metadata=metadata,
        priority=priority,
    )


def _good(builder: _Traffic, event_type: str) -> NewEvent:
    return _event(event_type, builder.builders[event_type](), {"sample": OK})


def _bad(builder: _Traffic, kind: str) -> NewEvent:
    """A bad event, on an aggregate of its own.

    With ``ORDERING=aggregate`` and ``AGGREGATE_FAILURE=block`` a dead-lettered
    event holds back the later events of its aggregate; sample traffic keeps
    its bad events apart so that every good event still reaches its outcome.
    """
    rng = builder.rng
    if kind == BAD_UNKNOWN_TYPE:
        built: Payload = ({"note": "nobody handles this"}, None, None, "sample")
        return _event(UNKNOWN_EVENT_TYPE, built, {"sample": kind})
    if kind == BAD_MISSING_USER:
        event_type = rng.choice(sorted(_USER_FIELDS))
        payload, aggregate_type, _, created_by = builder.builders[event_type]()
        missing = _uuid(rng)
        payload[_USER_FIELDS[event_type]] = str(missing)
        aggregate_id = missing if aggregate_type == "user" else _uuid(rng)
        built = (payload, aggregate_type, aggregate_id, created_by)
        return _event(event_type, built, {"sample": kind, "userId": str(missing)})
    fields = _REQUIRED if kind == BAD_MISSING_FIELD else _UUIDS
    event_type = rng.choice(sorted(fields))
    field = rng.choice(fields[event_type])
    payload, aggregate_type, _, created_by = builder.builders[event_type]()
    if kind == BAD_MISSING_FIELD:
        del payload[field]
    else:
        payload[field] = "not-a-uuid"
    built = (payload, aggregate_type, _uuid(rng), created_by)
    return _event(event_type, built, {"sample": kind, "field": field})


def by_kind(events: Sequence[NewEvent]) -> dict[str, list[NewEvent]]:
    """Group sample events by ``metadata["sample"]``."""
    groups: dict[str, list[NewEvent]] = {}
    for event in events:
        groups.setdefault(kind_of(event), []).append(event)
    return groups


# -- the demo's sample hook --------------------------------------------------------

DEMO_USERS = 40


async def demo_sample(connection: AsyncConnection) -> Sample:
    """What ``eventproc demo`` loads and publishes: a world of 40 users and traffic over it."""
    world = await load_sample_data(connection, users=DEMO_USERS)

    def make_traffic(count: int, seed: int) -> list[NewEvent]:
        return traffic(world, count, seed=seed)

    return Sample(
        summary=f"{len(world.users)} users",
        traffic=make_traffic,
        kind_of=kind_of,
        designed=EXPECTED_OUTCOMES,
    )


registry.on_sample(demo_sample, follow_ups_created_by=CREATED_BY)
