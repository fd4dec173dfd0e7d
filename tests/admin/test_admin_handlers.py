"""/admin/v1/handlers and /admin/v1/workers on both backends: figures after real drains,
pause and resume with their audit rows, heartbeats, roles, bad input."""

import asyncio
import hashlib
import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from eventproc import NewEvent, __version__
from eventproc.admin import heartbeat
from eventproc.admin.heartbeat import Reporter, keep_reporting, quantile_ms
from eventproc.config import Settings
from eventproc.http import create_app
from eventproc.http.admin import paging
from eventproc.runtime import Runtime
from eventproc.store.admin import Audit
from eventproc.store.admin import handlers as handler_reads
from eventproc.store.admin.handlers import StatsDelta, WorkerRow
from eventproc.store.schema import workers
from support.admin_api import TOKENS, Api, admin_registry, publish
from support.served import serving
from support.waiting import eventually

OPERATOR = f"operator#{hashlib.sha256(TOKENS['operator'].encode()).hexdigest()[:8]}"


async def handlers(api: Api) -> dict[str, dict[str, Any]]:
    answer = await api.viewer.get("/admin/v1/handlers")
    assert answer.status_code == 200, answer.text
    return {item["name"]: item for item in answer.json()["items"]}


async def drain_reported(api: Api) -> None:
    """Drain with the runtime's own processor (whose tallies and claims its heartbeat reports);
    a processor runs to idle once, so a test does this at most once."""
    await api.runtime.processor.run(until_idle=True)


async def test_roles_guard_reads_and_pauses(api: Api) -> None:
    for path in ("/admin/v1/handlers", "/admin/v1/handlers/ok", "/admin/v1/workers"):
        assert (await api.anonymous.get(path)).status_code == 401, path
        assert (await api.viewer.get(path)).status_code == 200, path
    for action in ("pause", "resume"):
        refused = await api.viewer.post(f"/admin/v1/handlers/ok/{action}", json={})
        assert refused.status_code == 403 and refused.json()["needed"] == "operator"
        assert (await api.anonymous.post(f"/admin/v1/handlers/ok/{action}")).status_code == 401
    assert (await api.viewer.get("/admin/v1/audit")).json()["items"] == []  # nothing changed
    assert (await handlers(api))["ok"]["paused"] is None
    assert (await api.admin.post("/admin/v1/handlers/ok/pause", json={})).status_code == 200
    assert (await api.operator.post("/admin/v1/handlers/ok/resume", json={})).status_code == 200


async def test_figures_after_a_real_drain(api: Api) -> None:
    await publish(
        api.runtime,
        *[NewEvent("t.ok", {"n": n}) for n in range(4)],
        NewEvent("t.fan", {"order": 1}),
        NewEvent("t.fan", {"order": 2, "fail": True}),
        NewEvent("t.flaky", {"order": 3}),
    )
    await drain_reported(api)
    await Reporter(api.runtime).report()  # the heartbeat's flush of the tallies
    found = await handlers(api)
    assert list(found) == ["fan_a", "fan_b", "flaky", "ok"]  # by name
    ok = found["ok"]
    assert ok["event_types"] == ["t.ok"] and ok["filter"] is None
    assert ok["transactional"] is False and ok["paused"] is None
    assert ok["backlog"] == {"count": 0, "capped": False}
    assert (ok["due"], ok["in_flight"], ok["oldest_pending_age_seconds"]) == (0, 0, None)
    for window in ("last_minute", "last_hour"):
        assert ok[window]["succeeded"] == 4 and ok[window]["failed"] == 0, window
        assert ok[window]["failure_rate"] == 0.0 and ok[window]["per_second"] > 0, window
    assert 0 < ok["duration_ms"]["p50"] <= ok["duration_ms"]["p95"]
    for name, succeeded, failed in (("fan_a", 2, 0), ("fan_b", 1, 1), ("flaky", 1, 1)):
        minute = found[name]["last_minute"]
        assert (minute["succeeded"], minute["failed"]) == (succeeded, failed), name
    assert found["fan_b"]["last_hour"]["failure_rate"] == 0.5
    one = (await api.viewer.get("/admin/v1/handlers/fan_b")).json()
    assert one["last_hour"] == found["fan_b"]["last_hour"] and one["name"] == "fan_b"


async def test_rates_and_percentiles_sum_every_worker_and_keep_to_their_windows(
    api: Api,
) -> None:
    reads = api.runtime.store.admin.handlers
    minute = (await reads.now()).replace(second=0, microsecond=0)
    within = [0, 0, 4] + [0] * 12  # 4 calls between 10 and 25 ms
    await reads.add_stats("w1", minute, {"ok": StatsDelta(3, 1, 70.0, within)})
    await reads.add_stats("w1", minute, {"ok": StatsDelta(2, 0, 30.0, [0, 0, 2] + [0] * 12)})
    await reads.add_stats("w2", minute, {"ok": StatsDelta(4, 0, 80.0, within)})
    await reads.add_stats("w2", minute - timedelta(minutes=5), {"ok": StatsDelta(5, 5, 1, within)})
    await reads.add_stats("w2", minute - timedelta(hours=2), {"ok": StatsDelta(99, 99, 1, within)})
    ok = (await api.viewer.get("/admin/v1/handlers/ok")).json()
    assert (ok["last_minute"]["succeeded"], ok["last_minute"]["failed"]) == (9, 1)
    assert ok["last_minute"]["failure_rate"] == 0.1
    assert (ok["last_hour"]["succeeded"], ok["last_hour"]["failed"]) == (14, 6)
    assert 0 < ok["last_hour"]["per_second"] < ok["last_minute"]["per_second"]
    # 10 + 4 + 4 calls in the last hour, all in (10, 25] ms: interpolated within it.
    assert ok["duration_ms"] == {"p50": 17.5, "p95": 24.25}
    assert (await handlers(api))["fan_a"]["duration_ms"] == {"p50": None, "p95": None}


def test_quantiles_interpolate_within_their_bucket() -> None:
    empty = [0] * 15
    assert quantile_ms(empty, 0.5) is None
    assert quantile_ms([1, 2], 0.5) is None  # other bounds: not read
    first = [4] + [0] * 14  # 0-5 ms
    assert quantile_ms(first, 0.5) == 2.5
    spread = [0] * 15
    spread[0], spread[6] = 1, 1  # one in 0-5 ms, one in 100-250 ms
    assert quantile_ms(spread, 0.5) == 5.0
    assert quantile_ms(spread, 1.0) == 250.0
    slow = [0] * 14 + [3]  # past the last bound (10 s)
    assert quantile_ms(slow, 0.95) == 10_000.0


async def test_backlog_counts_rows_by_type_and_deliveries_and_is_capped(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    await publish(
        api.runtime,
        *[NewEvent("t.ok", {"n": n}) for n in range(3)],
        *[NewEvent("t.fan", {"order": n}) for n in range(2)],
    )
    found = await handlers(api)
    assert found["ok"]["backlog"] == {"count": 3, "capped": False}
    assert (found["ok"]["due"], found["ok"]["in_flight"]) == (3, 0)
    assert found["ok"]["oldest_pending_age_seconds"] >= 0
    assert found["fan_a"]["backlog"]["count"] == 2  # not routed yet: counted by type
    assert found["flaky"]["backlog"]["count"] == 0
    monkeypatch.setattr(handler_reads, "BACKLOG_CAP", 2)
    assert (await handlers(api))["ok"]["backlog"] == {"count": 2, "capped": True}
    monkeypatch.undo()

    paused = await api.operator.post("/admin/v1/handlers/fan_b/pause", json={"reason": "down"})
    assert paused.json() == {"handler": "fan_b", "paused": True, "changed": True}
    await api.drain()
    found = await handlers(api)
    assert found["ok"]["backlog"]["count"] == 0 and found["fan_a"]["backlog"]["count"] == 0
    waiting = found["fan_b"]
    assert waiting["backlog"] == {"count": 2, "capped": False}  # deliveries, waiting
    assert waiting["due"] == 2 and waiting["oldest_pending_age_seconds"] >= 0
    assert waiting["paused"]["actor"] == OPERATOR and waiting["paused"]["reason"] == "down"


async def test_pause_and_resume_through_http_are_audited_and_lose_nothing(api: Api) -> None:
    ids = await publish(api.runtime, *[NewEvent("t.fan", {"order": n}) for n in range(3)])
    first = await api.operator.post("/admin/v1/handlers/fan_b/pause", json={"reason": "outage"})
    again = await api.operator.post("/admin/v1/handlers/fan_b/pause", json={})
    assert first.status_code == 200 and first.json()["changed"] is True
    assert again.json() == {"handler": "fan_b", "paused": True, "changed": False}
    assert api.runtime.processor.producer.paused == {"fan_b"}  # this process: at once
    await api.drain()
    for event_id in ids:
        shown = (await api.viewer.get(f"/admin/v1/events/{event_id}")).json()
        states = {d["handler"]: d["status"] for d in shown["deliveries"]}
        assert states == {"fan_a": "done", "fan_b": "pending"} and not shown["processed"]

    resumed = await api.operator.post("/admin/v1/handlers/fan_b/resume", json={"reason": "ok"})
    assert resumed.json() == {"handler": "fan_b", "paused": False, "changed": True}
    assert api.runtime.processor.producer.paused == frozenset()
    await api.drain()
    for event_id in ids:
        shown = (await api.viewer.get(f"/admin/v1/events/{event_id}")).json()
        assert shown["outcome"] == "succeeded"
        assert {d["handler"]: d["attempts"] for d in shown["deliveries"]} == {
            "fan_a": 1,
            "fan_b": 1,
        }  # each ran exactly once
    twice = await api.operator.post("/admin/v1/handlers/fan_b/resume", json={})
    assert twice.json()["changed"] is False

    audit = (await api.viewer.get("/admin/v1/audit")).json()["items"]
    rows = [(a["action"], a["reason"], a["counts"], a["result"]) for a in reversed(audit)]
    assert rows == [
        ("handler.pause", "outage", {"paused": 1}, "ok"),
        ("handler.pause", None, {"paused": 0}, "unchanged"),
        ("handler.resume", "ok", {"resumed": 1}, "ok"),
        ("handler.resume", None, {"resumed": 0}, "unchanged"),
    ]
    assert {a["actor"] for a in audit} == {OPERATOR}
    assert all(a["target"] == {"handler": "fan_b"} and a["role"] == "operator" for a in audit)


async def test_workers_after_a_heartbeat(api: Api) -> None:
    reads = api.runtime.store.admin.handlers
    await publish(api.runtime, NewEvent("t.ok", {}))
    await drain_reported(api)
    await Reporter(api.runtime).report()
    [me] = (await api.viewer.get("/admin/v1/workers")).json()["items"]
    assert me["id"] == api.runtime.worker_id and me["alive"] is True
    assert (me["host"], me["pid"], me["version"]) == (
        socket.gethostname(),
        os.getpid(),
        __version__,
    )
    assert me["last_claim_at"] is not None and me["last_seen_at"] >= me["started_at"]

    started = datetime.now(UTC) - timedelta(hours=1)
    for worker_id, seen in (("quiet", 60), ("gone", 11 * 60)):
        await reads.beat(WorkerRow(worker_id, "elsewhere", 7, "0.0.1", started, None))
        async with api.runtime.store.begin() as conn:
            when = datetime.now(UTC) - timedelta(seconds=seen)
            await conn.execute(
                update(workers).where(workers.c.id == worker_id).values(last_seen_at=when)
            )
    listed = (await api.viewer.get("/admin/v1/workers")).json()["items"]
    alive = {item["id"]: item["alive"] for item in listed}
    assert alive == {api.runtime.worker_id: True, "quiet": False}  # "gone": not seen for 10 min
    page = (await api.viewer.get("/admin/v1/workers", params={"limit": 1})).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = await api.viewer.get("/admin/v1/workers", params={"cursor": page["next_cursor"]})
    assert [item["id"] for item in rest.json()["items"]] == sorted(alive)[1:]


async def test_keep_reporting_flushes_refreshes_and_reports_once_more_at_shutdown(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heartbeat, "PAUSE_REFRESH_SECONDS", 0.02)
    runtime = api.runtime
    chore = asyncio.create_task(keep_reporting(runtime))
    try:

        async def seen() -> bool:
            listed = (await api.viewer.get("/admin/v1/workers")).json()["items"]
            return [item["id"] for item in listed] == [runtime.worker_id]

        await eventually(seen)
        await runtime.store.admin.pause("ok", Audit("elsewhere", "operator", None))  # elsewhere

        async def learned() -> bool:
            return runtime.processor.producer.paused == {"ok"}

        await eventually(learned)
        runtime.processor.handling.succeeded("fan_a", 0.001)  # a call since the last flush
    finally:
        chore.cancel()
        with pytest.raises(asyncio.CancelledError):
            await chore
    fan_a = (await api.viewer.get("/admin/v1/handlers/fan_a")).json()
    assert fan_a["last_minute"]["succeeded"] == 1  # the last report at shutdown


async def test_a_database_outage_never_stops_the_reports_and_keeps_the_tallies(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(heartbeat, "PAUSE_REFRESH_SECONDS", 0.01)
    monkeypatch.setattr(heartbeat, "HEARTBEAT_SECONDS", 0.0)
    nowhere = "postgresql://postgres@127.0.0.1:9/eventproc?connect_timeout=1"
    runtime = Runtime(Settings(database_url=nowhere), registry=admin_registry())
    runtime.processor.handling.succeeded("ok", 0.002)
    caplog.set_level(logging.INFO, logger="eventproc.admin")
    chore = asyncio.create_task(keep_reporting(runtime))
    try:

        async def failed_a_few_times() -> bool:
            return len(_report_lines(caplog)) >= 4 and chore.done() is False

        await eventually(failed_a_few_times)
        await asyncio.sleep(0.1)  # more failing ticks: still one line per report
        assert not chore.done()
        assert sorted(_report_lines(caplog)) == ["heartbeat", "paused", "prune", "stats"]
    finally:
        chore.cancel()
        with pytest.raises(asyncio.CancelledError):
            await chore
        await runtime.store.close()
    assert runtime.processor.handling.take_tallies()["ok"].succeeded == 1  # given back


def _report_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        str(record.args[0])  # type: ignore[index]
        for record in caplog.records
        if getattr(record, "action", None) == "report_failing"
    ]


async def test_unknown_handlers_and_bad_input(api: Api) -> None:
    assert (await api.viewer.get("/admin/v1/handlers/nope")).status_code == 404
    for action in ("pause", "resume"):
        answer = await api.operator.post(f"/admin/v1/handlers/nope/{action}", json={})
        assert answer.status_code == 404 and "nope" in answer.json()["error"]
    for path, params in (
        ("/admin/v1/handlers", {"typo": "1"}),
        ("/admin/v1/handlers", {"limit": "0"}),
        ("/admin/v1/handlers", {"limit": "501"}),
        ("/admin/v1/handlers", {"cursor": "not-a-cursor"}),
        ("/admin/v1/workers", {"typo": "1"}),
        ("/admin/v1/workers", {"cursor": "%%%"}),
        ("/admin/v1/workers", {"cursor": paging.encode("w\x00")}),  # no NUL reaches SQL
    ):
        answer = await api.viewer.get(path, params=params)
        assert answer.status_code == 422 and isinstance(answer.json()["error"], str), params
    for body in ({"reason": ""}, {"reason": "x", "extra": 1}, {"reason": 5}, {"reason": "a\x00"}):
        answer = await api.operator.post("/admin/v1/handlers/ok/pause", json=body)
        assert answer.status_code == 422, body
    assert (await api.viewer.get("/admin/v1/audit")).json()["items"] == []
    assert (await handlers(api))["ok"]["paused"] is None


async def test_pages_of_handlers(api: Api) -> None:
    first = (await api.viewer.get("/admin/v1/handlers", params={"limit": 3})).json()
    assert [item["name"] for item in first["items"]] == ["fan_a", "fan_b", "flaky"]
    rest = await api.viewer.get(
        "/admin/v1/handlers", params={"limit": 3, "cursor": first["next_cursor"]}
    )
    assert [item["name"] for item in rest.json()["items"]] == ["ok"]
    assert rest.json()["next_cursor"] is None


async def test_figures_are_shared_by_every_caller_for_their_max_age(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The defaults: handler figures kept 5 s and /health's stats 1 s, one reading however
    many callers (a dashboard, probes, a scrape) ask meanwhile."""
    runtime = Runtime(Settings(database_url=store_url), registry=admin_registry())
    await runtime.prepare(attempts=1)
    readings = [0]
    original = runtime.store.admin.handlers.figures

    async def counted(subscriptions: Any) -> Any:
        readings[0] += 1
        await asyncio.sleep(0.05)  # long enough for the other callers to arrive meanwhile
        return await original(subscriptions)

    monkeypatch.setattr(runtime.store.admin.handlers, "figures", counted)
    try:
        async with serving(create_app(runtime)) as url, httpx.AsyncClient(base_url=url) as client:
            await publish(runtime, NewEvent("t.ok", {}))
            answers = await asyncio.gather(*[client.get("/admin/v1/handlers") for _ in range(5)])
            assert readings[0] == 1
            first = {a.json()["items"][0]["figures_at"] for a in answers}
            assert len(first) == 1
            await publish(runtime, NewEvent("t.ok", {}))
            again = (await client.get("/admin/v1/handlers")).json()["items"]
            ok = {item["name"]: item for item in again}["ok"]
            assert ok["backlog"]["count"] == 1 and {ok["figures_at"]} == first  # kept
            # (max_share 1: the 50 ms this test's reading sleeps would keep it 5 s)
            runtime.handler_figures.max_age, runtime.handler_figures.max_share = 0.2, 1.0
            await asyncio.sleep(0.25)
            ok = {i["name"]: i for i in (await client.get("/admin/v1/handlers")).json()["items"]}
            assert ok["ok"]["backlog"]["count"] == 2 and readings[0] == 2

            runtime._stats.max_share = 1.0  # its 1 s max age, however slow this machine is
            assert (await client.get("/health")).json()["backlog"] == 2
            await publish(runtime, NewEvent("t.ok", {}))
            assert (await client.get("/health")).json()["backlog"] == 2  # within 1 s: kept
            await asyncio.sleep(1.05)
            assert (await client.get("/health")).json()["backlog"] == 3
    finally:
        await runtime.store.close()
