"""eventproc as one more peer of the shared side-by-side benchmark
(``shared/bench-peers/peers.py --plugin bench/eventproc_peer.py``).

Loaded by peers.py inside ``bench/.venv-peers`` (see setup_peers_venv.sh:
eventproc's source is on that venv's path). Three peers:

- ``eventproc``: default settings, ORDERING=none, events without aggregate;
- ``eventproc_sync``: as ``eventproc``, with ASYNC_COMMIT=false;
- ``eventproc_agg``: default settings (ORDERING=aggregate), drain events
  spread round-robin over 1,000 aggregate ids (latency events have none);
- ``eventproc_fanout`` / ``eventproc_fanout_agg``: as ``eventproc`` /
  ``eventproc_agg`` with 3 subscriptions taking every event, so each event
  is 3 deliveries (their drain jobs/s are events/s: deliveries/s is 3x).

The worker is what ``eventproc worker`` runs (``Runtime``: store, registry,
processor, logging configured exactly as the CLI does, LOG_LEVEL=info), in the
peers.py worker process, with handlers that call the harness's recorder. The
producer side publishes through eventproc's own API
(``store.event_insert_many``; 1,000 per call for the bulk enqueue, one event
per call for the latency series).

Use bench/peers_bench.py rather than running peers.py by hand: it keeps
peers.py's working files under bench/results/ (shared/ is read-only).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import uuid
from typing import Any

import peers  # the shared benchmark module (peers.py), already loaded by the harness


def _ver(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "-"


class EventprocPeer(peers.Peer):
    name = "eventproc"
    default_loop = "asyncio"  # eventproc's CLI runs asyncio.run()
    supports = ("drain", "latency", "retry", "profile")
    tables = ("events", "event_dead_letters", "event_deliveries")
    ordering = "none"
    aggregates = 0
    subscribers = 1  # subscriptions taking bench.noop (the fan-out peers: 3)
    # MAX_RETRIES=5 (default): 5 failed runs, then the dead letter.
    retry_max_attempts = 4

    def __init__(self, pg: Any, opts: Any) -> None:
        super().__init__(pg, opts)
        self.dbname = f"bench_{self.name}_peer"

    def _url(self, port: int | None = None) -> str:
        # peers.py's URL as it gives it to every peer (with ?sslmode=disable).
        return str(self.pg.url(self.dbname, port))

    def versions(self) -> dict[str, str]:
        import eventproc

        return {
            "eventproc": eventproc.__version__,
            **{d: _ver(d) for d in ("sqlalchemy", "asyncpg")},
        }

    def variants(self, concurrencies: list[int]) -> list[dict[str, Any]]:
        # eventproc's defaults whatever -c says: BATCH_SIZE=20, CONCURRENCY=50.
        return [{"label": f"defaults,ORDERING={self.ordering}", "ordering": self.ordering}]

    # -- orchestrator side -------------------------------------------------------

    async def install(self) -> None:
        from eventproc.store import open_store

        store = open_store(self._url())
        try:
            await store.migrate()
        finally:
            await store.close()

    async def open_producer(self) -> None:
        from eventproc.store import open_store

        self._store = open_store(self._url())

    async def close_producer(self) -> None:
        await self._store.close()

    async def enqueue_bulk(self, n: int, chunk: int) -> None:
        from eventproc import NewEvent

        aggs = [uuid.uuid4() for _ in range(self.aggregates)]
        for start in range(0, n, chunk):
            batch = []
            for i in range(start, min(n, start + chunk)):
                agg = aggs[i % len(aggs)] if aggs else None
                batch.append(NewEvent("bench.noop", {"i": i}, aggregate_id=agg))
            await self._store.event_insert_many(batch)

    async def enqueue_one(self, args: dict[str, Any]) -> None:
        from eventproc import NewEvent

        await self._store.event_insert_many([NewEvent("bench.noop", args)])

    async def enqueue_retry_probes(self) -> dict[str, Any]:
        from eventproc import NewEvent

        out = {}
        for k in ("flaky", "always"):
            event = NewEvent("bench.retry", {"k": k})
            await self._store.event_insert_many([event])
            out[k] = event.id
        return out

    async def remaining(self, conn: Any) -> int:
        return int(await conn.fetchval("SELECT count(*) FROM events WHERE NOT processed"))

    async def retry_states(self, conn: Any, ids: dict[str, Any]) -> dict[str, dict[str, Any]]:
        out = {}
        for k, event_id in ids.items():
            row = await conn.fetchrow(
                "SELECT processed, outcome, attempts FROM events WHERE id = $1", event_id
            )
            outcome = row["outcome"] if row else None
            status = {"succeeded": "succeeded", "dead_lettered": "failed"}.get(outcome or "")
            out[k] = {
                "status": status or ("missing" if row is None else "pending"),
                "terminal": bool(row and row["processed"]),
                "db_attempts": row["attempts"] if row else None,
            }
        return out

    # -- worker side ---------------------------------------------------------------

    async def run_worker(
        self, variant: dict[str, Any], rec: Any, stop: asyncio.Event, port: int | None
    ) -> None:
        from eventproc import Event, HandlerContext, Registry, logs
        from eventproc.config import load_settings
        from eventproc.runtime import Runtime

        registry = Registry()

        @registry.handler("bench.noop")
        async def noop(event: Event, ctx: HandlerContext) -> None:
            rec.handle(event.payload, event.attempts)

        # The fan-out peers: the same event type taken by more subscriptions,
        # each a delivery of its own (their calls are counted too).
        for extra in range(1, self.subscribers):

            async def also(event: Event, ctx: HandlerContext) -> None:
                rec.handle(event.payload, event.attempts)

            registry.register("bench.noop", also, name=f"bench.noop.also{extra}")

        @registry.handler("bench.retry", description="fails as the harness says")
        async def retry_probe(event: Event, ctx: HandlerContext) -> None:
            rec.handle(event.payload, event.attempts)

        extra = {"async_commit": variant["async_commit"]} if "async_commit" in variant else {}
        settings = load_settings(
            database_url=self._url(port), ordering=variant["ordering"], **extra
        )
        # What `eventproc worker` does before it builds the Runtime.
        logs.configure(
            settings.log_level.value, settings.log_format.value, production=settings.is_production
        )
        runtime = Runtime(settings, registry=registry)
        await runtime.prepare(attempts=1)
        rec.ready()
        task = asyncio.create_task(runtime.processor.run())
        stopper = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                task.result()  # the processor died on its own: surface the error
                return
            runtime.shutdown()
            await asyncio.wait_for(task, timeout=30)
        finally:
            stopper.cancel()
            with contextlib.suppress(Exception):
                await runtime.store.close()


class EventprocAggregatePeer(EventprocPeer):
    name = "eventproc_agg"
    ordering = "aggregate"
    aggregates = 1000

    def variants(self, concurrencies: list[int]) -> list[dict[str, Any]]:
        return [
            {
                "label": f"defaults,ORDERING=aggregate,{self.aggregates} aggregates",
                "ordering": "aggregate",
            }
        ]


class EventprocSyncCommitPeer(EventprocPeer):
    """ORDERING=none with ASYNC_COMMIT=false: every commit waits for its WAL flush."""

    name = "eventproc_sync"

    def variants(self, concurrencies: list[int]) -> list[dict[str, Any]]:
        return [
            {
                "label": "defaults,ORDERING=none,ASYNC_COMMIT=false",
                "ordering": "none",
                "async_commit": False,
            }
        ]


class EventprocFanoutPeer(EventprocPeer):
    """ORDERING=none, 3 subscriptions per event: 3 deliveries each."""

    name = "eventproc_fanout"
    subscribers = 3

    def variants(self, concurrencies: list[int]) -> list[dict[str, Any]]:
        return [{"label": "defaults,ORDERING=none,3 subscriptions", "ordering": "none"}]


class EventprocFanoutAggregatePeer(EventprocAggregatePeer):
    """ORDERING=aggregate (the default) over 1,000 aggregates, 3 subscriptions per event."""

    name = "eventproc_fanout_agg"
    subscribers = 3

    def variants(self, concurrencies: list[int]) -> list[dict[str, Any]]:
        return [
            {
                "label": f"defaults,ORDERING=aggregate,{self.aggregates} aggregates,"
                "3 subscriptions",
                "ordering": "aggregate",
            }
        ]
