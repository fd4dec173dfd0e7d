"""/health's registry lists every subscription with its types and filter."""

import httpx

from eventproc import Event, HandlerContext, Registry
from eventproc.config import Settings
from eventproc.http import create_app
from eventproc.runtime import Runtime


async def noop(event: Event, ctx: HandlerContext) -> None:
    return None


def fan_out() -> Registry:
    registry = Registry()
    registry.register("intro.completed", noop, name="credits", transactional=True)
    registry.register(
        ["intro.completed", "user.*"],
        noop,
        name="pro_only",
        filter={
            "payload": {"plan": ["pro"]},
            "$or": [{"created_by": ["a"]}, {"metadata": {"k": [1]}}],
        },
        description="Pro members only.",
        timeout_seconds=2.5,
    )
    registry.register("*", noop, name="audit")
    return registry


async def test_health_lists_subscriptions_with_types_and_filters(store_url: str) -> None:
    runtime = Runtime(Settings(database_url=store_url), registry=fan_out())
    await runtime.prepare(attempts=1)
    try:
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/health")
    finally:
        await runtime.store.close()
    assert response.status_code == 200
    assert response.json()["registry"] == {
        "totalHandlers": 3,
        "eventTypes": ["intro.completed", "user.*", "*"],
        "subscriptions": [
            {
                "name": "credits",
                "types": ["intro.completed"],
                "filter": None,
                "transactional": True,
                "timeoutSeconds": None,
                "description": "",
            },
            {
                "name": "pro_only",
                "types": ["intro.completed", "user.*"],
                "filter": {
                    "payload": {"plan": ["pro"]},
                    "$or": [{"created_by": ["a"]}, {"metadata": {"k": [1]}}],
                },
                "transactional": False,
                "timeoutSeconds": 2.5,
                "description": "Pro members only.",
            },
            {
                "name": "audit",
                "types": ["*"],
                "filter": None,
                "transactional": False,
                "timeoutSeconds": None,
                "description": "",
            },
        ],
    }


async def test_the_openapi_document_describes_the_subscriptions(store_url: str) -> None:
    runtime = Runtime(Settings(database_url=store_url), registry=fan_out())
    schema = create_app(runtime).openapi()
    await runtime.store.close()
    info = schema["components"]["schemas"]["SubscriptionInfo"]["properties"]
    assert set(info) == {
        "name",
        "types",
        "filter",
        "transactional",
        "timeoutSeconds",
        "description",
    }
    registry = schema["components"]["schemas"]["RegistryInfo"]["properties"]
    assert set(registry) == {"totalHandlers", "eventTypes", "subscriptions"}
