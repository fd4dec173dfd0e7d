"""/admin/v1/route/test: which subscriptions take an event, and why the others do not.

The same explanation as ``eventproc route test`` (Registry.explain), for the
registry this server runs; nothing is stored, so a viewer may ask.
"""

import math
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field, field_validator

from eventproc.admin.roles import Principal, Role
from eventproc.http.admin.common import WRITE_RESPONSES, Body
from eventproc.http.auth import require
from eventproc.http.deps import get_runtime
from eventproc.http.schemas import OpenModel
from eventproc.routing import Explanation, envelope
from eventproc.routing.explain import Check

router = APIRouter(prefix="/route", tags=["admin: routing"])


class Envelope(Body):
    """What a filter sees of an event (the columns a publisher writes)."""

    event_type: str = Field(min_length=1, max_length=100)
    aggregate_id: uuid.UUID | None = None
    aggregate_type: str | None = Field(None, max_length=50)
    created_by: str | None = Field(None, max_length=100)
    metadata: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None

    @field_validator("metadata", "payload")
    @classmethod
    def _finite(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """NaN and Infinity parse as JSON numbers here but are no JSON an event could hold."""
        if value is not None and not _finite(value):
            raise ValueError("numbers must be finite (no NaN or Infinity)")
        return value


class RouteTest(Body):
    event: Envelope


class CheckBody(OpenModel):
    path: str
    clause: str
    matched: bool
    reason: str
    expected: Any = None
    actual: Any = None
    present: bool
    branches: list[list["CheckBody"]] = Field(
        default_factory=list, description="The alternatives a $or (or an array element) tried"
    )


class SubscriptionResult(OpenModel):
    name: str
    types: list[str]
    filter: dict[str, Any] | None
    matched: bool
    reason: str  # the first failed clause's reason, or why it matched
    failed: CheckBody | None  # the first failed clause, null when it matched
    checks: list[CheckBody]  # every check made, in pattern order (the type check first)


class RouteTestResult(OpenModel):
    event: dict[str, Any]  # the envelope as filters see it
    matched: list[str]  # the subscriptions that take it, in registration order
    subscriptions: list[SubscriptionResult]


@router.post("/test", response_model=RouteTestResult, responses=WRITE_RESPONSES)
async def route_test(
    request: Request,
    body: RouteTest,
    who: Annotated[Principal, Depends(require(Role.VIEWER))],
) -> RouteTestResult:
    """Test an event against every subscription: matched or not, and which clause failed."""
    given = body.event
    seen = envelope(
        given.event_type,
        given.payload,
        aggregate_id=given.aggregate_id,
        aggregate_type=given.aggregate_type,
        created_by=given.created_by,
        metadata=given.metadata,
    )
    results = get_runtime(request).registry.explain(seen)
    return RouteTestResult(
        event=seen,
        matched=[entry.name for entry, why in results if why.matched],
        subscriptions=[
            SubscriptionResult(
                name=entry.name,
                types=list(entry.types),
                filter=None if entry.filter is None else dict(entry.filter),
                **_explained(why),
            )
            for entry, why in results
        ],
    )


def _explained(why: Explanation) -> dict[str, Any]:
    failed = why.failures
    return {
        "matched": why.matched,
        "reason": why.reason,
        "failed": _check(failed[0]) if failed else None,
        "checks": [_check(check) for check in why.checks],
    }


def _check(check: Check) -> CheckBody:
    return CheckBody(
        path=check.path,
        clause=check.clause,
        matched=check.matched,
        reason=check.reason,
        expected=check.expected,
        actual=check.actual,
        present=check.present,
        branches=[[_check(inner) for inner in branch] for branch in check.branches],
    )


def _finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(inner) for inner in value.values())
    if isinstance(value, list):
        return all(_finite(inner) for inner in value)
    return True
