"""Every answer that is not a success is JSON: deep nesting, unexpected errors, wrong methods."""

import logging
import uuid

import httpx
import pytest

from eventproc.http.bodies import MAX_JSON_DEPTH, nesting_exceeds
from eventproc.runtime import Runtime


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 2000 + b"]" * 2000,
        b'{"a":' * 2000 + b"1" + b"}" * 2000,
        b'{"event_id": ' + b"[" * 50_000,  # unterminated, still no RecursionError
    ],
)
async def test_deeply_nested_body_is_a_json_400(
    client: httpx.AsyncClient, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.post("/process-event", content=body)
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"].startswith("Malformed JSON body")
    assert "RecursionError" not in caplog.text


async def test_nesting_just_within_the_limit_is_parsed(client: httpx.AsyncClient) -> None:
    inner = b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)
    response = await client.post("/process-event", content=b'{"event_id": ' + inner + b"}")
    assert response.status_code == 422  # parsed: event_id is there, and not a UUID
    assert response.json() == {"error": "event_id must be a UUID"}


def test_brackets_inside_strings_do_not_count() -> None:
    quoted = b'{"event_id": "' + b"[{" * 500 + b'\\"]"}'
    assert not nesting_exceeds(quoted)
    assert nesting_exceeds(b"[" * (MAX_JSON_DEPTH + 1))
    assert not nesting_exceeds(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert not nesting_exceeds(b"[[1], [2]], " * 1000)  # many brackets, shallow


async def test_unexpected_error_is_a_logged_json_500(
    client: httpx.AsyncClient,
    runtime: Runtime,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(runtime.processor, "process_batch", broken)
    with caplog.at_level(logging.ERROR, logger="eventproc.http"):
        response = await client.post("/process-batch")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Internal server error"}
    [record] = [r for r in caplog.records if r.name == "eventproc.http"]
    assert "POST /process-batch" in record.getMessage() and "boom" in record.getMessage()
    # the server goes on answering
    assert (await client.get("/health")).status_code == 200


async def test_error_in_a_read_route_is_json_too(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken() -> None:
        raise KeyError("stats")

    monkeypatch.setattr(runtime, "store_stats", broken)
    response = await client.get("/metrics")
    assert response.status_code == 500 and response.json() == {"error": "Internal server error"}


async def test_wrong_method_is_a_json_405_naming_every_allowed_method(
    client: httpx.AsyncClient,
) -> None:
    response = await client.delete("/health")
    assert response.status_code == 405
    assert response.json() == {"error": "Method not allowed"}
    assert response.headers["allow"] == "GET, HEAD"
    assert (await client.get("/process-batch")).headers["allow"] == "POST"


async def test_unknown_route_is_a_json_404_with_its_path(client: httpx.AsyncClient) -> None:
    path = f"/nothing/{uuid.uuid4()}"
    response = await client.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "Not found", "path": path}
