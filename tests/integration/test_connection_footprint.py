"""The connection footprint: DATABASE_POOL_SIZE caps what a process opens, under load.

Transactional handlers beyond the cap wait for a connection instead of
failing, and a database that refuses connections ("too many") is
backpressure, never a handler failure.
"""

import asyncio
import sys
import uuid
from pathlib import Path

import asyncpg

from eventproc import Event, HandlerContext, NewEvent, Registry
from eventproc.engine import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.store import EventFilter, Store, open_store
from support.processes import worker_env
from support.waiting import eventually


def _named(url: str, name: str) -> str:
    return url + ("&" if "?" in url else "?") + f"application_name={name}"


class Sessions:
    """Samples how many connections carry one application_name, keeping the most seen."""

    def __init__(self, admin: asyncpg.Connection, name: str) -> None:
        self.admin, self.name, self.most = admin, name, 0

    async def sample(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            now = await self.admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", self.name
            )
            self.most = max(self.most, now)
            await asyncio.sleep(0.02)


async def test_transactional_handlers_beyond_the_cap_wait_and_none_fails(
    pg_store: Store, pg_url: str
) -> None:
    name = f"fp-{uuid.uuid4().hex[:8]}"
    store = open_store(_named(pg_url, name), worker_name="fp", pool_size=4)
    registry = Registry()

    @registry.handler("t.hold", transactional=True)
    async def hold(event: Event, ctx: HandlerContext) -> None:
        await asyncio.sleep(0.1)

    await store.event_insert_many([NewEvent("t.hold", {"n": n}) for n in range(30)])
    processor = Processor(
        store, registry, ProcessorConfig(concurrency=10, poll_interval_ms=100, ordered=False)
    )
    admin = await asyncpg.connect(pg_url)
    sessions, stop = Sessions(admin, name), asyncio.Event()
    sampler = asyncio.create_task(sessions.sample(stop))
    try:
        await asyncio.wait_for(processor.run(until_idle=True), 60)
    finally:
        stop.set()
        await sampler
        await admin.close()
        await store.close()
    events = await pg_store.event_list(EventFilter(limit=100))
    assert [e.outcome for e in events] == ["succeeded"] * 30
    assert all(e.attempts == 1 and "last_error" not in e.metadata for e in events)
    assert 2 <= sessions.most <= 4  # 2 pooled + 1 hot + 1 LISTEN, never more


async def test_two_worker_processes_stay_within_twice_the_cap(
    pg_store: Store, pg_url: str, tmp_path: Path
) -> None:
    name = f"fp-{uuid.uuid4().hex[:8]}"
    await pg_store.event_insert_many(
        [NewEvent("test.tx_hold", {"seconds": 0.05}) for _ in range(200)]
        + [NewEvent("test.ok", {}) for _ in range(200)]
    )
    env = worker_env(_named(pg_url, name), tmp_path, DATABASE_POOL_SIZE="5", CONCURRENCY="20")
    workers = [await _worker(env) for _ in range(2)]
    admin = await asyncpg.connect(pg_url)
    sessions, stop = Sessions(admin, name), asyncio.Event()
    sampler = asyncio.create_task(sessions.sample(stop))

    async def all_done() -> bool:
        return (await pg_store.stats_snapshot()).backlog == 0

    try:
        await eventually(all_done, within=90)
    finally:
        stop.set()
        await sampler
        await admin.close()
        for worker in workers:
            worker.terminate()
        await asyncio.gather(*(worker.wait() for worker in workers))
    assert 2 < sessions.most <= 2 * 5
    events = await pg_store.event_list(EventFilter(limit=1000))
    assert len(events) == 400 and {e.outcome for e in events} == {"succeeded"}


async def _worker(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventproc",
        "worker",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


async def test_too_many_connections_is_backpressure_not_a_failure(
    pg_store: Store, pg_url: str
) -> None:
    """A role limited to 3 connections: the 4th is refused (53300) while handlers hold them."""
    role = f"fp_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_url)
    await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 3 SUPERUSER")
    limited = pg_url.replace("postgres@", f"{role}@", 1)
    store = open_store(limited, worker_name="fp", pool_size=8)
    registry = Registry()

    @registry.handler("t.hold", transactional=True)
    async def hold(event: Event, ctx: HandlerContext) -> None:
        await asyncio.sleep(0.2)

    await pg_store.event_insert_many([NewEvent("t.hold", {"n": n}) for n in range(12)])
    processor = Processor(
        store,
        registry,
        ProcessorConfig(concurrency=8, poll_interval_ms=100, ordered=False, listen=False),
    )
    try:
        await asyncio.wait_for(processor.run(until_idle=True), 90)
    finally:
        await store.close()
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
    events = await pg_store.event_list(EventFilter(limit=100))
    assert [e.outcome for e in events] == ["succeeded"] * 12
    # Refused connections rescheduled events without spending their attempts.
    assert all("last_error" not in e.metadata for e in events)
