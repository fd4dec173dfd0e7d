import asyncio
import uuid

import httpx
import pytest

from eventproc.admin.roles import Role, TokenBook
from eventproc.event import NewEvent
from eventproc.runtime import Runtime
from eventproc.store import ClaimPolicy, Lease, WriteBack


async def test_process_event_runs_the_event(client: httpx.AsyncClient, runtime: Runtime) -> None:
    event = NewEvent("t.ok", {})
    await runtime.store.event_insert_many([event])
    response = await client.post("/process-event", json={"event_id": str(event.id)})
    runner = asyncio.create_task(runtime.processor.run())  # its completer writes the result
    assert response.status_code == 202
    assert response.json() == {
        "success": True,
        "message": "Event processing started",
        "event_id": str(event.id),
    }
    await asyncio.wait_for(runtime.processor.signals.flushed.wait(), 5)
    runtime.processor.stop()
    await runner
    row = await runtime.store.event_get(event.id)
    assert row is not None and row.outcome == "succeeded"


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({}, 400, "event_id is required"),
        ({"event_id": ""}, 400, "event_id is required"),
        ({"event_id": "not-a-uuid"}, 422, "event_id must be a UUID"),
        ({"event_id": 12}, 422, "event_id must be a UUID"),
        ({"event_id": str(uuid.UUID(int=7))}, 404, "Event not found"),
    ],
)
async def test_process_event_rejects_bad_requests(
    client: httpx.AsyncClient, body: dict[str, object], status: int, error: str
) -> None:
    response = await client.post("/process-event", json=body)
    assert response.status_code == status
    assert response.json() == {"error": error}


async def test_process_event_malformed_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/process-event", content=b"{not json")
    assert response.status_code == 400 and response.json() == {"error": "Malformed JSON body"}


async def test_process_event_already_processed(client: httpx.AsyncClient, runtime: Runtime) -> None:
    event = NewEvent("t.ok", {})
    await runtime.store.event_insert_many([event])
    [claimed] = await runtime.store.event_claim_many("other:1", ClaimPolicy(30, True, 1))
    response = await client.post("/process-event", json={"event_id": str(event.id)})
    assert response.status_code == 409
    assert "other:1" in response.json()["error"]
    await runtime.store.event_write_back([WriteBack.succeeded(Lease.of(claimed))])
    response = await client.post("/process-event", json={"event_id": str(event.id)})
    assert response.status_code == 400 and response.json() == {"error": "Event already processed"}


async def test_process_batch(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await runtime.store.event_insert_many([NewEvent("t.ok", {}) for _ in range(3)])
    response = await client.post("/process-batch")
    assert response.status_code == 202
    assert response.json() == {
        "success": True,
        "message": "Batch processing started",
        "claimed": 3,
    }


async def test_token_guards_triggers(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.tokens = TokenBook([(Role.ADMIN, None, "s3cret")])
    assert (await client.post("/process-batch")).status_code == 401
    wrong = await client.post("/process-batch", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    right = await client.post("/process-batch", headers={"Authorization": "Bearer s3cret"})
    assert right.status_code == 202
    assert (await client.get("/health")).status_code == 200  # reads stay open
