"""/metrics while the database goes away: the last figures read, marked stale, never a made-up 0.

The database is taken away by cutting a loopback proxy in front of it
(tests/support/proxy.py); scrapes go to a real server on loopback.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from sqlalchemy.engine import make_url

from eventproc import NewEvent
from eventproc.config import Settings
from eventproc.http import create_app
from eventproc.runtime import Runtime
from eventproc.store import Store
from support.proxy import Proxy
from support.registries import make_registry
from support.served import serving
from support.waiting import eventually


def gauges(text: str) -> dict[str, float]:
    """Every unlabelled sample of a scrape, by name."""
    found = {}
    for line in text.splitlines():
        if line.startswith("eventproc_") and "{" not in line:
            name, value = line.split(" ", 1)
            found[name] = float(value)
    return found


@contextlib.asynccontextmanager
async def scraping(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    try:
        async with (
            serving(create_app(runtime)) as url,
            httpx.AsyncClient(base_url=url, timeout=10) as client,
        ):
            yield client
    finally:
        await runtime.store.close()


async def test_gauges_keep_the_last_reading_and_say_it_is_stale(
    pg_store: Store, pg_url: str
) -> None:
    target = make_url(pg_url)
    proxy = Proxy(target.host or "127.0.0.1", target.port or 5432)
    await proxy.start()
    proxied = target.set(port=proxy.port).render_as_string(hide_password=False)
    # A reading per scrape (no sharing): this test follows the gauges scrape by scrape.
    runtime = Runtime(
        Settings(database_url=proxied, stats_max_age_seconds=0), registry=make_registry()
    )
    await runtime.prepare(attempts=1)
    await pg_store.event_insert_many([NewEvent("t.ok", {}) for _ in range(3)])
    try:
        async with scraping(runtime) as client:
            read = gauges((await client.get("/metrics")).text)
            assert read["eventproc_backlog"] == 3 and read["eventproc_store_up"] == 1
            assert read["eventproc_dead_letters"] == 0
            assert 0 <= read["eventproc_store_stats_age_seconds"] < 1

            await proxy.cut()  # the database goes away, with events still pending
            await pg_store.event_insert_many([NewEvent("t.ok", {}) for _ in range(2)])
            stale = gauges((await client.get("/metrics")).text)
            assert stale["eventproc_store_up"] == 0
            assert stale["eventproc_backlog"] == 3  # the last figure read, not 0
            assert (
                stale["eventproc_oldest_pending_seconds"]
                == read["eventproc_oldest_pending_seconds"]
            )
            await asyncio.sleep(1.0)
            later = gauges((await client.get("/metrics")).text)
            assert later["eventproc_store_up"] == 0 and later["eventproc_backlog"] == 3
            assert later["eventproc_store_stats_age_seconds"] >= 1.0
            health = (await client.get("/health")).json()
            assert health["database"]["reachable"] is False and health["backlog"] is None

            await proxy.start()  # back on the same address

            async def read_again() -> bool:
                return gauges((await client.get("/metrics")).text)["eventproc_store_up"] == 1

            await eventually(read_again, within=20)
            fresh = gauges((await client.get("/metrics")).text)
            assert fresh["eventproc_backlog"] == 5
            assert fresh["eventproc_store_stats_age_seconds"] < 1
    finally:
        await proxy.cut()


async def test_gauges_never_read_are_absent_not_zero() -> None:
    settings = Settings(database_url="postgresql://postgres@127.0.0.1:1/nothing")
    runtime = Runtime(settings, registry=make_registry())
    async with scraping(runtime) as client:
        text = (await client.get("/metrics")).text
    read = gauges(text)
    assert read["eventproc_store_up"] == 0
    for name in (
        "eventproc_backlog",
        "eventproc_oldest_pending_seconds",
        "eventproc_dead_letters",
        "eventproc_blocked_aggregates",
        "eventproc_blocked_oldest_seconds",
        "eventproc_store_stats_age_seconds",
    ):
        assert name not in read, name
    assert "eventproc_in_flight 0.0" in text  # the process's own figures are still there
