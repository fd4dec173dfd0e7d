"""/health's ``wakeUps`` and the ``eventproc_listen_verified`` gauge, on a real server.

The pooler-like path is a loopback proxy that drops the server's
NotificationResponse messages (tests/support/proxy.py).
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from eventproc.config import Settings
from eventproc.http import create_app
from eventproc.runtime import Runtime
from eventproc.store.postgres import listen as listen_module
from support.proxy import Proxy
from support.registries import make_registry
from support.served import serving
from support.waiting import eventually


@contextlib.asynccontextmanager
async def processing(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A prepared runtime with its processor running, served on loopback."""
    runtime = Runtime(settings, registry=make_registry())
    await runtime.prepare(attempts=1)
    task = asyncio.create_task(runtime.processor.run())
    try:
        async with (
            serving(create_app(runtime)) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):
            yield client
    finally:
        runtime.processor.stop()
        await asyncio.wait_for(task, 30)
        await runtime.store.close()


async def health_when(
    client: httpx.AsyncClient, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The first /health body ``check`` accepts."""
    body: dict[str, Any] = {}

    async def reached() -> bool:
        nonlocal body
        body = (await client.get("/health")).json()
        return check(body)

    await eventually(reached)
    return body


def mode_is(mode: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: bool(body["wakeUps"]["mode"] == mode)


def gauge(text: str, name: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith(f"{name} ")]
    return line.split(" ", 1)[1]


async def test_listen_verified_on_a_direct_connection(pg_url: str) -> None:
    settings = Settings(database_url=pg_url, poll_interval_ms=60_000)
    async with processing(settings) as client:
        body = await health_when(client, mode_is("listen"))
        assert body["status"] == "healthy" and body["statusReasons"] == []
        assert body["wakeUps"]["reason"] is None and body["wakeUps"]["verifiedAt"] is not None
        metrics = (await client.get("/metrics")).text
        assert gauge(metrics, "eventproc_listen_verified") == "1.0"


async def test_swallowed_notifications_show_polling_and_why(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listen_module, "PROBE_TIMEOUT_SECONDS", 0.5)
    target = make_url(pg_url)
    proxy = Proxy(target.host or "127.0.0.1", target.port or 5432, drop_notifications=True)
    await proxy.start()
    url = target.set(port=proxy.port).update_query_dict({"sslmode": "disable"})
    settings = Settings(
        database_url=url.render_as_string(hide_password=False), poll_interval_ms=200
    )
    reason = "LISTEN notifications did not arrive within 0.5s (a transaction pooler?)"
    try:
        async with processing(settings) as client:
            body = await health_when(client, lambda body: body["wakeUps"]["reason"] == reason)
            assert body["wakeUps"]["mode"] == "polling" and body["wakeUps"]["verifiedAt"] is None
            assert body["status"] == "degraded"
            assert body["statusReasons"] == [f"wake-ups by polling only: {reason}"]
            assert body["database"]["reachable"] is True  # everything else works
            metrics = (await client.get("/metrics")).text
            assert gauge(metrics, "eventproc_listen_verified") == "0.0"
    finally:
        await proxy.cut()


async def test_listen_false_polls_and_says_so(pg_url: str) -> None:
    settings = Settings(database_url=pg_url, poll_interval_ms=60_000, listen=False)
    async with processing(settings) as client:
        body = await health_when(client, mode_is("polling"))
        assert body["wakeUps"]["reason"] == "LISTEN=false" and body["status"] == "healthy"
        metrics = (await client.get("/metrics")).text
        assert gauge(metrics, "eventproc_listen_verified") == "0.0"


async def test_sqlite_wakes_by_data_version(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, poll_interval_ms=60_000)
    async with processing(settings) as client:
        body = await health_when(client, mode_is("data_version"))
        assert "PRAGMA data_version" in body["wakeUps"]["reason"]
        assert body["status"] == "healthy"


async def test_without_polling_nothing_wakes_and_health_says_so(store_url: str) -> None:
    settings = Settings(database_url=store_url, enable_polling=False)
    async with processing(settings) as client:
        body = await health_when(client, mode_is("off"))
        assert body["wakeUps"]["reason"] == "ENABLE_POLLING=false: only manual triggers claim"
        assert body["status"] == "healthy"
