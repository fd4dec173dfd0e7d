"""eventproc behind a real PgBouncer (issue 13): what a Supabase pooler user meets.

The session's PgBouncer (tests/conftest.py) is in transaction mode with no
prepared-statement support, as Debian's 1.18 and Supavisor's transaction
mode: a client's named statement lives on whichever server connection it
was prepared on, and start-up settings other than a few are refused.
"""

import asyncio
import contextlib
import signal
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from eventproc import Event, HandlerContext, NewEvent, Registry
from eventproc.engine import Processor
from eventproc.errors import StoreError, StoreUnavailable
from eventproc.processor_config import ProcessorConfig
from eventproc.store import Store, open_store
from eventproc.store.postgres.url import Pooler
from support.databases import _dsn
from support.pgbouncer import PgBouncer
from support.processes import worker_env
from support.waiting import eventually

# What the issue saw in eventproc's logs through the pooler.
BROKEN = ("prepared statement", "unsupported startup parameter")


@pytest.fixture
async def pooled_store(pg_store: Store, pg_url: str, pgbouncer: PgBouncer) -> AsyncIterator[Store]:
    """The session's database (emptied by pg_store) through the transaction pooler."""
    store = open_store(pgbouncer.url(pg_url, pgbouncer="true"), worker_name="pooled")
    yield store
    await store.close()


def noop_registry() -> Registry:
    registry = Registry()

    @registry.handler("t.noop")
    async def noop(event: Event, ctx: HandlerContext) -> None:
        return None

    return registry


@pytest.mark.parametrize("mode", ["transaction", "session"])
async def test_pgbouncer_refuses_what_a_direct_connection_sends(
    mode: str, pg_url: str, pgbouncer: PgBouncer, session_pooler: PgBouncer
) -> None:
    """Why the pooler must be said: these PgBouncers are the ones the issue met."""
    pooler = pgbouncer if mode == "transaction" else session_pooler
    store = open_store(pooler.url(pg_url))
    try:
        with pytest.raises(
            StoreError, match=r"unsupported startup parameter.*set POOLER="
        ) as raised:
            await store.ping()
        # Not "busy or restarting", tried forever (the report): it says what to set.
        assert not isinstance(raised.value, StoreUnavailable)
    finally:
        await store.close()


class _RequestCounter:
    """A loopback proxy counting the client's Sync ('S') and Flush ('H') messages.

    asyncpg describes a statement it has not kept with Parse, Describe and
    Flush, then runs it with Bind, Execute and Sync: two network round
    trips, of which only the second ends with a ReadyForQuery, so the
    Flushes are what tell them apart. Needs sslmode=disable.
    """

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.syncs = 0
        self.flushes = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, count: bool) -> None:
            buffer, started = b"", not count
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                    if not count:
                        continue
                    buffer += data
                    if not started and len(buffer) >= 4:  # the start-up packet: length first
                        (length,) = struct.unpack("!i", buffer[:4])
                        if len(buffer) < length:
                            continue
                        buffer, started = buffer[length:], True
                    while started and len(buffer) >= 5:
                        (length,) = struct.unpack("!i", buffer[1:5])
                        if len(buffer) < 1 + length:
                            break
                        self.syncs += buffer[:1] == b"S"
                        self.flushes += buffer[:1] == b"H"
                        buffer = buffer[1 + length :]
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


async def test_hot_statements_are_not_described_again_through_a_transaction_pooler(
    pooled_store: Store, pg_url: str, pgbouncer: PgBouncer
) -> None:
    """Unnamed statements, kept described per connection: one round trip per execution."""
    events = 1000
    await pooled_store.event_insert_many([NewEvent("t.noop", {"n": n}) for n in range(events)])
    proxy = _RequestCounter(pgbouncer.port)
    await proxy.start()
    proxied = make_url(pgbouncer.url(pg_url, pgbouncer="true", sslmode="disable"))
    store = open_store(proxied.set(port=proxy.port).render_as_string(hide_password=False))
    try:
        await store.ping()
        syncs, flushes = proxy.syncs, proxy.flushes
        processor = Processor(
            store, noop_registry(), ProcessorConfig(batch_size=20, concurrency=50, ordered=True)
        )
        await processor.run(until_idle=True)
        syncs, flushes = proxy.syncs - syncs, proxy.flushes - flushes
    finally:
        await store.close()
        await proxy.stop()
    assert processor.stats.success_count == events
    # As direct (tests/integration/test_hot_path.py): about one claim and one
    # write-back per 20 events, each one round trip.
    assert 0 < syncs / events <= 0.15, syncs
    # Each hot connection describes each statement once, not at every execution.
    assert flushes < syncs / 3, (flushes, syncs)


async def test_no_connection_gets_session_settings(pooled_store: Store) -> None:
    """Nothing is sent (PgBouncer would refuse it), whatever open_store was asked."""
    async with pooled_store.begin() as conn:
        plan = (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one()
        name = (await conn.execute(text("SHOW application_name"))).scalar_one()
    async with pooled_store.driver._connection() as hot:
        hot_plan = await hot.fetchval("SHOW plan_cache_mode")
        hot_commit = await hot.fetchval("SHOW synchronous_commit")
    assert plan == hot_plan == "auto"  # unnamed statements are planned with their values
    assert hot_commit == "on"  # open_store's async_commit=True cannot hold: commits wait
    assert name == "eventproc"  # PgBouncer passes application_name


async def test_a_session_pooler_keeps_the_direct_settings(
    pg_store: Store, pg_url: str, session_pooler: PgBouncer
) -> None:
    store = open_store(session_pooler.url(pg_url), pooler=Pooler.SESSION, async_commit=True)
    try:
        await store.event_insert_many([NewEvent("t.noop", {"n": n}) for n in range(200)])
        processor = Processor(store, noop_registry(), ProcessorConfig(batch_size=20))
        await processor.run(until_idle=True)
        assert processor.stats.success_count == 200
        async with store.begin() as conn:
            plan = (await conn.execute(text("SHOW plan_cache_mode"))).scalar_one()
            commit = (await conn.execute(text("SHOW synchronous_commit"))).scalar_one()
        async with store.driver._connection() as hot:
            hot_plan = await hot.fetchval("SHOW plan_cache_mode")
            hot_commit = await hot.fetchval("SHOW synchronous_commit")
    finally:
        await store.close()
    assert (plan, commit) == ("force_custom_plan", "on")
    assert (hot_plan, hot_commit) == ("force_custom_plan", "off")


def _logs_clean(logs: list[Path]) -> None:
    for log in logs:
        text_ = log.read_text(errors="replace")
        for symptom in BROKEN:
            assert symptom not in text_, f"{log.name}: {text_[-2000:]}"


async def _stop(worker: asyncio.subprocess.Process, how: int = signal.SIGTERM) -> int:
    worker.send_signal(how)
    return await asyncio.wait_for(worker.wait(), 30)


def _append(log: Path) -> IO[bytes]:
    return open(log, "ab")  # the caller closes it


async def _worker(url: str, marks: Path, log: Path, **extra: str) -> asyncio.subprocess.Process:
    with _append(log) as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eventproc",
            "worker",
            env=worker_env(url, marks, **extra),
            stdout=out,
            stderr=out,
        )


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_two_workers_through_the_pooler_handle_every_event_once(
    pg_store: Store, pg_url: str, pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    # One says it in the URL (as Supabase's docs), the other with POOLER.
    urls = [pgbouncer.url(pg_url, pgbouncer="true"), pgbouncer.url(pg_url)]
    publisher = open_store(urls[0], worker_name="publisher")
    published = [NewEvent("test.ok", {"n": n}) for n in range(1500)]
    published += [NewEvent("test.tx_hold", {"n": n, "seconds": 0.01}) for n in range(300)]
    logs = [tmp_path / f"w{n}.log" for n in range(2)]
    settings = {"BATCH_SIZE": "20", "CONCURRENCY": "20"}
    workers = [
        await _worker(urls[0], marks, logs[0], WORKER_ID="w0", **settings),
        await _worker(urls[1], marks, logs[1], WORKER_ID="w1", POOLER="transaction", **settings),
    ]
    try:
        for start in range(0, len(published), 200):  # published while they work
            await publisher.event_insert_many(published[start : start + 200])
            await asyncio.sleep(0.05)

        async def drained() -> bool:
            return (await publisher.stats_snapshot()).backlog == 0

        await eventually(drained, within=60)
    finally:
        codes = [await _stop(worker) for worker in workers]
    try:
        assert codes == [0, 0]
        _logs_clean(logs)
        done = sorted(path.name for path in marks.iterdir() if path.name.endswith(".done"))
        assert done == sorted(f"{event.id}.1.done" for event in published)  # each once
        conn = await asyncpg.connect(_dsn(pg_url))
        try:
            rows = await conn.fetch(
                "SELECT outcome, attempts, metadata->>'processed_by' AS worker, count(*) AS n "
                "FROM events GROUP BY 1, 2, 3"
            )
        finally:
            await conn.close()
        assert {(r["outcome"], r["attempts"]) for r in rows} == {("succeeded", 1)}
        assert sum(r["n"] for r in rows) == len(published)
        assert {r["worker"] for r in rows} == {"w0", "w1"}
    finally:
        await publisher.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_migrate_publish_and_restarts_through_the_same_pooler(
    fresh_pg_url: str, pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    """Server connections outlive eventproc's processes: the next process must not trip on them."""
    url = pgbouncer.url(fresh_pg_url)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = worker_env(url, marks, POOLER="transaction")
    for _ in range(2):  # a fresh database, then an up-to-date one
        migrate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eventproc", "migrate", env=env
        )
        assert await asyncio.wait_for(migrate.wait(), 60) == 0
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventproc",
        "publish",
        "test.ok",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(cli.communicate(), 60)
    assert cli.returncode == 0, err.decode()
    first_id = out.decode().strip()

    publisher = open_store(url, worker_name="publisher", pooler=Pooler.TRANSACTION)
    logs: list[Path] = []
    published: list[NewEvent] = []
    try:
        # Killed (server connections left mid-use), stopped, then a last one.
        for round_, how in enumerate((signal.SIGKILL, signal.SIGTERM, signal.SIGTERM)):
            logs.append(tmp_path / f"round{round_}.log")
            worker = await _worker(url, marks, logs[-1], POOLER="transaction")
            batch = [NewEvent("test.ok", {"round": round_, "n": n}) for n in range(100)]
            await publisher.event_insert_many(batch)
            published += batch

            async def drained() -> bool:
                return (await publisher.stats_snapshot()).backlog == 0

            await eventually(drained, within=30)
            code = await _stop(worker, how)
            assert code == (-signal.SIGKILL if how == signal.SIGKILL else 0)
    finally:
        await publisher.close()
    _logs_clean(logs)
    done = {path.name.split(".")[0] for path in marks.iterdir() if path.name.endswith(".done")}
    assert done == {str(event.id) for event in published} | {first_id}
