import uuid

import httpx
import pytest

from eventproc.config import Settings
from eventproc.event import NewEvent
from eventproc.http import create_app
from eventproc.runtime import Runtime
from support.registries import make_registry
from support.served import serving

SEED_KEYS = {"status", "service", "timestamp", "uptime", "stats", "config", "registry"}


async def test_health_has_the_seed_shape_and_extras(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await runtime.store.event_insert_many([NewEvent("t.ok", {}), NewEvent("t.ok", {})])
    response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body.keys() >= SEED_KEYS
    assert body["status"] == "healthy" and body["service"] == "event-processor"
    assert set(body["stats"]) == {
        "totalProcessed",
        "successCount",
        "errorCount",
        "deadLetterCount",
        "lastProcessedAt",
    }
    assert body["config"] == {
        "pollIntervalMs": 60000,
        "batchSize": 20,
        "maxRetries": 5,
        "pollingEnabled": True,
    }
    assert body["registry"] == {
        "totalHandlers": 1,
        "eventTypes": ["t.ok"],
        "subscriptions": [
            {
                "name": "support.registries.make_registry.<locals>.ok",
                "types": ["t.ok"],
                "filter": None,
                "transactional": False,
                "timeoutSeconds": None,
                "description": "Does nothing, successfully.",
            }
        ],
    }
    assert body["database"]["reachable"] is True
    assert body["backlog"] == 2 and body["oldestPendingAgeSeconds"] >= 0
    assert body["deadLetters"] == 0


async def test_health_stats_follow_processing(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await runtime.store.event_insert_many([NewEvent("t.ok", {}), NewEvent("nobody", {})])
    await runtime.processor.run(until_idle=True)
    stats = (await client.get("/health")).json()["stats"]
    assert stats["totalProcessed"] == 2 and stats["successCount"] == 2
    assert stats["lastProcessedAt"] is not None


async def test_unreachable_database_degrades_health_and_fails_ready(tmp_path: object) -> None:
    settings = Settings(database_url="postgresql://postgres@127.0.0.1:1/nothing")
    runtime = Runtime(settings, registry=make_registry())
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        health = await client.get("/health")
        ready = await client.get("/health/ready")
    await runtime.store.close()
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    assert health.json()["database"]["reachable"] is False
    assert ready.status_code == 503 and ready.json()["ready"] is False


async def test_ready_when_database_answers(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200 and response.json()["ready"] is True


async def test_unknown_route_is_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get(f"/nothing/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["error"] == "Not found"


async def test_metrics_are_prometheus_text(client: httpx.AsyncClient, runtime: Runtime) -> None:
    await runtime.store.event_insert_many([NewEvent("t.ok", {})])
    await runtime.processor.run(until_idle=True)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'eventproc_events_total{event_type="t.ok",outcome="succeeded"} 1.0' in response.text
    assert "eventproc_backlog 0.0" in response.text


async def test_health_lists_blocked_aggregates(client: httpx.AsyncClient, runtime: Runtime) -> None:
    from eventproc.config import AggregateFailure
    from eventproc.store import ClaimPolicy, Lease, WriteBack

    runtime.settings.aggregate_failure = AggregateFailure.BLOCK  # park (the default) holds nothing
    aggregate = uuid.uuid4()
    events = [NewEvent("t.ok", {}, aggregate_id=aggregate, aggregate_type="user") for _ in range(3)]
    await runtime.store.event_insert_many(events)
    [head] = await runtime.store.event_claim_many("w:1", ClaimPolicy(30, True, 5))
    await runtime.store.event_write_back([WriteBack.dead_lettered(Lease.of(head), "x", 5)])
    [blocked] = (await client.get("/health")).json()["blockedAggregates"]
    assert blocked["aggregateId"] == str(aggregate) and blocked["aggregateType"] == "user"
    assert blocked["blockedBy"] == str(events[0].id) and blocked["waiting"] == 2
    assert blocked["reason"] == "dead_lettered"


async def test_head_health_is_200_without_a_body(client: httpx.AsyncClient) -> None:
    response = await client.head("/health")
    assert response.status_code == 200
    assert response.content == b""


async def test_head_ready_follows_get_ready(client: httpx.AsyncClient) -> None:
    response = await client.head("/health/ready")
    assert response.status_code == 200 and response.content == b""


async def test_head_ready_is_503_when_the_database_is_away() -> None:
    settings = Settings(database_url="postgresql://postgres@127.0.0.1:1/nothing")
    runtime = Runtime(settings, registry=make_registry())
    async with serving(create_app(runtime)) as url, httpx.AsyncClient(base_url=url) as client:
        ready = await client.head("/health/ready")
        alive = await client.head("/health")
    await runtime.store.close()
    assert ready.status_code == 503 and ready.content == b""
    assert alive.status_code == 200


async def test_health_response_keeps_undocumented_keys(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key added to the payload is served before the model documents it."""
    from eventproc.http import health

    real = health.health_payload

    def more(*args: object, **kwargs: object) -> dict[str, object]:
        return {**real(*args, **kwargs), "newKey": {"nested": 1}}  # type: ignore[arg-type]

    monkeypatch.setattr(health, "health_payload", more)
    body = (await client.get("/health")).json()
    assert body["newKey"] == {"nested": 1} and body["service"] == "event-processor"
