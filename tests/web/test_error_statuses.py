"""HTTP statuses come from eventproc's error types (one mapping), never from message text."""

import logging
import uuid

import httpx
import pytest
from fastapi import APIRouter

from eventproc.errors import (
    AlreadyProcessed,
    Conflict,
    EventprocError,
    LeaseLost,
    NotFound,
    RegistryError,
    StoreConflict,
    StoreUnavailable,
)
from eventproc.http import create_app
from eventproc.http.errors import status_for
from eventproc.runtime import Runtime
from support.served import serving


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        # The text of the old string comparison, on a plain Conflict: still 409.
        (Conflict("Event already processed"), 409, "Event already processed"),
        # The type decides, whatever the words.
        (AlreadyProcessed("finished at 12:00; replay it first"), 400, None),
        (Conflict("Event is being processed by w1"), 409, None),
        (StoreConflict("deadlock"), 503, "Database unavailable: deadlock"),
    ],
)
async def test_process_event_answers_by_error_type(
    client: httpx.AsyncClient,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    error: EventprocError,
    status: int,
    body: str | None,
) -> None:
    async def refuse(event_id: uuid.UUID) -> None:
        raise error

    monkeypatch.setattr(runtime.processor, "process_event", refuse)
    response = await client.post("/process-event", json={"event_id": str(uuid.uuid4())})
    assert response.status_code == status
    assert response.json() == {"error": body if body is not None else str(error)}


async def test_any_router_gets_the_mapping(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """A router added later (the admin API) lets errors through and gets the same answers."""
    errors: dict[str, EventprocError] = {
        "processed": AlreadyProcessed("done already"),
        "missing": NotFound("no such dead letter"),
        "busy": Conflict("leased"),
        "down": StoreUnavailable("connection refused"),
        "unmapped": RegistryError("a bug"),
    }
    router = APIRouter()

    @router.get("/raise/{name}")
    async def raising(name: str) -> None:
        raise errors[name]

    app = create_app(runtime)
    app.include_router(router)
    async with serving(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        answers = {name: await client.get(f"/raise/{name}") for name in errors}
        with caplog.at_level(logging.ERROR, logger="eventproc.http"):
            unmapped = await client.get("/raise/unmapped")
    assert {name: answer.status_code for name, answer in answers.items()} == {
        "processed": 400,
        "missing": 404,
        "busy": 409,
        "down": 503,
        "unmapped": 500,
    }
    assert answers["processed"].json() == {"error": "done already"}
    assert answers["down"].json() == {"error": "Database unavailable: connection refused"}
    assert unmapped.json() == {"error": "Internal server error"}
    assert "RegistryError: a bug" in caplog.text


def test_the_most_specific_type_wins() -> None:
    found = {
        name: None if (entry := status_for(error)) is None else entry.status
        for name, error in {
            "already": AlreadyProcessed("x"),
            "conflict": Conflict("Event already processed"),
            "store_conflict": StoreConflict("x"),
            "lease_lost": LeaseLost("x"),
            "not_eventproc": ValueError("x"),
        }.items()
    }
    assert found == {
        "already": 400,
        "conflict": 409,
        "store_conflict": 503,
        "lease_lost": None,
        "not_eventproc": None,
    }
