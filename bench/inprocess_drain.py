"""In-process drain on PostgreSQL, each named query timed: for bisecting a regression.

    PYTHONPATH=/tmp/snap/src .venv/bin/python bench/inprocess_drain.py SUBSCRIPTIONS [N] [agg]

With ``LOG=info`` in the environment, logging is configured as the CLI
does (JSON lines to a file under /tmp, one per handled event), as a worker
runs in production and in the peer benchmark.

Publishes N events (default 20,000; with ``agg`` over 1,000 aggregates and
ORDERING=aggregate) into a fresh database ``inprocess_drain`` on
127.0.0.1:5432, drains them with a Processor in this process, and prints
events/s, deliveries/s and, per named query, calls and mean time
(``ASYNC_COMMIT=false`` in the environment: every commit waits). Run it
against ``git archive <commit> src`` snapshots one after another to compare.
"""

import asyncio
import collections
import gc
import os
import sys
import time
import uuid
from typing import Any

import asyncpg

from eventproc import Event, HandlerContext, NewEvent, Registry
from eventproc.engine import Processor
from eventproc.processor_config import ProcessorConfig
from eventproc.store import open_store

SERVER = "postgresql://postgres@127.0.0.1:5432"


async def main(subscriptions: int, n: int, ordered: bool) -> None:
    if os.environ.get("LOG"):
        _log_to_file(os.environ["LOG"])
    admin = await asyncpg.connect(f"{SERVER}/postgres")
    await admin.execute("DROP DATABASE IF EXISTS inprocess_drain")
    await admin.execute("CREATE DATABASE inprocess_drain")
    await admin.close()
    store = open_store(
        f"{SERVER}/inprocess_drain",
        worker_name="bench",
        async_commit=os.environ.get("ASYNC_COMMIT", "true") != "false",
    )
    await store.migrate()
    aggregates = [uuid.uuid4() for _ in range(1000)]
    for start in range(0, n, 1000):
        await store.event_insert_many(
            [
                NewEvent("b", {"i": i}, aggregate_id=aggregates[i % 1000] if ordered else None)
                for i in range(start, min(n, start + 1000))
            ]
        )
    registry, calls = Registry(), [0]
    for k in range(subscriptions):

        async def handle(event: Event, ctx: HandlerContext) -> None:
            calls[0] += 1

        registry.register("b", handle, **({"name": f"s{k}"} if subscriptions > 1 else {}))
    counts: collections.Counter[str] = collections.Counter()
    spent: collections.Counter[str] = collections.Counter()
    fetch = store.driver.fetch

    async def timed(name: str, args: Any, durable: bool = False) -> Any:
        started = time.perf_counter()
        try:
            return await fetch(name, args, durable=durable)
        finally:
            counts[name] += 1
            spent[name] += time.perf_counter() - started

    store.driver.fetch = timed  # type: ignore[method-assign]
    processor = Processor(store, registry, ProcessorConfig(ordered=ordered, poll_interval_ms=1000))
    gc_before = sum(stat["collections"] for stat in gc.get_stats())
    started, cpu, own = time.perf_counter(), time.process_time(), time.thread_time()
    await processor.run(until_idle=True)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    own = time.thread_time() - own
    collections_run = sum(stat["collections"] for stat in gc.get_stats()) - gc_before
    print(
        f"subscriptions={subscriptions} ordered={ordered} events/s={n / elapsed:.0f} "
        f"deliveries/s={calls[0] / elapsed:.0f} python_cpu_us/event={cpu * 1e6 / n:.0f} "
        f"loop_thread_us/event={own * 1e6 / n:.0f} gc_collections={collections_run}"
    )
    for name, count in counts.most_common():
        print(f"  {name}: {count} calls, {spent[name] * 1000 / count:.2f} ms mean")
    await store.close()


def _log_to_file(level: str) -> None:
    """The CLI's logging, its lines to /tmp/inprocess_drain.log instead of stderr."""
    from eventproc import logs

    log = open("/tmp/inprocess_drain.log", "w")  # noqa: SIM115 (open for the whole run)
    sys.stderr = log
    logs.configure(level, "json", production=True)


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]),
            int(sys.argv[2]) if len(sys.argv) > 2 else 20_000,
            len(sys.argv) > 3 and sys.argv[3] == "agg",
        )
    )
