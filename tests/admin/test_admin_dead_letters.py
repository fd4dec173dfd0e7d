"""/admin/v1/dead-letters and /admin/v1/aggregates/blocked on both backends.

Filters, keyset pages, groups with their counts and caps, one dead letter
with its traceback (redacted for viewers), replay and discard with their
audit rows, roles, and every bad input a 4xx.
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from eventproc import NewEvent
from eventproc.config import Settings
from eventproc.http import create_app
from eventproc.runtime import Runtime
from eventproc.store.admin import dead_letter_groups
from eventproc.store.schema import dead_letters
from support.admin_api import TOKENS, Api, admin_registry, publish
from support.served import serving

URL = "/admin/v1/dead-letters"


async def _fail(api: Api, *orders: object, aggregate: uuid.UUID | None = None) -> list[uuid.UUID]:
    """One t.fan event per order, fan_b failing each (fingerprint: the order's word)."""
    ids = await publish(
        api.runtime,
        *[
            NewEvent("t.fan", {"order": order, "fail": True, "secret": "s"}, aggregate_id=aggregate)
            for order in orders
        ],
    )
    await api.drain()
    return ids


async def _legacy(api: Api, count: int) -> None:
    """Dead letters written before eventproc: no handler, no fingerprint (a seed's own rows)."""
    now = datetime.now(UTC)
    rows = [
        {
            "id": uuid.uuid4(),
            "event_id": uuid.uuid4(),
            "event_type": "t.old",
            "payload": {},
            "error_message": f"legacy failure {n}",
            "retry_count": 3,
            "original_created_at": now,
            "created_at": now - timedelta(days=30, seconds=n),
        }
        for n in range(count)
    ]
    async with api.runtime.store.driver.begin() as conn:
        await conn.execute(insert(dead_letters), rows)


async def _pages(client: httpx.AsyncClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    answer = (await client.get(URL, params=params)).json()
    while True:
        items += answer["items"]
        if answer["next_cursor"] is None:
            return items
        answer = (await client.get(URL, params={**params, "cursor": answer["next_cursor"]})).json()


async def test_list_filters_and_keyset_pages(api: Api) -> None:
    await _fail(api, "alpha", "alpha", "beta")
    await _legacy(api, 2)
    every = await _pages(api.viewer, {"limit": 2})
    assert len(every) == 5 and len({item["id"] for item in every}) == 5
    created = [item["created_at"] for item in every]
    assert created == sorted(created, reverse=True)
    assert "payload" not in every[0] and "error_detail" not in every[0]  # the detail has them
    fan_b = await _pages(api.viewer, {"handler": "fan_b", "limit": 1})
    assert len(fan_b) == 3 and {item["event_type"] for item in fan_b} == {"t.fan"}
    [beta] = [item for item in fan_b if "beta" in item["error_message"]]
    same = await _pages(api.viewer, {"fingerprint": beta["error_fingerprint"]})
    assert [item["id"] for item in same] == [beta["id"]]
    old = await _pages(api.viewer, {"event_type": "t.old"})
    assert len(old) == 2 and all(item["handler"] is None for item in old)
    recent = await _pages(api.viewer, {"since": beta["created_at"]})
    assert beta["id"] in {item["id"] for item in recent} and len(recent) < 5
    older = await _pages(api.viewer, {"until": beta["created_at"]})
    assert beta["id"] not in {item["id"] for item in older}
    assert len(older) + len(recent) == 5


async def test_state_filters_open_replayed_and_all(api: Api) -> None:
    await _fail(api, "alpha", "beta")
    [first, second] = await _pages(api.viewer, {})
    replayed = await api.operator.post(f"{URL}/{first['id']}/replay", json={})
    assert replayed.status_code == 200
    assert [item["id"] for item in await _pages(api.viewer, {})] == [second["id"]]
    [closed] = await _pages(api.viewer, {"state": "replayed"})
    assert closed["id"] == first["id"] and closed["replayed_at"] is not None
    assert len(await _pages(api.viewer, {"state": "all"})) == 2


async def test_groups_count_first_last_and_sample_biggest_first(api: Api) -> None:
    await _fail(api, "alpha", "alpha", "alpha", "beta")
    await _legacy(api, 2)
    answer = await api.viewer.get(f"{URL}/groups")
    assert answer.status_code == 200
    body = answer.json()
    assert body["capped"] is False and body["next_cursor"] is None
    groups = body["items"]
    assert [(g["handler"], g["count"], g["count_capped"]) for g in groups] == [
        ("fan_b", 3, False),
        (None, 2, False),
        ("fan_b", 1, False),
    ]
    alpha, legacy, beta = groups
    assert "alpha" in alpha["error_fingerprint"] and legacy["error_fingerprint"] is None
    assert alpha["first_seen"] <= alpha["last_seen"]
    listed = await _pages(api.viewer, {"fingerprint": alpha["error_fingerprint"]})
    newest = listed[0]
    assert alpha["sample"] == {
        "dead_letter_id": newest["id"],
        "event_id": newest["event_id"],
        "error_message": newest["error_message"],
    }
    assert alpha["last_seen"] == newest["created_at"]
    assert alpha["first_seen"] == listed[-1]["created_at"]
    assert beta["sample"]["error_message"].endswith("order beta was refused")
    only_fan_b = (await api.viewer.get(f"{URL}/groups", params={"handler": "fan_b"})).json()
    assert [g["count"] for g in only_fan_b["items"]] == [3, 1]
    old = (await api.viewer.get(f"{URL}/groups", params={"event_type": "t.old"})).json()
    assert [(g["handler"], g["count"]) for g in old["items"]] == [(None, 2)]
    top = (await api.viewer.get(f"{URL}/groups", params={"limit": 1})).json()
    assert [g["count"] for g in top["items"]] == [3]
    later = await api.viewer.get(
        f"{URL}/groups", params={"since": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    )
    assert later.json()["items"] == []
    await api.operator.post(f"{URL}/{beta['sample']['dead_letter_id']}/replay", json={})
    open_only = (await api.viewer.get(f"{URL}/groups")).json()["items"]
    assert [g["count"] for g in open_only] == [3, 2]  # a replayed letter leaves its group


async def test_group_counts_and_the_scan_are_capped(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _fail(api, *["alpha"] * 5, "beta")
    await _legacy(api, 1)
    monkeypatch.setattr(dead_letter_groups, "GROUP_COUNT_CAP", 3)
    groups = (await api.viewer.get(f"{URL}/groups")).json()
    assert [(g["count"], g["count_capped"]) for g in groups["items"]] == [
        (3, True),
        (1, False),
        (1, False),
    ]
    assert groups["capped"] is False
    typed = (await api.viewer.get(f"{URL}/groups", params={"event_type": "t.fan"})).json()
    assert [(g["count"], g["count_capped"]) for g in typed["items"]] == [(3, True), (1, False)]
    monkeypatch.setattr(dead_letter_groups, "GROUP_SCAN", 1)  # one fingerprint per handler
    scanned = (await api.viewer.get(f"{URL}/groups", params={"handler": "fan_b"})).json()
    assert scanned["capped"] is True and len(scanned["items"]) == 1


async def test_detail_has_traceback_and_redacts_the_payload_for_viewers(api: Api) -> None:
    [event_id] = await _fail(api, "alpha")
    [item] = await _pages(api.viewer, {})
    seen = await api.viewer.get(f"{URL}/{item['id']}")
    assert seen.status_code == 200
    body = seen.json()
    assert body["event_id"] == str(event_id) and body["handler"] == "fan_b"
    assert body["payload"] == {"order": "alpha", "fail": True, "secret": "[redacted]"}
    assert "PermanentError" in body["error_detail"] and "Traceback" in body["error_detail"]
    operator = (await api.operator.get(f"{URL}/{item['id']}")).json()
    assert operator["payload"]["secret"] == "s"
    assert (await api.viewer.get(f"{URL}/{uuid.uuid4()}")).status_code == 404
    assert (await api.viewer.get(f"{URL}/not-a-uuid")).status_code == 422


async def test_replay_reruns_only_its_delivery_and_is_audited(api: Api) -> None:
    [event_id] = await _fail(api, "alpha")
    [item] = await _pages(api.viewer, {})
    url = f"{URL}/{item['id']}/replay"
    assert (await api.viewer.post(url, json={})).status_code == 403
    replayed = await api.operator.post(url, json={"reason": "downstream back"})
    assert replayed.status_code == 200
    assert replayed.json() == {
        "dead_letter_id": item["id"],
        "event_id": str(event_id),
        "handler": "fan_b",
        "replayed": True,
    }
    event = (await api.operator.get(f"/admin/v1/events/{event_id}")).json()
    states = {d["handler"]: (d["status"], d["attempts"]) for d in event["deliveries"]}
    assert states == {"fan_a": ("done", 1), "fan_b": ("pending", 0)}
    [entry] = (await api.viewer.get("/admin/v1/audit")).json()["items"]
    assert entry["action"] == "dead_letter.replay" and entry["reason"] == "downstream back"
    assert entry["role"] == "operator" and entry["counts"] == {"matched": 1, "replayed": 1}
    assert entry["target"] == {"dead_letter_ids": [item["id"]]}
    again = await api.operator.post(url, json={})
    assert again.status_code == 409 and again.json()["replayed_at"]
    assert (await api.operator.post(f"{URL}/{item['id']}/discard", json={})).status_code == 409
    assert (await api.operator.post(f"{URL}/{uuid.uuid4()}/replay", json={})).status_code == 404
    assert len((await api.viewer.get("/admin/v1/audit")).json()["items"]) == 1  # refusals: none


async def test_replay_of_a_legacy_dead_letter_replays_its_event(api: Api) -> None:
    [event_id] = await publish(api.runtime, NewEvent("t.ok", {}))
    await api.drain()
    now = datetime.now(UTC)
    letter_id = uuid.uuid4()
    async with api.runtime.store.driver.begin() as conn:
        await conn.execute(
            insert(dead_letters).values(
                id=letter_id,
                event_id=event_id,
                event_type="t.ok",
                payload={},
                error_message="seed failure",
                retry_count=3,
                original_created_at=now,
            )
        )
    answer = await api.admin.post(f"{URL}/{letter_id}/replay", json={"reason": "old one"})
    assert answer.status_code == 200 and answer.json()["handler"] is None
    event = await api.runtime.store.event_get(event_id)
    assert event is not None and not event.processed


async def test_discard_deletes_it_marks_the_delivery_and_is_audited(api: Api) -> None:
    [event_id] = await _fail(api, "alpha")
    [item] = await _pages(api.viewer, {})
    url = f"{URL}/{item['id']}/discard"
    assert (await api.viewer.post(url, json={"reason": "x"})).status_code == 403
    discarded = await api.operator.post(url, json={"reason": "test order"})
    assert discarded.status_code == 200 and discarded.json()["discarded"] is True
    assert (await api.viewer.get(f"{URL}/{item['id']}")).status_code == 404
    assert await _pages(api.viewer, {"state": "all"}) == []
    event = (await api.viewer.get(f"/admin/v1/events/{event_id}")).json()
    assert {d["handler"]: d["outcome"] for d in event["deliveries"]}["fan_b"] == "discarded"
    [entry] = (await api.viewer.get("/admin/v1/audit")).json()["items"]
    assert entry["action"] == "dead_letter.discard" and entry["reason"] == "test order"
    assert entry["counts"] == {"matched": 1, "discarded": 1}
    assert (await api.operator.post(url, json={})).status_code == 404  # gone


async def test_bad_input_is_a_clear_4xx_and_changes_nothing(api: Api) -> None:
    await _fail(api, "alpha")
    [item] = await _pages(api.viewer, {})
    for params in (
        {"limit": "0"},
        {"limit": "501"},
        {"cursor": "not-a-cursor"},
        {"state": "closed"},
        {"typo": "1"},
        {"since": "2026-12-01T10:00:00"},
        {"until": "yesterday"},
        {"handler": ""},
        {"handler": "fan\x00b"},
        {"event_type": "\x00"},
        {"fingerprint": "a\x00"},
    ):
        answer = await api.viewer.get(URL, params=params)
        assert answer.status_code == 422, params
        assert isinstance(answer.json()["error"], str), params
    for params in (
        {"fingerprint": "x"},
        {"cursor": "x"},
        {"state": "open"},
        {"limit": "0"},
        {"handler": "\x00"},
    ):
        answer = await api.viewer.get(f"{URL}/groups", params=params)
        assert answer.status_code == 422, params
    url = f"{URL}/{item['id']}/replay"
    assert (await api.operator.post(url, json={"reasn": "x"})).status_code == 422
    assert (await api.operator.post(url, json={"reason": ""})).status_code == 422
    assert (await api.operator.post(url, content=b"{")).status_code in (400, 422)
    cross = await api.operator.post(url, json={}, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    assert (await api.anonymous.get(URL)).status_code == 401
    assert (await api.anonymous.get(f"{URL}/groups")).status_code == 401
    assert (await api.operator.post(f"{URL}/not-a-uuid/discard", json={})).status_code == 422
    assert (await _pages(api.viewer, {}))[0]["replayed_at"] is None  # nothing changed
    assert (await api.viewer.get("/admin/v1/audit")).json()["items"] == []


# -- blocked aggregates --------------------------------------------------------------------


@asynccontextmanager
async def _served(store_url: str, **settings: Any) -> AsyncIterator[Api]:
    runtime = Runtime(
        Settings(
            database_url=store_url,
            poll_interval_ms=60_000,
            max_retries=2,
            retry_base_ms=0,
            api_tokens=",".join(f"{role}:{token}" for role, token in TOKENS.items()),
            **settings,
        ),
        registry=admin_registry(),
    )
    await runtime.prepare(attempts=1)
    try:
        async with serving(create_app(runtime)) as url:

            def client(token: str) -> httpx.AsyncClient:
                headers = {"Authorization": f"Bearer {token}"}
                return httpx.AsyncClient(base_url=url, headers=headers, timeout=10)

            async with (
                client(TOKENS["viewer"]) as viewer,
                client(TOKENS["operator"]) as operator,
                client(TOKENS["admin"]) as admin,
                httpx.AsyncClient(base_url=url, timeout=10) as anonymous,
            ):
                yield Api(runtime, url, viewer, operator, admin, anonymous)
    finally:
        await runtime.store.close()


async def _blocked(api: Api, aggregate: uuid.UUID, waiting: int) -> list[uuid.UUID]:
    """fan_b dead-letters the aggregate's first event; its later ones wait (one drain: a
    drain until idle does not return once later events arrive behind a dead-lettered
    delivery in block mode, though nothing can run)."""
    ids = await publish(
        api.runtime,
        NewEvent("t.fan", {"order": "alpha", "fail": True}, aggregate_id=aggregate),
        *[NewEvent("t.fan", {"order": n}, aggregate_id=aggregate) for n in range(waiting)],
    )
    await api.drain()
    return ids


async def test_blocked_aggregates_with_block_until_the_dead_letter_is_discarded(
    store_url: str,
) -> None:
    async with _served(store_url, aggregate_failure="block") as api:
        aggregate = uuid.uuid4()
        head, *_ = await _blocked(api, aggregate, waiting=2)
        answer = await api.viewer.get("/admin/v1/aggregates/blocked")
        assert answer.status_code == 200
        body = answer.json()
        assert body["ordering"] == "aggregate" and body["count"] == 1
        assert body["capped"] is False and body["oldest_wait_seconds"] >= 0
        [item] = body["items"]
        assert item["aggregate_id"] == str(aggregate) and item["handler"] == "fan_b"
        assert item["event_id"] == str(head) and item["event_type"] == "t.fan"
        assert item["state"] == "dead_lettered" and item["waiting"] == 2
        assert item["since"] is not None and item["retry_at"] is None
        limited = await api.viewer.get("/admin/v1/aggregates/blocked", params={"limit": 1})
        assert len(limited.json()["items"]) == 1
        for params in ({"limit": "0"}, {"limit": "501"}, {"cursor": "x"}):
            refused = await api.viewer.get("/admin/v1/aggregates/blocked", params=params)
            assert refused.status_code == 422, params
        assert (await api.anonymous.get("/admin/v1/aggregates/blocked")).status_code == 401
        [letter] = await _pages(api.viewer, {})
        await api.operator.post(f"{URL}/{letter['id']}/discard", json={"reason": "unblock"})
        after = (await api.viewer.get("/admin/v1/aggregates/blocked")).json()
        assert after["count"] == 0 and after["items"] == []


async def test_park_and_ordering_none_report_no_block_over_the_same_rows(store_url: str) -> None:
    """The same rows: blocked under AGGREGATE_FAILURE=block, not under park, none unordered."""
    aggregate = uuid.uuid4()
    async with _served(store_url, aggregate_failure="block") as api:
        await _blocked(api, aggregate, waiting=1)
        assert (await api.viewer.get("/admin/v1/aggregates/blocked")).json()["count"] == 1
    async with _served(store_url) as api:  # park (the default): the dead letter holds nothing
        parked = (await api.viewer.get("/admin/v1/aggregates/blocked")).json()
        assert parked["ordering"] == "aggregate" and parked["count"] == 0
    async with _served(store_url, ordering="none", aggregate_failure="block") as api:
        unordered = (await api.viewer.get("/admin/v1/aggregates/blocked")).json()
        assert unordered == {
            "ordering": "none",
            "count": 0,
            "capped": False,
            "oldest_wait_seconds": 0.0,
            "items": [],
        }
