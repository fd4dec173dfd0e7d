"""Payload models: one pydantic model per event type the pack handles.

Field names are the camelCase keys publishers send. A payload that fails its
model never reaches the handler: eventproc dead-letters it at once with a
message naming each missing or invalid field. Unknown extra keys are ignored.

Bounds mirror the columns the values land in (e.g. ``category`` is a
varchar(100)), so a value the database would refuse fails here, permanently,
instead of being retried.
"""

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    field_validator,
)

MAX_INT4 = 2_147_483_647
REQUEST_SUMMARY_MAX = 100


def _as_utc(value: datetime) -> datetime:
    """Naive timestamps are taken as UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""An ISO 8601 timestamp, always returned timezone-aware in UTC."""

Count = Annotated[int, Field(ge=0, le=MAX_INT4)]
Urgency = Literal["low", "medium", "high"]


def _default_when_null(default: str) -> Any:
    """An optional-with-default field that also accepts an explicit ``null``."""
    return BeforeValidator(lambda value: default if value is None else value)


class PackPayload(BaseModel):
    """Shared configuration: camelCase names, aliases accepted, extras ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class SolutionNeeded(PackPayload):
    """``user.inquiry.solution_needed``."""

    userId: uuid.UUID
    conversationId: uuid.UUID
    requestDescription: str = Field(
        validation_alias=AliasChoices("requestDescription", "description")
    )
    category: str | None = Field(default=None, max_length=100)
    urgency: Urgency | None = None


class CommunityRequestNeeded(PackPayload):
    """``community.request_needed``."""

    question: str
    expertiseNeeded: list[str]
    requestingAgentType: str | None = Field(default=None, max_length=50)
    requestingUserId: uuid.UUID | None = None
    contextId: str | None = None
    contextType: str | None = Field(default=None, max_length=50)
    category: str | None = Field(default=None, max_length=100)
    requesterContext: str | None = None
    desiredOutcome: Annotated[str, _default_when_null("backchannel")] = "backchannel"
    urgency: Annotated[str, _default_when_null("medium")] = "medium"
    requestSummary: str | None = None

    @field_validator("requestSummary")
    @classmethod
    def _truncate_summary(cls, value: str | None) -> str | None:
        """Longer summaries are cut to the column's 100 characters, not refused."""
        return value[:REQUEST_SUMMARY_MAX] if value is not None else None

    @property
    def context_uuid(self) -> uuid.UUID | None:
        """``contextId`` when it is a uuid (the column's type), else ``None``."""
        if self.contextId is None:
            return None
        try:
            return uuid.UUID(self.contextId)
        except ValueError:
            return None


class IntroInquiry(PackPayload):
    """``user.intro_inquiry``."""

    userId: uuid.UUID
    introId: uuid.UUID | None = None
    userQuestion: str
    conversationId: uuid.UUID


class UserVerified(PackPayload):
    """``user.verified``."""

    userId: uuid.UUID
    verificationCompletedAt: UtcDatetime
    pocAgentType: Literal["concierge", "innovator"]


class MessageReceived(PackPayload):
    """``user.message.received``."""

    userId: uuid.UUID
    conversationId: uuid.UUID
    message: str
    phoneNumber: str
    messageId: str


class ResponseRecorded(PackPayload):
    """``user.response.recorded``."""

    userId: uuid.UUID
    conversationId: uuid.UUID
    responseType: Literal["feedback", "acceptance", "rejection", "clarification"]
    context: JsonValue
    response: JsonValue


class IntentClassified(PackPayload):
    """``conversation.intent_classified``."""

    conversationId: uuid.UUID
    intent: str = Field(min_length=1)
    confidence: float = Field(ge=0, le=1)
    context: dict[str, JsonValue] | None = None


class Findings(BaseModel):
    """The research findings: checked for shape, then stored as sent."""

    model_config = ConfigDict(extra="allow", frozen=True)

    matchedInnovators: list[JsonValue]
    potentialVendors: list[JsonValue] | None = None
    communityInsights: JsonValue = None
    clarifyingQuestions: list[JsonValue] | None = None


class ResearchComplete(PackPayload):
    """``solution.research_complete``."""

    workflowId: uuid.UUID
    userId: uuid.UUID
    requestDescription: str
    findings: Findings
    completedAt: UtcDatetime


class IntroCompleted(PackPayload):
    """``intro.completed``."""

    introId: uuid.UUID
    connectorUserId: uuid.UUID
    innovatorId: uuid.UUID | None = None
    prospectId: uuid.UUID | None = None
    completedAt: UtcDatetime
    creditsAwarded: Count


class ResponseReceived(PackPayload):
    """``community.response_received``."""

    responseId: uuid.UUID
    requestId: uuid.UUID
    expertUserId: uuid.UUID = Field(validation_alias=AliasChoices("expertUserId", "responderId"))
    responseSummary: str
    verbatimAnswer: str | None = None
    contextId: str | None = None
    contextType: str | None = None


class ProcessingCompleted(PackPayload):
    """``account_manager.processing.completed``."""

    userId: uuid.UUID
    processedEvents: Count
    urgentItems: Count
    prioritiesUpdated: Count
    tasksCreated: Count
    completedAt: UtcDatetime
