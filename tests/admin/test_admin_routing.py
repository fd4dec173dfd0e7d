"""POST /admin/v1/route/test on both backends: every subscription, matched or not, and why.

The server's own registry answers (Registry.explain, as ``eventproc route
test``); nothing is written, so a viewer may ask; a bad envelope is a 422.
"""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from eventproc import Event, HandlerContext, Registry
from eventproc.config import Settings
from eventproc.http import create_app
from eventproc.runtime import Runtime
from support.admin_api import TOKENS, Api
from support.served import serving

URL = "/admin/v1/route/test"


def routed_registry() -> Registry:
    registry = Registry()

    async def noop(event: Event, ctx: HandlerContext) -> None:
        return None

    registry.register("intro.completed", noop, name="credits")
    registry.register(
        "intro.completed",
        noop,
        name="pro_only",
        filter={"payload": {"plan": ["pro", "team"]}, "metadata": {"source": [{"exists": True}]}},
    )
    registry.register(["user.*"], noop, name="users")
    registry.register(
        "*",
        noop,
        name="audit",
        filter={"$or": [{"created_by": [{"prefix": "svc-"}]}, {"aggregate_type": ["user"]}]},
    )
    return registry


@pytest.fixture
async def routed(store_url: str) -> AsyncIterator[Api]:
    settings = Settings(
        database_url=store_url,
        poll_interval_ms=60_000,
        api_tokens=",".join(f"{role}:{token}" for role, token in TOKENS.items()),
    )
    runtime = Runtime(settings, registry=routed_registry())
    await runtime.prepare(attempts=1)
    try:
        async with serving(create_app(runtime)) as url:

            def client(token: str | None) -> httpx.AsyncClient:
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                return httpx.AsyncClient(base_url=url, headers=headers, timeout=10)

            async with (
                client(TOKENS["viewer"]) as viewer,
                client(TOKENS["operator"]) as operator,
                client(TOKENS["admin"]) as admin,
                client(None) as anonymous,
            ):
                yield Api(runtime, url, viewer, operator, admin, anonymous)
    finally:
        await runtime.store.close()


async def _test(client: httpx.AsyncClient, event: dict[str, Any]) -> httpx.Response:
    return await client.post(URL, json={"event": event})


async def test_every_subscription_with_the_clause_a_miss_failed(routed: Api) -> None:
    given = {"event_type": "intro.completed", "payload": {"plan": "free"}, "created_by": "web"}
    answer = await _test(routed.viewer, given)
    assert answer.status_code == 200
    body = answer.json()
    assert body["matched"] == ["credits"]
    assert body["event"] == {**given, "metadata": {}}
    by_name = {entry["name"]: entry for entry in body["subscriptions"]}
    assert list(by_name) == ["credits", "pro_only", "users", "audit"]
    credits, pro_only, users, audit = by_name.values()
    assert credits["matched"] is True and credits["failed"] is None
    assert credits["reason"].startswith("matched: ") and credits["filter"] is None
    assert pro_only["matched"] is False and pro_only["types"] == ["intro.completed"]
    assert pro_only["failed"]["path"] == "payload.plan"
    assert pro_only["failed"]["clause"] == 'one of ["pro", "team"]'
    assert pro_only["failed"]["actual"] == "free" and pro_only["failed"]["present"] is True
    assert pro_only["reason"] == pro_only["failed"]["reason"]
    missing = [check for check in pro_only["checks"] if check["path"] == "metadata.source"]
    assert missing[0]["matched"] is False and missing[0]["present"] is False  # every check shown
    assert pro_only["filter"] == {
        "payload": {"plan": ["pro", "team"]},
        "metadata": {"source": [{"exists": True}]},
    }
    assert users["failed"]["path"] == "event_type"
    assert users["failed"]["clause"] == 'types ["user.*"]'
    assert audit["failed"]["clause"] == "$or"
    branches = audit["failed"]["branches"]
    assert len(branches) == 2 and branches[0][0]["path"] == "created_by"
    assert branches[0][0]["matched"] is False and branches[0][0]["actual"] == "web"


async def test_a_match_through_filters_and_the_aggregate(routed: Api) -> None:
    aggregate = uuid.uuid4()
    given = {
        "event_type": "intro.completed",
        "aggregate_id": str(aggregate).upper(),
        "aggregate_type": "user",
        "payload": {"plan": "pro"},
        "metadata": {"source": "app"},
    }
    body = (await _test(routed.operator, given)).json()
    assert body["matched"] == ["credits", "pro_only", "audit"]
    assert body["event"]["aggregate_id"] == str(aggregate)  # as an event's column reads
    assert all(entry["failed"] is None for entry in body["subscriptions"] if entry["matched"])
    nothing = (await _test(routed.admin, {"event_type": "billing.x"})).json()
    assert nothing["matched"] == []
    assert [entry["matched"] for entry in nothing["subscriptions"]] == [False] * 4


async def test_viewers_may_ask_and_nothing_is_written(routed: Api) -> None:
    assert (await _test(routed.viewer, {"event_type": "user.created"})).status_code == 200
    assert (await _test(routed.anonymous, {"event_type": "user.created"})).status_code == 401
    cross = await routed.viewer.post(
        URL, json={"event": {"event_type": "x"}}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status_code == 403
    assert (await routed.viewer.get("/admin/v1/audit")).json()["items"] == []
    assert (await routed.viewer.get("/admin/v1/events")).json()["items"] == []


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"event": {}},
        {"event": {"event_type": ""}},
        {"event": {"event_type": 5}},
        {"event": {"event_type": "x" * 101}},
        {"event": {"event_type": "x", "payload": [1]}},
        {"event": {"event_type": "x", "metadata": "m"}},
        {"event": {"event_type": "x", "aggregate_id": "not-a-uuid"}},
        {"event": {"event_type": "x", "created_by": 7}},
        {"event": {"event_type": "x", "extra": 1}},
        {"event": {"event_type": "x"}, "also": 1},
        {"event": "intro.completed"},
    ],
)
async def test_bad_envelopes_are_422_with_a_json_error(routed: Api, body: dict[str, Any]) -> None:
    answer = await routed.viewer.post(URL, json=body)
    assert answer.status_code == 422, body
    assert isinstance(answer.json()["error"], str)


async def test_non_json_numbers_and_malformed_bodies_are_refused(routed: Api) -> None:
    headers = {"content-type": "application/json"}
    for raw in (
        b'{"event": {"event_type": "x", "payload": {"n": NaN}}}',
        b'{"event": {"event_type": "x", "metadata": {"a": [Infinity]}}}',
    ):
        answer = await routed.viewer.post(URL, content=raw, headers=headers)
        assert answer.status_code == 422, raw
        assert "finite" in str(answer.json())
    assert (await routed.viewer.post(URL, content=b"{", headers=headers)).status_code in (400, 422)
    deep = b'{"event": {"event_type": "x", "payload": ' + b'{"a": ' * 100 + b"1" + b"}" * 102
    assert (await routed.viewer.post(URL, content=deep, headers=headers)).status_code == 400
