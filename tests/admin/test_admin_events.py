"""/admin/v1/events and /admin/v1/audit on both backends: filters, pages, detail, replay, roles."""

import hashlib
import uuid

import pytest

from eventproc import NewEvent
from eventproc.store.admin import events as admin_events
from support.admin_api import Api, publish


async def test_roles_guard_reads_and_changes(api: Api) -> None:
    [event_id] = await publish(api.runtime, NewEvent("t.ok", {}))
    assert (await api.anonymous.get("/admin/v1/events")).status_code == 401
    wrong = await api.anonymous.get("/admin/v1/events", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert (await api.viewer.get("/admin/v1/events")).status_code == 200
    refused = await api.viewer.post(f"/admin/v1/events/{event_id}/replay", json={})
    assert refused.status_code == 403 and refused.json()["needed"] == "operator"
    assert (await api.viewer.post("/process-batch")).status_code == 403
    audit = (await api.admin.get("/admin/v1/audit")).json()["items"]
    assert audit == []  # a refused call changed nothing, so nothing is recorded


async def test_filters_and_keyset_pages(api: Api) -> None:
    aggregate = uuid.uuid4()
    ids = await publish(
        api.runtime,
        *[NewEvent("t.ok", {"n": n, "user": {"id": f"u{n % 2}"}}) for n in range(5)],
        NewEvent("t.fan", {"order": 1}, aggregate_id=aggregate, created_by="shop"),
        NewEvent("t.fan", {"order": 2, "fail": True}, aggregate_id=aggregate, created_by="shop"),
    )
    await api.drain()
    every = await _all_pages(api, "/admin/v1/events?limit=2")
    assert len(every) == 7 and len({item["id"] for item in every}) == 7
    created = [item["created_at"] for item in every]
    assert created == sorted(created, reverse=True)
    by_type = (await api.viewer.get("/admin/v1/events", params={"type": "t.f*"})).json()
    assert {item["event_type"] for item in by_type["items"]} == {"t.fan"}
    by_path = await api.viewer.get(
        "/admin/v1/events", params={"path": "payload.user.id", "value": "u1"}
    )
    assert sorted(item["id"] for item in by_path.json()["items"]) == sorted(
        str(event_id) for event_id, n in zip(ids, range(5), strict=False) if n % 2
    )
    failed = await api.viewer.get("/admin/v1/events", params={"outcome": "partial"})
    [partial] = failed.json()["items"]
    assert partial["state"] == "done" and partial["created_by"] == "shop"
    handlers = {d["handler"]: d["outcome"] for d in partial["deliveries"]}
    assert handlers == {"fan_a": "succeeded", "fan_b": "dead_lettered"}
    by_error = await api.viewer.get("/admin/v1/events", params={"error": "ORDER 2 was"})
    assert [item["id"] for item in by_error.json()["items"]] == [partial["id"]]
    by_handler = await api.viewer.get("/admin/v1/events", params={"handler": "ok"})
    assert len(by_handler.json()["items"]) == 5  # handled on their rows: metadata.handled_by
    assert (
        await api.viewer.get("/admin/v1/events", params={"aggregate_id": str(aggregate)})
    ).json()["items"][0]["aggregate_id"] == str(aggregate)


async def _all_pages(api: Api, first: str) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    answer = (await api.viewer.get(first)).json()
    while True:
        items += answer["items"]
        if answer["next_cursor"] is None:
            return items
        answer = (await api.viewer.get(first, params={"cursor": answer["next_cursor"]})).json()


async def test_bad_parameters_are_clear_422s(api: Api) -> None:
    for params in (
        {"limit": "0"},
        {"limit": "501"},
        {"cursor": "not-a-cursor"},
        {"typo": "1"},
        {"state": "sleeping"},
        {"path": "payload.a"},
        {"path": "body.a", "value": "1"},
        {"path": "payload.a;drop", "value": "1"},
        {"since": "2026-12-01T10:00:00"},
        {"aggregate_id": "nope"},
        {"error": "a\x00b"},
        {"type": "\x00"},
    ):
        answer = await api.viewer.get("/admin/v1/events", params=params)
        assert answer.status_code == 422, params
        assert isinstance(answer.json()["error"], str), params
    assert (await api.viewer.get(f"/admin/v1/events/{uuid.uuid4()}")).status_code == 404
    assert (await api.viewer.get("/admin/v1/events/not-a-uuid")).status_code == 422


async def test_detail_shows_deliveries_attempts_dead_letters_and_redacts_for_viewers(
    api: Api,
) -> None:
    [event_id] = await publish(
        api.runtime,
        NewEvent("t.fan", {"order": 7, "fail": True, "secret": "s3"}, metadata={"ip": "1.2.3.4"}),
    )
    await api.drain()
    seen = (await api.viewer.get(f"/admin/v1/events/{event_id}")).json()
    assert seen["payload"] == {"order": 7, "fail": True, "secret": "[redacted]"}
    assert seen["metadata"]["ip"] == "[redacted]"
    assert seen["outcome"] == "partial"
    [letter] = seen["dead_letters"]
    assert letter["handler"] == "fan_b" and "order 7 was refused" in letter["error_message"]
    operator = (await api.operator.get(f"/admin/v1/events/{event_id}")).json()
    assert operator["payload"]["secret"] == "s3" and operator["metadata"]["ip"] == "1.2.3.4"


async def test_replay_one_delivery_leaves_the_others_and_is_audited(api: Api) -> None:
    [event_id] = await publish(api.runtime, NewEvent("t.fan", {"order": 3, "fail": True}))
    await api.drain()
    replayed = await api.operator.post(
        f"/admin/v1/events/{event_id}/replay",
        json={"handler": "fan_b", "reason": "downstream fixed"},
    )
    assert replayed.status_code == 200 and replayed.json()["replayed"] is True
    shown = (await api.viewer.get(f"/admin/v1/events/{event_id}")).json()
    states = {d["handler"]: (d["status"], d["attempts"]) for d in shown["deliveries"]}
    assert states["fan_a"] == ("done", 1)  # untouched
    assert states["fan_b"][0] == "pending" and states["fan_b"][1] == 0  # a fresh budget
    assert shown["dead_letters"][0]["replayed_at"] is not None
    operator = (await api.operator.get(f"/admin/v1/events/{event_id}")).json()
    assert operator["metadata"]["replay"] == {
        "by": "operator#" + _hash8("op-token"),
        "handler": "fan_b",
    }
    [entry] = (await api.viewer.get("/admin/v1/audit")).json()["items"]
    assert entry["action"] == "delivery.replay" and entry["reason"] == "downstream fixed"
    assert entry["role"] == "operator" and entry["counts"] == {"replayed": 1}
    assert entry["target"] == {"event_id": str(event_id), "handler": "fan_b"}
    again = await api.operator.post(
        f"/admin/v1/events/{event_id}/replay", json={"handler": "fan_b"}
    )
    assert again.status_code == 409  # still pending: nothing to replay
    assert len((await api.viewer.get("/admin/v1/audit")).json()["items"]) == 2


async def test_replay_whole_event_and_mutations_refuse_unknown_keys_and_cross_site(
    api: Api,
) -> None:
    [event_id] = await publish(api.runtime, NewEvent("t.ok", {}))
    await api.drain()
    url = f"/admin/v1/events/{event_id}/replay"
    assert (await api.operator.post(url, json={"handlr": "x"})).status_code == 422
    assert (await api.operator.post(url, content=b"{")).status_code in (400, 422)
    deep = b"[" * 5000 + b"]" * 5000
    nested = await api.operator.post(
        url, content=deep, headers={"content-type": "application/json"}
    )
    assert nested.status_code == 400
    cross = await api.operator.post(url, json={}, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    other = await api.operator.post(url, json={}, headers={"Origin": "https://evil.example"})
    assert other.status_code == 403
    same = await api.operator.post(
        url, json={"reason": "check"}, headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert same.status_code == 200
    event = await api.runtime.store.event_get(event_id)
    assert event is not None and not event.processed
    [entry] = (await api.viewer.get("/admin/v1/audit")).json()["items"]
    assert entry["action"] == "event.replay" and entry["counts"]["replayed"] == 1


def _hash8(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:8]


async def test_attempt_log_keeps_each_failed_attempt_with_worker_duration_and_traceback(
    api: Api,
) -> None:
    [event_id] = await publish(api.runtime, NewEvent("t.flaky", {"order": 9}))
    await api.drain()  # attempt 1 fails; the retry (RETRY_BASE_MS=0) succeeds
    await api.drain()
    shown = (await api.viewer.get(f"/admin/v1/events/{event_id}")).json()
    assert shown["outcome"] == "succeeded"
    [failed] = shown["attempt_log"]
    assert failed["handler"] == "flaky" and failed["attempt"] == 1
    assert failed["outcome"] == "retried"
    assert failed["error"] == "RuntimeError: upstream 503 for 9"
    assert "Traceback" in failed["traceback"] and "upstream 503" in failed["traceback"]
    assert failed["worker"].startswith(api.runtime.worker_id)
    assert failed["duration_ms"] >= 0


async def test_an_open_service_names_the_caller_it_is_told_in_the_audit_trail(
    api: Api,
) -> None:
    from eventproc.admin.roles import TokenBook

    api.runtime.tokens = TokenBook([])  # no token configured: open, as before roles
    [event_id] = await publish(api.runtime, NewEvent("t.ok", {}))
    await api.drain()
    url = f"/admin/v1/events/{event_id}/replay"
    named = await api.anonymous.post(url, json={}, headers={"X-Eventproc-Actor": "cli:ann@box"})
    assert named.status_code == 200
    await api.drain()
    assert (await api.anonymous.post(url, json={})).status_code == 200
    actors = [e["actor"] for e in (await api.anonymous.get("/admin/v1/audit")).json()["items"]]
    assert actors == ["anonymous", "cli:ann@box"]


async def test_a_listing_that_walks_too_long_is_stopped_with_a_clear_422(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter no index serves is bounded in time (PostgreSQL: statement_timeout; SQLite: the
    Python bound), answered 422 with what to do; the same listing narrowed still answers."""
    for start in range(0, 20_000, 2_000):
        await publish(
            api.runtime, *[NewEvent("t.ok", {"n": n}) for n in range(start, start + 2_000)]
        )
    monkeypatch.setattr(admin_events, "LIST_SECONDS", 0.001)
    broad = await api.viewer.get(
        "/admin/v1/events", params={"path": "payload.missing", "value": "x"}
    )
    assert broad.status_code == 422, broad.text
    assert "since/until" in broad.json()["error"]
    monkeypatch.setattr(admin_events, "LIST_SECONDS", 30.0)
    again = await api.viewer.get("/admin/v1/events", params={"path": "payload.n", "value": "7"})
    assert again.status_code == 200 and len(again.json()["items"]) == 1
