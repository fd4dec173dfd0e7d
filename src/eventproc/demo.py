"""`eventproc demo`: the whole system on sample Yachtparty traffic, with nothing to install.

Loads the pack's sample world, publishes a stream of all 11 event types
(with a share of bad ones, so retries, dead letters and skips show up) and
reports what became of every event, from the database itself.
"""

import asyncio
import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from eventproc.config import Settings
from eventproc.event import NewEvent
from eventproc.runtime import Runtime
from eventproc.store import EventFilter

DEMO_DATABASE = "eventproc-demo.db"
DRAIN_TIMEOUT_SECONDS = 180.0
PUBLISH_TICK_SECONDS = 0.1
QUERY_CHUNK = 500
# Quick retries so that failures reach the dead-letter table within seconds.
DEMO_OVERRIDES = {
    "max_retries": 3,
    "retry_base_ms": 100,
    "retry_max_ms": 1000,
    "poll_interval_ms": 500,
}
# The demo prints its own summary; per-event log lines would bury it.
DEMO_LOG_LEVEL = "warning"


def demo_database_url(settings: Settings) -> str:
    """DATABASE_URL when set; else a fresh SQLite file in the working directory."""
    if settings.database_url:
        return settings.database_url
    path = Path(DEMO_DATABASE).resolve()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return f"sqlite:///{path}"


@dataclass
class Tally:
    """What became of the published events, read back from the database."""

    published: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    mismatched: list[uuid.UUID] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return sum(counts.get("pending", 0) for counts in self.outcomes.values())


async def run_demo(
    settings: Settings, *, events: int | None, rate: float | None, once: bool, console: Console
) -> int:
    from yachtparty.sample import load_sample_data

    runtime = Runtime(settings)
    await runtime.prepare()
    async with runtime.store.engine.begin() as connection:
        world = await load_sample_data(connection, users=40)
    console.print(
        f"Demo database: {runtime.store.url_for_display} ({runtime.backend}), "
        f"{len(world.users)} users loaded, {len(runtime.registry)} handlers."
    )
    if once:
        return await _run_once(runtime, world, events or 500, rate, console)
    return await _run_live(runtime, world, events, rate or 50.0, console)


async def _run_once(
    runtime: Runtime, world: object, count: int, rate: float | None, console: Console
) -> int:
    from yachtparty.sample import traffic

    published = traffic(world, count)  # type: ignore[arg-type]
    processing = asyncio.create_task(runtime.processor.run())
    try:
        await _publish(runtime, published, rate)
        console.print(f"Published {len(published)} events; waiting for them to finish...")
        tally = await _drain(runtime, published)
    finally:
        runtime.processor.stop()
        await processing
        await runtime.store.close()
    console.print(_summary_table(tally))
    stats = runtime.stats
    console.print(
        f"Processor: {stats.total_processed} attempts handled: {stats.success_count} succeeded "
        f"(incl. {stats.skipped_count} skipped: unknown types and the pack's follow-up events, "
        f"which have no handler by design), {stats.error_count} failed and were retried, "
        f"{stats.dead_letter_count} dead-lettered."
    )
    if tally.pending or tally.mismatched:
        console.print(
            f"[red]{tally.pending} still pending, {len(tally.mismatched)} ended otherwise "
            "than designed[/red]"
        )
        return 1
    console.print("[green]Every event ended as designed.[/green]")
    return 0


async def _run_live(
    runtime: Runtime, world: object, limit: int | None, rate: float, console: Console
) -> int:
    settings = runtime.settings
    console.print(
        f"Health: http://{settings.host}:{settings.port}/health   "
        f"Metrics: http://{settings.host}:{settings.port}/metrics   "
        "Ctrl+C stops the demo."
    )
    serving = asyncio.create_task(runtime.serve(http=True))
    sent = Counter[str]()
    publisher = asyncio.create_task(_stream(runtime, world, limit, rate, sent))
    with Live(_live_table(runtime, 0, None), console=console, refresh_per_second=2) as live:
        while not serving.done():
            await asyncio.wait({serving}, timeout=1.0)
            stats = await runtime.store_stats() if not serving.done() else None
            live.update(_live_table(runtime, sent["events"], stats))
    publisher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await publisher
    serving.result()
    return 0


async def _stream(
    runtime: Runtime, world: object, limit: int | None, rate: float, sent: Counter[str]
) -> None:
    """Publish sample traffic at ``rate`` per second, ``limit`` events or forever."""
    from yachtparty.sample import traffic

    seed = 11
    while limit is None or sent["events"] < limit:
        size = 500 if limit is None else min(500, limit - sent["events"])
        chunk = traffic(world, size, seed=seed)  # type: ignore[arg-type]
        seed += 1
        await _publish(runtime, chunk, rate)
        sent["events"] += len(chunk)


async def _publish(runtime: Runtime, events: Sequence[NewEvent], rate: float | None) -> None:
    """All at once, or ``rate`` events per second in small ticks."""
    if not rate:
        for start in range(0, len(events), QUERY_CHUNK):
            await runtime.store.event_insert_many(events[start : start + QUERY_CHUNK])
        return
    per_tick = max(int(rate * PUBLISH_TICK_SECONDS), 1)
    started = time.monotonic()
    for index, start in enumerate(range(0, len(events), per_tick)):
        await runtime.store.event_insert_many(events[start : start + per_tick])
        delay = started + (index + 1) * per_tick / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def _drain(runtime: Runtime, published: Sequence[NewEvent]) -> Tally:
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while True:
        tally = await _tally(runtime, published)
        if not tally.pending or time.monotonic() > deadline:
            return tally
        await asyncio.sleep(0.25)


async def _tally(runtime: Runtime, published: Sequence[NewEvent]) -> Tally:
    from yachtparty.sample import OK, expected_outcome

    tally = Tally()
    for start in range(0, len(published), QUERY_CHUNK):
        chunk = published[start : start + QUERY_CHUNK]
        rows = {
            row.id: row
            for row in await runtime.store.event_list(
                EventFilter(ids=[event.id for event in chunk], limit=len(chunk))
            )
        }
        for event in chunk:
            kind = str((event.metadata or {}).get("sample", OK))
            tally.published[kind] += 1
            row = rows.get(event.id)
            outcome = row.outcome if row is not None and row.processed else "pending"
            tally.outcomes.setdefault(kind, Counter())[outcome or "pending"] += 1
            if outcome != "pending" and outcome != expected_outcome(event).value:
                tally.mismatched.append(event.id)
    return tally


def _summary_table(tally: Tally) -> Table:
    from yachtparty.sample import EXPECTED_OUTCOMES

    table = Table(title="eventproc demo: what became of every event (read from the database)")
    for column in ("kind", "published", "succeeded", "skipped", "dead-lettered", "pending"):
        table.add_column(column, justify="left" if column == "kind" else "right")
    table.add_column("designed outcome")
    totals: Counter[str] = Counter()
    for kind in sorted(tally.published):
        counts = tally.outcomes.get(kind, Counter())
        totals.update(counts)
        totals["published"] += tally.published[kind]
        table.add_row(
            kind,
            str(tally.published[kind]),
            str(counts.get("succeeded", 0)),
            str(counts.get("skipped", 0)),
            str(counts.get("dead_lettered", 0)),
            str(counts.get("pending", 0)),
            EXPECTED_OUTCOMES[kind].value,
        )
    table.add_row(
        "total",
        str(totals["published"]),
        str(totals["succeeded"]),
        str(totals["skipped"]),
        str(totals["dead_lettered"]),
        str(totals["pending"]),
        "",
        style="bold",
    )
    return table


def _live_table(runtime: Runtime, published: int, stats: object) -> Table:
    table = Table(title="eventproc demo (Ctrl+C to stop)")
    for column in ("published", "handled", "succeeded", "failed (retried)", "dead-lettered"):
        table.add_column(column, justify="right")
    table.add_column("backlog", justify="right")
    s = runtime.stats
    backlog = getattr(stats, "backlog", None)
    table.add_row(
        str(published),
        str(s.total_processed),
        str(s.success_count),
        str(s.error_count),
        str(s.dead_letter_count),
        "?" if backlog is None else str(backlog),
    )
    return table
