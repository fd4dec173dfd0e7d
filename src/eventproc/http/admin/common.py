"""What every admin router needs: the runtime, the caller as an Audit, error answers, bodies."""

import contextlib
import functools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ParamSpec

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from eventproc.admin.roles import Principal, Role
from eventproc.errors import StoreError
from eventproc.http.admin import paging
from eventproc.http.auth import AUTH_RESPONSES, Guard, require
from eventproc.http.errors import error_responses
from eventproc.http.schemas import OpenModel
from eventproc.store.admin import Audit

if TYPE_CHECKING:
    from eventproc.runtime import Runtime

READ_RESPONSES: dict[int | str, dict[str, Any]] = {
    **AUTH_RESPONSES,
    **error_responses(
        {422: "A bad parameter, an unknown one, or a bad cursor", 503: "Database unreachable"}
    ),
}
WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **READ_RESPONSES,
    **error_responses({400: "Malformed JSON body", 413: "Body larger than MAX_BODY_BYTES"}),
}

P = ParamSpec("P")


def viewer(*params: str) -> Guard:
    """The guard of a read taking only the query parameters ``params`` (422 for any other).

    The parameters are checked first, then the token (as two dependencies
    did, in that order).
    """
    return require(Role.VIEWER, first=paging.only(*params))


def serialized(endpoint: Callable[P, Awaitable[BaseModel]]) -> Callable[P, Awaitable[Response]]:
    """The endpoint's answer serialized once, as it was built.

    Given a model, FastAPI dumps it to a dict, validates that against the
    route's response model again and serializes the result, on the event
    loop the drain runs on; the model was validated when it was built from
    the store's rows. The route's ``response_model`` still documents it, and
    the schemathesis run checks every answer against it.
    """

    @functools.wraps(endpoint)
    async def answer(*args: P.args, **kwargs: P.kwargs) -> Response:
        model = await endpoint(*args, **kwargs)
        return Response(model.model_dump_json(), media_type="application/json")

    return answer


Reason = Field(
    None,
    min_length=1,
    max_length=1000,
    pattern=r"^[^\x00]*$",  # text PostgreSQL can store (no NUL)
    description="Why: kept in the audit trail",
)


class Body(OpenModel):
    """A request body: unknown keys are refused (422), not ignored."""

    model_config = ConfigDict(extra="forbid")


class ActionBody(Body):
    reason: str | None = Reason


def audit_of(who: Principal, reason: str | None = None) -> Audit:
    return Audit(actor=who.actor, role=str(who.role), reason=reason)


def utc_now() -> datetime:
    return datetime.now(UTC)


async def learn_pauses(runtime: "Runtime") -> None:
    """This process's processor learns a pause or resume now (the heartbeat would within 2 s)."""
    with contextlib.suppress(StoreError):
        await runtime.processor.refresh_paused()
