"""The OpenAPI document: every response described, bearer auth declared where a token is needed."""

from typing import Any

import httpx

from eventproc.admin.roles import Role, TokenBook
from eventproc.runtime import Runtime

OPERATIONS = {
    ("/health", "get"): {"200", "500"},
    ("/health", "head"): {"200", "500"},
    ("/health/ready", "get"): {"200", "503", "500"},
    ("/health/ready", "head"): {"200", "503", "500"},
    ("/process-event", "post"): {"202", "400", "403", "404", "409", "413", "422", "503", "500"},
    ("/process-batch", "post"): {"202", "403", "413", "503", "500"},
    ("/metrics", "get"): {"200", "500"},
}
TRIGGERS = {("/process-event", "post"), ("/process-batch", "post")}
ERROR = {"$ref": "#/components/schemas/ErrorBody"}
NOT_READY = {"$ref": "#/components/schemas/NotReady"}  # an ErrorBody with ready: false


async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (path, method): operation
        for path, methods in doc["paths"].items()
        for method, operation in methods.items()
    }


async def test_every_operation_documents_its_statuses_and_bodies(
    client: httpx.AsyncClient,
) -> None:
    doc = await document(client)
    found = operations(doc)
    admin = {key for key in found if key[0].startswith("/admin/v1/")}
    assert set(found) - admin == set(OPERATIONS)
    assert ("/admin/v1/events", "get") in admin
    for key in admin:  # every admin operation: auth, bad parameters, outages, all as ErrorBody
        responses = found[key]["responses"]
        assert {"403", "422", "500", "503"} <= set(responses), key
        for status in set(responses) - {"200", "201", "202"}:
            assert responses[status]["content"] == {"application/json": {"schema": ERROR}}, key
    for key, statuses in OPERATIONS.items():
        responses = found[key]["responses"]
        assert set(responses) == statuses, key
        for status, response in responses.items():
            content = response.get("content")
            if key[1] == "head":
                assert content is None or status == "500", key  # no body
            elif status >= "400":
                expected = (
                    NOT_READY if key == ("/health/ready", "get") and status == "503" else ERROR
                )
                assert content == {"application/json": {"schema": expected}}, (key, status)
            else:
                [(_, spec)] = content.items()
                assert spec["schema"] not in ({}, None), (key, status)
    metrics = found[("/metrics", "get")]["responses"]["200"]["content"]
    assert metrics == {"text/plain": {"schema": {"type": "string"}}}


async def test_models_name_the_seed_keys_and_stay_open(client: httpx.AsyncClient) -> None:
    schemas = (await document(client))["components"]["schemas"]
    health = schemas["Health"]
    assert list(health["properties"])[:7] == [
        "status",
        "service",
        "timestamp",
        "uptime",
        "stats",
        "config",
        "registry",
    ]
    assert health["additionalProperties"] is True
    assert set(schemas["SeedStats"]["required"]) == {
        "totalProcessed",
        "successCount",
        "errorCount",
        "deadLetterCount",
        "lastProcessedAt",
    }
    assert schemas["ErrorBody"]["required"] == ["error"]
    assert schemas["ErrorBody"]["additionalProperties"] is True
    assert set(schemas["NotReady"]["required"]) == {"error", "ready"}
    assert schemas["BatchAccepted"]["properties"]["claimed"]["type"] == "integer"


async def test_without_a_token_nothing_requires_auth(client: httpx.AsyncClient) -> None:
    doc = await document(client)
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "A token from API_TOKEN (admin) or API_TOKENS / API_TOKENS_FILE (viewer, operator "
            "or admin); needed only when the server sets any."
        ),
    }
    for key, operation in operations(doc).items():
        assert "security" not in operation, key
        assert "401" not in operation["responses"], key


async def test_with_a_token_the_triggers_require_bearer_auth_and_document_401(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    runtime.tokens = TokenBook([(Role.ADMIN, None, "s3cret")])
    doc = await document(client)
    for key, operation in operations(doc).items():
        if key in TRIGGERS or key[0].startswith("/admin/v1/"):
            assert operation["security"] == [{"bearerAuth": []}], key
            unauthorized = operation["responses"]["401"]
            assert unauthorized["content"] == {"application/json": {"schema": ERROR}}
            assert "WWW-Authenticate" in unauthorized["headers"]
        else:
            assert "security" not in operation and "401" not in operation["responses"], key
    refused = await client.post("/process-batch")
    assert refused.status_code == 401
    assert refused.json() == {"error": "Missing or unknown bearer token"}
    assert refused.headers["www-authenticate"] == "Bearer"
