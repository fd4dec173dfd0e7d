"""/admin/v1/operations on both backends: dry runs, execution at a rate by a real runner, cancel,
tokens, frozen selectors, pause/resume, backfill, and the audit row of every step."""

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from eventproc import Event, HandlerContext, NewEvent
from eventproc.admin.operations import carry_operations
from eventproc.runtime import Runtime
from eventproc.store.admin import operation_work
from eventproc.store.schema import operations
from support.admin_api import Api, publish

Json = dict[str, Any]
OPERATOR = "operator#" + hashlib.sha256(b"op-token").hexdigest()[:8]


@contextlib.asynccontextmanager
async def carrying(runtime: Runtime) -> AsyncIterator[None]:
    """The worker's operations runner, as every worker runs it beside its processor."""
    task = asyncio.create_task(carry_operations(runtime))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def plan(client: httpx.AsyncClient, **body: Any) -> Json:
    answer = await client.post("/admin/v1/operations", json=body)
    assert answer.status_code == 201, answer.text
    found: Json = answer.json()
    return found


async def execute(client: httpx.AsyncClient, planned: Json, reason: str = "incident 42") -> Json:
    answer = await client.post(
        f"/admin/v1/operations/{planned['id']}/execute",
        json={"plan_token": planned["plan_token"], "reason": reason},
    )
    assert answer.status_code == 200, answer.text
    found: Json = answer.json()
    return found


async def show(api: Api, op_id: str) -> Json:
    answer = await api.viewer.get(f"/admin/v1/operations/{op_id}")
    assert answer.status_code == 200, answer.text
    found: Json = answer.json()
    return found


async def finished(api: Api, op_id: str) -> Json:
    async def done() -> bool:
        return (await show(api, op_id))["status"] != "running"

    await until(done)
    return await show(api, op_id)


async def audit(api: Api) -> list[Json]:
    """Oldest first."""
    items: list[Json] = (await api.viewer.get("/admin/v1/audit?limit=500")).json()["items"]
    return items[::-1]


async def processed(api: Api, count: int, type_: str = "t.ok") -> list[uuid.UUID]:
    ids = await publish(api.runtime, *[NewEvent(type_, {"n": n}) for n in range(count)])
    await api.drain()
    return ids


async def drain_again(api: Api) -> None:
    """A later drain, by a worker of its own with the same settings and registry.

    (A second ``run(until_idle=True)`` of the fixture's processor can wait for
    its 60 s poll after events were published between the two runs.)
    """
    worker = Runtime(api.runtime.settings, registry=api.runtime.registry)
    try:
        await worker.processor.run(until_idle=True)
    finally:
        await worker.store.close()


async def replayed_by(api: Api, ids: list[uuid.UUID], op_id: str) -> list[uuid.UUID]:
    """The events of ``ids`` whose metadata says this operation replayed them."""
    found = []
    for event_id in ids:
        event = await api.runtime.store.event_get(event_id)
        assert event is not None
        if event.metadata.get("replay", {}).get("operation_id") == op_id:
            found.append(event_id)
    return found


async def test_a_dry_run_counts_and_samples_and_changes_nothing(api: Api) -> None:
    ids = await processed(api, 12)
    capped = await plan(
        api.operator, action="replay", selector={"events": {"type": "t.ok"}}, max_items=5
    )
    assert capped["status"] == "planned" and capped["count"] == 5 and capped["capped"] is True
    assert [item["event_id"] for item in capped["sample"]] == [str(i) for i in ids[:5]]
    assert capped["total"] is None and capped["done_count"] == 0
    created = datetime.fromisoformat(capped["created_at"])
    assert datetime.fromisoformat(capped["plan_expires_at"]) - created == timedelta(minutes=15)
    whole = await plan(api.operator, action="replay", selector={"event_ids": [str(ids[0])]})
    assert whole["count"] == 1 and whole["capped"] is False
    everything = await plan(
        api.operator, action="replay", selector={"events": {"type": "t.*"}}, max_items=100
    )
    assert everything["count"] == 12 and len(everything["sample"]) == 10
    for event_id in ids:
        event = await api.runtime.store.event_get(event_id)
        assert event is not None and event.processed and "replay" not in event.metadata
    assert (await show(api, capped["id"]))["status"] == "planned"
    assert "plan_token" not in await show(api, capped["id"])
    entries = await audit(api)
    assert [entry["action"] for entry in entries] == ["operation.plan"] * 3
    assert entries[0]["counts"] == {"matched": 5, "capped": 1}
    assert entries[0]["operation_id"] == capped["id"] and entries[0]["actor"] == OPERATOR
    assert entries[0]["target"]["selector"] == {"events": {"type": "t.ok"}}


async def test_an_executed_replay_runs_in_batches_at_its_rate(api: Api) -> None:
    ids = await processed(api, 25)
    planned = await plan(
        api.operator,
        action="replay",
        selector={"events": {"type": "t.ok"}},
        rate_per_second=10,
        reason="plan it",
    )
    started = await execute(api.operator, planned)
    assert started["status"] == "running" and started["total"] == 25
    assert started["done_count"] == 0 and started["reason"] == "incident 42"
    seen: set[int] = set()
    async with carrying(api.runtime):

        async def done() -> bool:
            current = await show(api, planned["id"])
            seen.add(current["done_count"])
            return bool(current["status"] == "done")

        await until(done)
    assert seen - {0, 25}, "progress seen between batches"
    assert seen <= {0, 10, 20, 25}  # batches of the rate's size (10 a second)
    ended = await show(api, planned["id"])
    assert ended["done_count"] == 25 and ended["changed_count"] == 25
    assert ended["finished_at"] is not None and ended["locked_by"] is None
    assert sorted(await replayed_by(api, ids, planned["id"])) == sorted(ids)
    event = await api.runtime.store.event_get(ids[0])
    assert event is not None and not event.processed
    assert event.metadata["replay"] == {"by": OPERATOR, "operation_id": planned["id"]}
    entries = [e for e in await audit(api) if e["operation_id"] == planned["id"]]
    assert [e["action"] for e in entries] == [
        "operation.plan",
        "operation.execute",
        "operation.done",
    ]
    assert entries[1]["reason"] == "incident 42" and entries[1]["counts"] == {"total": 25}
    assert entries[2]["actor"] == "system"
    assert entries[2]["counts"] == {"total": 25, "done": 25, "changed": 25}
    await drain_again(api)  # each replayed event runs again, once
    event = await api.runtime.store.event_get(ids[0])
    assert event is not None and event.processed and event.attempts == 1


async def test_cancel_stops_it_mid_way(api: Api) -> None:
    ids = await processed(api, 20)
    planned = await plan(
        api.operator, action="replay", selector={"event_ids": [str(i) for i in ids]},
        rate_per_second=2,
    )  # fmt: skip
    await execute(api.operator, planned)
    async with carrying(api.runtime):

        async def started() -> bool:
            return bool((await show(api, planned["id"]))["done_count"] >= 2)

        await until(started)
        answer = await api.operator.post(
            f"/admin/v1/operations/{planned['id']}/cancel", json={"reason": "enough"}
        )
        assert answer.status_code == 200
        cancelled = answer.json()
        assert cancelled["status"] == "cancelled" and cancelled["locked_by"] is None
        await asyncio.sleep(2.5)  # longer than two batches' interval: none runs any more
    after = await show(api, planned["id"])
    assert after["status"] == "cancelled" and after["done_count"] == cancelled["done_count"] < 20
    replayed = await replayed_by(api, ids, planned["id"])
    assert len(replayed) == after["changed_count"] == after["done_count"]
    again = await api.operator.post(f"/admin/v1/operations/{planned['id']}/cancel", json={})
    assert again.status_code == 409
    retried = await execute(api.operator, planned)  # the same token: the operation as it is
    assert retried["status"] == "cancelled" and retried["done_count"] == after["done_count"]
    [entry] = [e for e in await audit(api) if e["action"] == "operation.cancel"]
    assert entry["reason"] == "enough" and entry["operation_id"] == planned["id"]
    assert entry["counts"]["done"] == after["done_count"]


async def test_execute_is_idempotent_and_checks_its_token(api: Api) -> None:
    ids = await processed(api, 3)
    planned = await plan(api.operator, action="replay", selector={"events": {"type": "t.ok"}})
    url = f"/admin/v1/operations/{planned['id']}/execute"
    wrong = await api.operator.post(url, json={"plan_token": "guess", "reason": "r"})
    assert wrong.status_code == 403 and "token" in wrong.json()["error"]
    missing = await api.operator.post(url, json={"plan_token": planned["plan_token"]})
    assert missing.status_code == 422
    empty = await api.operator.post(url, json={"plan_token": planned["plan_token"], "reason": ""})
    assert empty.status_code == 422
    viewer = await api.viewer.post(url, json={"plan_token": planned["plan_token"], "reason": "r"})
    assert viewer.status_code == 403
    assert (await show(api, planned["id"]))["status"] == "planned"
    first = await execute(api.operator, planned)
    second = await execute(api.operator, planned, reason="clicked twice")
    assert second == first and second["reason"] == "incident 42"
    executed = [e for e in await audit(api) if e["action"] == "operation.execute"]
    assert len(executed) == 1
    async with carrying(api.runtime):
        ended = await finished(api, planned["id"])
    assert ended["changed_count"] == 3 and len(await replayed_by(api, ids, planned["id"])) == 3
    assert (await execute(api.operator, planned))["status"] == "done"  # still the same answer
    late = await api.operator.post(url, json={"plan_token": "another", "reason": "r"})
    assert late.status_code == 409  # done: plan a new one


async def test_expired_cancelled_and_unknown_plans_are_refused(api: Api) -> None:
    await processed(api, 2)
    expired = await plan(api.operator, action="replay", selector={"events": {"type": "t.ok"}})
    async with api.runtime.store.driver.begin() as conn:
        await conn.execute(
            update(operations)
            .where(operations.c.id == uuid.UUID(expired["id"]))
            .values(plan_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    answer = await api.operator.post(
        f"/admin/v1/operations/{expired['id']}/execute",
        json={"plan_token": expired["plan_token"], "reason": "late"},
    )
    assert answer.status_code == 410 and (await show(api, expired["id"]))["status"] == "planned"
    dropped = await plan(api.operator, action="replay", selector={"events": {"type": "t.ok"}})
    cancel = await api.operator.post(f"/admin/v1/operations/{dropped['id']}/cancel", json={})
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    answer = await api.operator.post(
        f"/admin/v1/operations/{dropped['id']}/execute",
        json={"plan_token": dropped["plan_token"], "reason": "after all"},
    )
    assert answer.status_code == 409  # cancelled before it ran
    unknown = uuid.uuid4()
    assert (await api.viewer.get(f"/admin/v1/operations/{unknown}")).status_code == 404
    body = {"plan_token": "x", "reason": "r"}
    assert (
        await api.operator.post(f"/admin/v1/operations/{unknown}/execute", json=body)
    ).status_code == 404
    assert (
        await api.operator.post(f"/admin/v1/operations/{unknown}/cancel", json={})
    ).status_code == 404
    assert (await api.viewer.get("/admin/v1/operations/nope")).status_code == 422
    actions = [e["action"] for e in await audit(api)]
    assert actions == ["operation.plan", "operation.plan", "operation.cancel"]


async def test_bad_plans_are_clear_4xx_and_record_nothing(api: Api) -> None:
    event_id = str(uuid.uuid4())
    for body in (
        {"action": "explode", "selector": {"event_ids": [event_id]}},
        {"action": "replay", "selector": {"event_idz": [event_id]}},
        {"action": "replay", "selector": {"events": {"typo": "x"}}},
        {"action": "replay", "selector": {}},
        {"action": "replay", "selector": {"event_ids": [event_id], "events": {}}},
        {"action": "replay", "selector": {"dead_letters": {}, "handler": "fan_b"}},
        {"action": "replay", "selector": {"event_ids": [event_id], "handler": "nobody"}},
        {"action": "replay", "selector": {"events": {"path": "payload.a"}}},
        {"action": "replay", "selector": {"events": {"since": "2026-12-01T10:00:00"}}},
        {"action": "replay", "selector": {"events": {"since": 1764583200}}},
        {"action": "replay", "selector": {"events": {"handler": "fan_a"}, "handler": "fan_b"}},
        {"action": "discard", "selector": {"events": {}}},
        {"action": "pause", "selector": {"handler": "fan_b", "events": {}}},
        {"action": "pause", "selector": {"handler": "nobody"}},
        {"action": "resume", "selector": {}},
        {"action": "replay", "selector": {"event_ids": [event_id]}, "max_items": 0},
        {"action": "replay", "selector": {"event_ids": [event_id]}, "max_items": 100_001},
        {"action": "replay", "selector": {"event_ids": [event_id]}, "rate_per_second": 0.05},
        {"action": "replay", "selector": {"event_ids": [event_id]}, "rate_per_second": 1001},
        {"action": "replay", "selector": {"event_ids": [event_id]}, "reason": ""},
        {"action": "replay", "selector": {"event_ids": [event_id]}, "extra": 1},
        {"action": "backfill", "selector": {"handler": "ok"}},
        {
            "action": "backfill",
            "selector": {
                "handler": "ok",
                "since": "2026-12-01T10:00:00Z",
                "until": "2026-12-01T09:00:00Z",
            },
        },
    ):
        answer = await api.admin.post("/admin/v1/operations", json=body)
        assert answer.status_code == 422, body
        assert isinstance(answer.json()["error"], str), body
    pause = {"action": "pause", "selector": {"handler": "fan_b"}}
    assert (await api.viewer.post("/admin/v1/operations", json=pause)).status_code == 403
    backfill = {"action": "backfill", "selector": {"handler": "ok", "since": "2026-01-01T00:00Z"}}
    refused = await api.operator.post("/admin/v1/operations", json=backfill)
    assert refused.status_code == 403 and "admin" in refused.json()["error"]
    assert (await api.admin.post("/admin/v1/operations", json=backfill)).status_code == 201
    assert len(await audit(api)) == 1  # the admin's backfill plan alone


async def test_a_selector_is_frozen_when_planned(api: Api) -> None:
    before = await processed(api, 3)
    planned = await plan(api.operator, action="replay", selector={"events": {"type": "t.ok"}})
    [later] = await publish(api.runtime, NewEvent("t.ok", {"late": True}))
    await drain_again(api)
    started = await execute(api.operator, planned)
    assert started["total"] == 3
    async with carrying(api.runtime):
        ended = await finished(api, planned["id"])
    assert ended["changed_count"] == 3
    assert sorted(await replayed_by(api, [*before, later], planned["id"])) == sorted(before)
    event = await api.runtime.store.event_get(later)
    assert event is not None and event.processed and "replay" not in event.metadata


async def test_a_replay_of_one_handler_leaves_the_others_deliveries(api: Api) -> None:
    ids = await publish(
        api.runtime, *[NewEvent("t.fan", {"order": n, "fail": True}) for n in range(3)]
    )
    [single] = await processed(api, 1)
    selector = {"events": {"type": "t.*"}, "handler": "fan_b"}
    planned = await plan(api.operator, action="replay", selector=selector)
    assert planned["count"] == 3  # not the t.ok event: fan_b never had it
    assert {item["handler"] for item in planned["sample"]} == {"fan_b"}
    await execute(api.operator, planned)
    async with carrying(api.runtime):
        ended = await finished(api, planned["id"])
    assert ended["changed_count"] == 3
    for event_id in ids:
        shown = (await api.operator.get(f"/admin/v1/events/{event_id}")).json()
        states = {d["handler"]: (d["status"], d["attempts"]) for d in shown["deliveries"]}
        assert states == {"fan_a": ("done", 1), "fan_b": ("pending", 0)}
        assert shown["metadata"]["replay"] == {
            "by": OPERATOR,
            "operation_id": planned["id"],
            "handler": "fan_b",
        }
        assert shown["dead_letters"][0]["replayed_at"] is not None
    event = await api.runtime.store.event_get(single)
    assert event is not None and event.processed and "replay" not in event.metadata


async def test_dead_letters_replayed_and_discarded_by_operations(api: Api) -> None:
    await publish(
        api.runtime,
        *[NewEvent("t.fan", {"order": n, "fail": True}) for n in range(4)],
        NewEvent("t.fan", {"order": 9}),
    )
    await api.drain()
    letters = sorted(await api.runtime.store.dead_letter_list(), key=lambda d: str(d.id))
    assert len(letters) == 4
    picked = letters[:2]
    replay = await plan(
        api.operator, action="replay", selector={"dead_letter_ids": [str(d.id) for d in picked]}
    )
    assert replay["count"] == 2
    assert {item["dead_letter_id"] for item in replay["sample"]} == {str(d.id) for d in picked}
    await execute(api.operator, replay)
    async with carrying(api.runtime):
        assert (await finished(api, replay["id"]))["changed_count"] == 2
        for letter in picked:
            shown = (await api.operator.get(f"/admin/v1/events/{letter.event_id}")).json()
            assert shown["metadata"]["replay"]["operation_id"] == replay["id"]
            assert shown["dead_letters"][0]["replayed_at"] is not None
        discard = await plan(
            api.operator, action="discard", selector={"dead_letters": {"handler": "fan_b"}}
        )
        assert discard["count"] == 2  # the open ones only
        await execute(api.operator, discard)
        assert (await finished(api, discard["id"]))["changed_count"] == 2
    left = await api.runtime.store.dead_letter_list()
    assert sorted(d.id for d in left) == sorted(d.id for d in picked)  # replayed, kept
    assert all(d.replayed_at is not None for d in left)
    actions = [e["action"] for e in await audit(api)]
    assert actions.count("operation.done") == 2 and actions.count("operation.execute") == 2


async def test_pause_and_resume_through_operations(api: Api) -> None:
    paused = await plan(api.operator, action="pause", selector={"handler": "fan_b"})
    [sample] = paused["sample"]
    assert paused["count"] == 1 and sample["handler"] == "fan_b" and sample["event_id"] is None
    assert await api.runtime.store.admin.paused() == {}
    done = await execute(api.operator, paused, reason="downstream outage")
    assert done["status"] == "done" and done["changed_count"] == 1 and done["total"] == 1
    [(_at, actor, reason)] = (await api.runtime.store.admin.paused()).values()
    assert actor == OPERATOR and reason == "downstream outage"
    # This process's claims hold it at once, not at the heartbeat's next refresh.
    assert api.runtime.processor.producer.paused == {"fan_b"}
    twice = await execute(
        api.operator, await plan(api.operator, action="pause", selector={"handler": "fan_b"})
    )
    assert twice["status"] == "done" and twice["changed_count"] == 0
    resumed = await execute(
        api.operator, await plan(api.operator, action="resume", selector={"handler": "fan_b"})
    )
    assert resumed["changed_count"] == 1 and await api.runtime.store.admin.paused() == {}
    assert api.runtime.processor.producer.paused == frozenset()
    entries = [e for e in await audit(api) if e["operation_id"] == paused["id"]]
    assert [e["action"] for e in entries] == [
        "operation.plan",
        "handler.pause",
        "operation.execute",
        "operation.done",
    ]
    assert entries[1]["counts"] == {"paused": 1} and entries[1]["reason"] == "downstream outage"
    results = [e["result"] for e in await audit(api) if e["action"].startswith("handler.")]
    assert results == ["ok", "unchanged", "ok"]


async def test_a_backfill_operation_gives_past_events_the_new_subscription(api: Api) -> None:
    since = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    ids = await publish(api.runtime, *[NewEvent("t.ok", {"n": n}) for n in range(3)])
    await processed(api, 1, "t.fan")
    ran: list[uuid.UUID] = []

    async def late(event: Event, ctx: HandlerContext) -> None:
        ran.append(event.id)

    api.runtime.registry.register("t.ok", late, name="late")  # deployed after those events
    selector = {"handler": "late", "since": since}
    planned = await plan(api.admin, action="backfill", selector=selector, rate_per_second=2)
    assert planned["count"] == 3
    assert {item["event_type"] for item in planned["sample"]} == {"t.ok"}
    url = f"/admin/v1/operations/{planned['id']}/execute"
    body = {"plan_token": planned["plan_token"], "reason": "new subscription"}
    assert (await api.operator.post(url, json=body)).status_code == 403
    started = await execute(api.admin, planned, reason="new subscription")
    assert started["total"] == 3
    async with carrying(api.runtime):
        ended = await finished(api, planned["id"])
    assert ended["status"] == "done" and ended["changed_count"] == 3
    await drain_again(api)  # by a worker started with the new subscription
    assert sorted(ran) == sorted(ids)  # only the new subscription ran, once each
    again = await plan(api.admin, action="backfill", selector=selector)
    assert again["count"] == 0


async def test_operations_are_listed_newest_first_in_keyset_pages(api: Api) -> None:
    made = [
        await plan(api.operator, action="pause", selector={"handler": "fan_a"}) for _ in range(5)
    ]
    await execute(api.operator, made[0])
    items: list[Json] = []
    answer = (await api.viewer.get("/admin/v1/operations", params={"limit": 2})).json()
    while True:
        items += answer["items"]
        if answer["next_cursor"] is None:
            break
        answer = (
            await api.viewer.get(
                "/admin/v1/operations", params={"limit": 2, "cursor": answer["next_cursor"]}
            )
        ).json()
    assert [item["id"] for item in items] == [op["id"] for op in reversed(made)]
    done = (await api.viewer.get("/admin/v1/operations", params={"status": "done"})).json()
    assert [item["id"] for item in done["items"]] == [made[0]["id"]]
    for params in ({"status": "asleep"}, {"cursor": "nope"}, {"limit": 0}, {"typo": 1}):
        assert (await api.viewer.get("/admin/v1/operations", params=params)).status_code == 422


async def test_an_unexpected_error_fails_the_operation_and_the_runner_goes_on(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = await processed(api, 4)
    broken = await plan(api.operator, action="replay", selector={"event_ids": [str(ids[0])]})

    async def bug(*args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(operation_work, "apply", bug)  # a bug in a batch, not the database
    await execute(api.operator, broken)
    async with carrying(api.runtime):
        failed = await finished(api, broken["id"])
        assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom"
        assert failed["done_count"] == 0 and failed["locked_by"] is None
        monkeypatch.undo()
        healthy = await plan(api.operator, action="replay", selector={"event_ids": [str(ids[1])]})
        await execute(api.operator, healthy)
        assert (await finished(api, healthy["id"]))["changed_count"] == 1  # the same runner
    [entry] = [e for e in await audit(api) if e["action"] == "operation.failed"]
    assert entry["actor"] == "system" and entry["result"] == "failed"
    assert entry["operation_id"] == broken["id"] and entry["reason"] == "RuntimeError: boom"
    event = await api.runtime.store.event_get(ids[0])
    assert event is not None and event.processed  # the failed batch changed nothing
