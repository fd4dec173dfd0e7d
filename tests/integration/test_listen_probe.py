"""LISTEN proves itself with self-NOTIFY probes sent through the pool (real PostgreSQL).

The swallowing path is a real TCP proxy on loopback that forwards everything
but the server's NotificationResponse messages, as a transaction pooler
loses them: LISTEN succeeds, nothing arrives.
"""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url

from eventproc import Event, HandlerContext, NewEvent, Registry
from eventproc.engine import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.store import Store, open_store
from eventproc.store.postgres import listen as listen_module
from support.proxy import Proxy
from support.waiting import eventually


@pytest.fixture
def quick_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes every 0.3 s, given up after 0.5 s (60 s and 5 s in production)."""
    monkeypatch.setattr(listen_module, "PROBE_INTERVAL_SECONDS", 0.3)
    monkeypatch.setattr(listen_module, "PROBE_TIMEOUT_SECONDS", 0.5)


@contextlib.asynccontextmanager
async def swallowing(pg_url: str) -> AsyncIterator[tuple[Proxy, str]]:
    """A proxy to ``pg_url`` that drops NotificationResponse messages, and its URL."""
    target = make_url(pg_url)
    proxy = Proxy(target.host or "127.0.0.1", target.port or 5432, drop_notifications=True)
    await proxy.start()
    url = target.set(port=proxy.port).update_query_dict({"sslmode": "disable"})
    try:
        yield proxy, url.render_as_string(hide_password=False)
    finally:
        await proxy.cut()


@contextlib.asynccontextmanager
async def listening(store: Store) -> AsyncIterator[list[int]]:
    """``store.listen`` running; the list grows by one at each wake-up."""
    wakes: list[int] = []
    task = asyncio.create_task(store.listen(lambda: wakes.append(len(wakes))))
    try:
        yield wakes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def actions(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "action", None) == action]


async def test_a_direct_connection_is_verified_by_its_probe(pg_store: Store, pg_url: str) -> None:
    store = open_store(pg_url, worker_name="probed")
    try:
        assert store.wake_ups.verified_at is None
        async with listening(store):

            async def verified() -> bool:
                return store.wake_ups.mode == "listen"

            await eventually(verified)
            wake_ups = store.wake_ups
            assert wake_ups.verified_at is not None and wake_ups.reason is None
            assert not wake_ups.failing and not wake_ups.missing
    finally:
        await store.close()


async def test_probes_wake_no_one_and_events_still_do(
    pg_store: Store, pg_url: str, quick_probes: None
) -> None:
    quiet, probing = (open_store(pg_url, worker_name=name) for name in ("quiet", "probing"))
    try:
        async with listening(quiet) as quiet_wakes, listening(probing):

            async def both_verified() -> bool:
                return quiet.wake_ups.mode == probing.wake_ups.mode == "listen"

            await eventually(both_verified)
            before = len(quiet_wakes)  # the wake-up each listener gives at connecting
            first_check = quiet.wake_ups.verified_at
            await asyncio.sleep(1.5)  # about 5 probes each, all delivered to both listeners
            assert quiet.wake_ups.verified_at != first_check  # its own probes kept arriving
            assert len(quiet_wakes) == before  # nobody's probe woke it
            await pg_store.event_insert_many([NewEvent("t.any", {})])  # the trigger's NOTIFY

            async def woken() -> bool:
                return len(quiet_wakes) > before

            await eventually(woken)
    finally:
        await quiet.close()
        await probing.close()


async def test_swallowed_notifications_turn_to_polling_with_one_warning_and_back(
    pg_store: Store, pg_url: str, quick_probes: None, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()
    handled: list[int] = []

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        handled.append(event.payload["n"])

    async with swallowing(pg_url) as (proxy, url):
        store = open_store(url, worker_name="behind-a-pooler")
        processor = Processor(store, registry, ProcessorConfig(poll_interval_ms=300))
        caplog.set_level(logging.INFO, logger="eventproc.store.postgres")
        task = asyncio.create_task(processor.run())
        try:

            async def polling_after_several_probes() -> bool:
                return store.wake_ups.missing and proxy.dropped >= 4

            await eventually(polling_after_several_probes)
            wake_ups = store.wake_ups
            assert wake_ups.mode == "polling" and wake_ups.failing
            assert wake_ups.reason == (
                "LISTEN notifications did not arrive within 0.5s (a transaction pooler?)"
            )
            [warning] = actions(caplog, "listen_unverified")  # one, however many probes
            assert warning.levelno == logging.WARNING and "LISTEN=false" in warning.getMessage()

            await pg_store.event_insert_many([NewEvent("t.ok", {"n": n}) for n in range(20)])

            async def all_handled() -> bool:  # by polling: their NOTIFY was dropped too
                return len(handled) == 20

            await eventually(all_handled)
            assert sorted(handled) == list(range(20))

            proxy.drop_notifications = False  # the path carries notifications again

            async def verified() -> bool:
                return store.wake_ups.mode == "listen"

            await eventually(verified)
            assert not store.wake_ups.failing and not store.wake_ups.missing
            await asyncio.sleep(1.0)  # more probes arrive: no more log lines
            assert len(actions(caplog, "listen_verified")) == 1
            assert len(actions(caplog, "listen_unverified")) == 1
        finally:
            processor.stop()
            await asyncio.wait_for(task, 30)
            await store.close()


async def test_a_listener_that_cannot_connect_reports_polling(pg_url: str) -> None:
    async with swallowing(pg_url) as (proxy, url):
        await proxy.cut()  # nothing answers on that address any more
        store = open_store(url, worker_name="unreachable")
        try:
            async with listening(store):

                async def lost() -> bool:
                    return store.wake_ups.failing

                await eventually(lost)
                assert store.wake_ups.mode == "polling"
                assert (store.wake_ups.reason or "").startswith("LISTEN connection lost")
                assert not store.wake_ups.missing  # not a probe's verdict: nothing was sent
        finally:
            await store.close()


async def test_listen_false_and_sqlite_say_how_they_wake(
    pg_store: Store, pg_url: str, sqlite_store: Store
) -> None:
    not_listening = open_store(pg_url, worker_name="no-listen")
    try:
        processor = Processor(not_listening, Registry(), ProcessorConfig(listen=False))
        await processor.run(until_idle=True)
        assert not_listening.wake_ups.mode == "polling"
        assert not_listening.wake_ups.reason == "LISTEN=false"
        assert not not_listening.wake_ups.failing
    finally:
        await not_listening.close()
    processor = Processor(sqlite_store, Registry(), ProcessorConfig(polling_enabled=False))
    await processor.run(until_idle=True)
    assert sqlite_store.wake_ups.mode == "off"
    async with listening(sqlite_store):

        async def watching() -> bool:
            return sqlite_store.wake_ups.mode == "data_version"

        await eventually(watching)
        assert "data_version" in (sqlite_store.wake_ups.reason or "")


async def test_through_a_transaction_pgbouncer_listen_is_found_not_to_work(
    pg_store: Store, pg_url: str, quick_probes: None, caplog: pytest.LogCaptureFixture
) -> None:
    """LISTEN=true forced behind a real PgBouncer in transaction mode: LISTEN succeeds,
    its server connection goes back to the pool, and nothing arrives."""
    from eventproc.config import Settings
    from eventproc.runtime import Runtime
    from support.pgbouncer import running

    registry = Registry()
    handled: list[int] = []

    @registry.handler("t.ok")
    async def ok(event: Event, ctx: HandlerContext) -> None:
        handled.append(event.payload["n"])

    caplog.set_level(logging.INFO, logger="eventproc.store.postgres")
    with running(pg_url) as bouncer:
        settings = Settings(
            database_url=bouncer.url(pg_url, pgbouncer="true"), listen=True, poll_interval_ms=300
        )
        runtime = Runtime(settings, registry=registry)
        await runtime.prepare(attempts=1)
        task = asyncio.create_task(runtime.processor.run())
        try:

            async def found_missing() -> bool:
                return runtime.store.wake_ups.missing

            await eventually(found_missing)
            await asyncio.sleep(1.0)  # more probes go unanswered: still one warning
            assert runtime.store.wake_ups.mode == "polling"
            assert len(actions(caplog, "listen_unverified")) == 1
            status, reasons = runtime.health_status(await runtime.store_stats())
            assert status == "degraded" and reasons[0].startswith("wake-ups by polling only")
            await pg_store.event_insert_many([NewEvent("t.ok", {"n": n}) for n in range(10)])

            async def all_handled() -> bool:
                return len(handled) == 10

            await eventually(all_handled)
        finally:
            runtime.processor.stop()
            await asyncio.wait_for(task, 30)
            await runtime.store.close()
