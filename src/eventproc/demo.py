"""`eventproc demo`: the whole system on sample Yachtparty traffic, with nothing to install.

Loads the sample data of the registry ``HANDLERS`` names (the Yachtparty
pack's, ``yachtparty:registry``: its sample world and a stream of all 11
event types, with a share of bad ones so that retries, dead letters and
skips show up), publishes it and reports what became of every event, from
the database itself. The pack is reached only through that registry and its
sample hook (:meth:`eventproc.Registry.on_sample`), never imported here.

The demo writes sample users and processes every pending event it finds, so
it runs on a file of its own unless it is given ``--database-url``, and it
refuses a given database that holds events it did not publish (``--force``
overrides). It never reads DATABASE_URL.
"""

import asyncio
import contextlib
import dataclasses
import errno
import logging
import socket
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from eventproc.errors import ConfigError, EventprocError
from eventproc.event import NewEvent
from eventproc.runtime import Runtime
from eventproc.sample import Sample, SampleHook
from eventproc.store import EventFilter, StoreStats, open_store
from eventproc.store.census import PENDING, Publisher, outcomes, publishers

DEMO_DATABASE = "eventproc-demo.db"
# The registry whose sample data the demo runs on (a HANDLERS value, not an import).
DEMO_HANDLERS = "yachtparty:registry"
# Every event the demo publishes carries this; the ownership check reads it back.
DEMO_CREATED_BY = "eventproc-demo"
DRAIN_TIMEOUT_SECONDS = 180.0
PUBLISH_TICK_SECONDS = 0.1
STATUS_EVERY_SECONDS = 5.0  # a plain status line this often when stdout is not a terminal
QUERY_CHUNK = 500
# Quick retries so that failures reach the dead-letter table within seconds.
DEMO_OVERRIDES: dict[str, object] = {
    "handlers": DEMO_HANDLERS,
    "max_retries": 3,
    "retry_base_ms": 100,
    "retry_max_ms": 1000,
    "poll_interval_ms": 500,
}
# The demo prints its own summary; per-event log lines would bury it.
DEMO_LOG_LEVEL = "warning"


class DemoRefused(EventprocError):
    """The database named for the demo holds other publishers' events (exit 2)."""


def demo_database_url() -> str:
    """The demo's own SQLite file in the working directory."""
    return f"sqlite:///{Path(DEMO_DATABASE).resolve()}"


def reset_demo_database() -> None:
    """Delete the demo's own file (and its WAL), so that every run starts empty."""
    path = Path(DEMO_DATABASE).resolve()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def port_to_ask(host: str, wanted: int) -> int:
    """``wanted`` unless another process listens on it; then 0 (the runtime binds a free one).

    Probed the way the runtime binds (SO_REUSEADDR). Any other bind problem
    (an address not on this machine) is left for the runtime to report.
    """
    if wanted == 0:
        return 0
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, wanted))
        except OSError as exc:
            return 0 if exc.errno == errno.EADDRINUSE else wanted
    return wanted


def sample_hook(runtime: Runtime) -> SampleHook:
    """The sample hook of the runtime's registry; ConfigError (exit 2) when it has none."""
    hook = runtime.registry.sample
    if hook is None:
        raise ConfigError(
            f"HANDLERS={runtime.settings.handlers}: the registry has no sample data for the "
            "demo (a pack offers it with registry.on_sample)"
        )
    return hook


def foreign_publishers(found: Sequence[Publisher], follow_ups: str | None) -> list[Publisher]:
    """The publishers in ``found`` other than the demo.

    Follow-up events the handlers published count as the demo's when the
    demo's own events are older than all of them (a previous demo run on the
    same database).
    """
    ours = [item for item in found if item.created_by == DEMO_CREATED_BY]
    first_ours = ours[0].first_created_at if ours else None
    foreign = []
    for item in found:
        if item.created_by == DEMO_CREATED_BY:
            continue
        if (
            item.created_by == follow_ups
            and first_ours is not None
            and item.first_created_at is not None
            and item.first_created_at >= first_ours
        ):
            continue
        foreign.append(item)
    return foreign


async def check_database_is_ours(runtime: Runtime, *, force: bool, console: Console) -> None:
    """Refuse (DemoRefused) a database holding events the demo did not publish.

    Runs before anything is written, migrations included: a seed database
    is looked at, not adopted.
    """
    follow_ups = sample_hook(runtime).follow_ups_created_by
    foreign = foreign_publishers(await publishers(runtime.store), follow_ups)
    if not foreign:
        return
    count = sum(item.count for item in foreign)
    names = ", ".join(f"{item.created_by!r}: {item.count}" for item in foreign[:5])
    more = ", ..." if len(foreign) > 5 else ""
    problem = (
        f"{runtime.store.url_for_display} holds {count} event{'s' if count != 1 else ''} "
        f"the demo did not publish (created_by {names}{more})"
    )
    if not force:
        raise DemoRefused(
            f"{problem}; the demo would add sample users and process its pending events. "
            "Run it on its own file (no --database-url), or pass --force"
        )
    console.print(f"warning: {problem}; --force given: writing into it", markup=False)


@dataclass
class Tally:
    """What became of the published events, read back from the database."""

    published: Counter[str] = field(default_factory=Counter)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    mismatched: list[uuid.UUID] = field(default_factory=list)

    @property
    def pending(self) -> int:
        return sum(counts.get(PENDING, 0) for counts in self.outcomes.values())


async def run_demo(
    runtime: Runtime,
    *,
    events: int | None,
    rate: float | None,
    once: bool,
    check: bool,
    force: bool,
    console: Console,
) -> int:
    """Load the registry's sample data, then ``--once`` (drain and report) or live until Ctrl+C.

    ``check``: the database was named on the command line, so look before
    writing (the demo's own file is recreated instead).
    """
    try:
        hook = sample_hook(runtime)
        if check:
            await check_database_is_ours(runtime, force=force, console=console)
        await runtime.prepare()
        async with runtime.store.engine.begin() as connection:
            sample = await hook.load(connection)
        since = await runtime.store.ping()
    except BaseException:
        await runtime.store.close()
        raise
    console.print(
        f"Demo database: {runtime.store.url_for_display} ({runtime.backend}), "
        f"{sample.summary} loaded, {len(runtime.registry)} handlers.",
        markup=False,
    )
    if once:
        return await _run_once(runtime, sample, events or 500, rate, console)
    return await _run_live(runtime, sample, events, rate or 50.0, console, since)


async def _run_once(
    runtime: Runtime, sample: Sample, count: int, rate: float | None, console: Console
) -> int:
    published = _traffic(sample, count, seed=11)
    processing = asyncio.create_task(runtime.processor.run())
    try:
        await _publish(runtime, published, rate)
        console.print(f"Published {len(published)} events; waiting for them to finish...")
        tally = await _drain(runtime, sample, published)
    finally:
        runtime.processor.stop()
        await processing
        await runtime.store.close()
    console.print(_summary_table(tally, sample))
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
    runtime: Runtime,
    sample: Sample,
    limit: int | None,
    rate: float,
    console: Console,
    since: datetime,
) -> int:
    """Serve HTTP and process while publishing; on Ctrl+C print the database's totals."""
    serving = asyncio.create_task(runtime.serve(http=True))
    listening = asyncio.create_task(runtime.listening.wait())
    await asyncio.wait({serving, listening}, return_when=asyncio.FIRST_COMPLETED)
    if not runtime.listening.is_set():  # could not listen: the runtime says why
        listening.cancel()
        serving.result()
        return 1
    console.print(
        f"Health: {runtime.http_url}/health   Metrics: {runtime.http_url}/metrics   "
        "Ctrl+C stops the demo.",
        markup=False,
        highlight=False,
    )
    sent = Counter[str]()
    publisher = asyncio.create_task(_stream(runtime, sample, limit, rate, sent))
    try:
        if console.is_terminal:
            await _watch_live(runtime, serving, publisher, sent, console)
        else:
            await _watch_plain(runtime, serving, publisher, sent, console)
    finally:
        runtime.shutdown()
        await asyncio.wait({serving})
        crashed = _stop_publisher(publisher, serving)
        await _await_quietly(publisher)
    serving.result()
    if crashed is not None:
        raise crashed
    follow_ups = sample_hook(runtime).follow_ups_created_by
    console.print(await _final_table(runtime.settings.effective_database_url, since, follow_ups))
    return 0


def _stop_publisher(
    publisher: asyncio.Task[None], serving: asyncio.Task[None]
) -> BaseException | None:
    """Cancel the publisher; its own error, if it stopped the demo (not the shutdown)."""
    if not publisher.done():
        publisher.cancel()
        return None
    if publisher.cancelled() or serving.exception() is not None:
        return None
    return publisher.exception()


async def _await_quietly(task: asyncio.Task[None]) -> None:
    with contextlib.suppress(asyncio.CancelledError, EventprocError):
        await task


async def _watch_live(
    runtime: Runtime,
    serving: asyncio.Task[None],
    publisher: asyncio.Task[None],
    sent: Counter[str],
    console: Console,
) -> None:
    """A table redrawn in place, with log lines printed above it instead of through it.

    Only when the logs go to a terminal too: logs sent elsewhere (``2>file``)
    stay there.
    """
    stats = await runtime.store_stats()
    table = _live_table(runtime, sent["events"], stats)
    redirect = sys.stderr.isatty()
    live = Live(table, console=console, refresh_per_second=4, redirect_stderr=redirect)
    # Entered in order: by the time sys.stderr is read it is Live's proxy, which
    # prints each log line above the table.
    with live, _logs_written_to(sys.stderr) if redirect else contextlib.nullcontext():
        while await _still_running(serving, publisher, runtime):
            stats = await runtime.store_stats() or stats
            live.update(_live_table(runtime, sent["events"], stats))


async def _watch_plain(
    runtime: Runtime,
    serving: asyncio.Task[None],
    publisher: asyncio.Task[None],
    sent: Counter[str],
    console: Console,
) -> None:
    """One plain status line every few seconds (a log file or a pipe: nothing redrawn)."""
    stats: StoreStats | None = None
    last = time.monotonic()
    while await _still_running(serving, publisher, runtime):
        if time.monotonic() - last < STATUS_EVERY_SECONDS:
            continue
        last = time.monotonic()
        stats = await runtime.store_stats() or stats
        console.print(_status_line(runtime, sent["events"], stats), markup=False, highlight=False)


async def _still_running(
    serving: asyncio.Task[None], publisher: asyncio.Task[None], runtime: Runtime
) -> bool:
    """Wait up to a second; False once the runtime stopped or the publisher failed."""
    await asyncio.wait({serving}, timeout=1.0)
    if publisher.done() and not publisher.cancelled() and publisher.exception() is not None:
        runtime.shutdown()
        return False
    return not serving.done()


@contextlib.contextmanager
def _logs_written_to(stream: object) -> Iterator[None]:
    """Point eventproc's log handler at ``stream`` for a while (then back)."""
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if getattr(handler, "_eventproc", False) and isinstance(handler, logging.StreamHandler)
    ]
    previous = [handler.setStream(stream) for handler in handlers]
    try:
        yield
    finally:
        for handler, old in zip(handlers, previous, strict=True):
            handler.flush()
            if old is not None:
                handler.setStream(old)


def _traffic(sample: Sample, count: int, *, seed: int) -> list[NewEvent]:
    """Sample traffic, every event marked as the demo's (``created_by``)."""
    return [
        dataclasses.replace(event, created_by=DEMO_CREATED_BY)
        for event in sample.traffic(count, seed)
    ]


async def _stream(
    runtime: Runtime, sample: Sample, limit: int | None, rate: float, sent: Counter[str]
) -> None:
    """Publish sample traffic at ``rate`` per second, ``limit`` events or forever."""
    seed = 11
    while limit is None or sent["events"] < limit:
        size = 500 if limit is None else min(500, limit - sent["events"])
        chunk = _traffic(sample, size, seed=seed)
        seed += 1
        await _publish(runtime, chunk, rate, sent)


async def _publish(
    runtime: Runtime,
    events: Sequence[NewEvent],
    rate: float | None,
    sent: Counter[str] | None = None,
) -> None:
    """All at once, or ``rate`` events per second in small ticks; counted in ``sent``."""
    step = QUERY_CHUNK if not rate else max(int(rate * PUBLISH_TICK_SECONDS), 1)
    started = time.monotonic()
    for index, start in enumerate(range(0, len(events), step)):
        batch = events[start : start + step]
        await runtime.store.event_insert_many(batch)
        if sent is not None:
            sent["events"] += len(batch)
        if rate:
            delay = started + (index + 1) * step / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)


async def _drain(runtime: Runtime, sample: Sample, published: Sequence[NewEvent]) -> Tally:
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
    while True:
        tally = await _tally(runtime, sample, published)
        if not tally.pending or time.monotonic() > deadline:
            return tally
        await asyncio.sleep(0.25)


async def _tally(runtime: Runtime, sample: Sample, published: Sequence[NewEvent]) -> Tally:
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
            kind = sample.kind_of(event)
            tally.published[kind] += 1
            row = rows.get(event.id)
            outcome = (row.outcome or "processed") if row is not None and row.processed else None
            tally.outcomes.setdefault(kind, Counter())[outcome or PENDING] += 1
            if outcome is not None and outcome != sample.designed[kind].value:
                tally.mismatched.append(event.id)
    return tally


def _summary_table(tally: Tally, sample: Sample) -> Table:
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
            *_outcome_cells(counts),
            sample.designed[kind].value,
        )
    table.add_row("total", str(totals["published"]), *_outcome_cells(totals), "", style="bold")
    return table


def _outcome_cells(counts: Counter[str]) -> list[str]:
    return [str(counts[name]) for name in ("succeeded", "skipped", "dead_lettered", PENDING)]


async def _final_table(url: str, since: datetime, follow_ups_created_by: str | None) -> Table:
    """This run's events as the database has them (the runtime's own store is closed)."""
    store = open_store(url)
    try:
        rows = [("the demo", await outcomes(store, created_by=DEMO_CREATED_BY, since=since))]
        if follow_ups_created_by is not None:
            follow_ups = await outcomes(store, created_by=follow_ups_created_by, since=since)
            rows.append(("the handlers (follow-ups)", follow_ups))
        dead_letters = (await store.stats_snapshot()).dead_letters
    finally:
        await store.close()
    table = Table(title="eventproc demo: this run's events (read from the database)")
    table.add_column("published by")
    for column in ("events", "succeeded", "skipped", "dead-lettered", "pending", "retried"):
        table.add_column(column, justify="right")
    for label, counts in rows:
        table.add_row(label, str(counts.total), *_outcome_cells(counts.counts), str(counts.retried))
    table.caption = f"open dead letters in the database: {dead_letters}"
    return table


def _live_figures(runtime: Runtime, published: int, stats: StoreStats | None) -> dict[str, str]:
    s = runtime.stats
    return {
        "published": str(published),
        "handled": str(s.total_processed),
        "succeeded": str(s.success_count),
        "failed (retried)": str(s.error_count),
        "dead-lettered": str(s.dead_letter_count),
        "backlog": "unreachable" if stats is None else str(stats.backlog),
    }


def _live_table(runtime: Runtime, published: int, stats: StoreStats | None) -> Table:
    figures = _live_figures(runtime, published, stats)
    table = Table(title="eventproc demo (Ctrl+C to stop)")
    for column in figures:
        table.add_column(column, justify="right")
    table.add_row(*figures.values())
    return table


def _status_line(runtime: Runtime, published: int, stats: StoreStats | None) -> str:
    figures = _live_figures(runtime, published, stats)
    return "demo: " + ", ".join(f"{name} {value}" for name, value in figures.items())
