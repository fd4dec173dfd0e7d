"""SQLite crash test: SIGKILL a real worker mid-write, again and again.

Each round publishes events (through eventproc's store API, as a publishing
service would), starts ``eventproc worker`` on the file, waits until it is
writing, kills it with SIGKILL a random moment later while more events are
being published, then checks the file with ``PRAGMA integrity_check`` and
that the handler's effects match the succeeded events exactly (they commit
in one transaction). A last clean worker runs the backlog to idle and stops
on SIGTERM: every published event must then be there, processed and
succeeded once, its effect written once.

    .venv/bin/python bench/sqlite_crash.py [--kills 20] [--seed N] [--keep]

Exit status 1 on any failure. tests/integration/test_sqlite_crash.py runs the
same with 5 kills.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
sys.path.insert(0, str(TESTS))

from eventproc.event import NewEvent  # noqa: E402
from eventproc.store import Store, open_store  # noqa: E402
from support.sqlite_crash_handlers import EVENT_TYPE, registry  # noqa: E402

PROGRESS_TIMEOUT = 30.0
DRAIN_TIMEOUT = 120.0


@dataclass
class Counts:
    integrity: str
    rows: int
    processed: int
    succeeded: int
    other_outcomes: int
    leased: int
    effects: int
    total: int
    dead_letters: int
    retried: int  # effects written on a later attempt: a killed run's event, finished

    def line(self) -> str:
        return (
            f"integrity={self.integrity} rows={self.rows} processed={self.processed} "
            f"succeeded={self.succeeded} other={self.other_outcomes} in_flight={self.leased} "
            f"effects={self.effects} retried={self.retried} counter={self.total} "
            f"dead_letters={self.dead_letters}"
        )


@dataclass
class Run:
    """The published ids and every problem found so far."""

    path: Path
    url: str
    published: set[str] = field(default_factory=set)
    rounds: list[Counts] = field(default_factory=list)  # after each kill
    cut_short: int = 0  # handler transactions the kills interrupted, all rounds
    failures: list[str] = field(default_factory=list)
    say: Callable[[str], None] = print


def read_counts(path: Path) -> Counts:
    """Opened fresh after each kill, so SQLite recovers the WAL as any reader would."""
    db = sqlite3.connect(path, timeout=30)
    try:
        return _counts(db)
    except sqlite3.DatabaseError as error:  # a file too broken to read at all
        return Counts(f"unreadable: {error}", -1, -1, -1, -1, -1, -1, -1, -1, -1)
    finally:
        db.close()


def _counts(db: sqlite3.Connection) -> Counts:
    integrity = "; ".join(row[0] for row in db.execute("PRAGMA integrity_check"))
    rows, processed, succeeded, other, leased = db.execute(
        "SELECT count(*), coalesce(sum(processed = 1), 0),"
        " coalesce(sum(processed = 1 AND outcome = 'succeeded'), 0),"
        " coalesce(sum(processed = 1 AND coalesce(outcome, '') <> 'succeeded'), 0),"
        " coalesce(sum(processed = 0 AND locked_by IS NOT NULL), 0) FROM events"
    ).fetchone()
    effects, retried = db.execute(
        "SELECT count(*), coalesce(sum(attempt > 1), 0) FROM crash_effects"
    ).fetchone()
    total = db.execute("SELECT n FROM crash_totals WHERE id = 1").fetchone()[0]
    dead = db.execute("SELECT count(*) FROM event_dead_letters").fetchone()[0]
    return Counts(
        integrity, rows, processed, succeeded, other, leased, effects, total, dead, retried
    )


def event_ids(path: Path) -> set[str]:
    db = sqlite3.connect(path, timeout=30)
    try:
        return {row[0] for row in db.execute("SELECT id FROM events")}
    finally:
        db.close()


def worker_env(url: str, worker_id: str, marks: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HANDLERS", "PORT")}
    env.update(
        DATABASE_URL=url,
        HANDLERS="support.sqlite_crash_handlers:registry",
        PYTHONPATH=str(TESTS),
        WORKER_ID=worker_id,
        POLL_INTERVAL_MS="50",
        LEASE_SECONDS="1",  # a killed worker's claims come back within a second
        MAX_RETRIES="1000",  # kills are not the handler's failures: no dead letters
        RETRY_BASE_MS="0",
        RETRY_MAX_MS="100",
        BATCH_SIZE="10",
        CONCURRENCY="8",
        SHUTDOWN_GRACE_SECONDS="10",
        LOG_FORMAT="json",
        PRUNE="false",
        CRASH_MARKS_FILE=str(marks),
    )
    return env


async def start_worker(url: str, worker_id: str, log: Path) -> asyncio.subprocess.Process:
    marks = log.with_name(f"marks-{worker_id}")
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "eventproc",
            "worker",
            env=worker_env(url, worker_id, marks),
            stdout=out,
            stderr=out,
            start_new_session=True,
        )


async def publish(store: Store, run: Run, count: int) -> None:
    events = [
        NewEvent(EVENT_TYPE, {"n": len(run.published) + n, "bytes": 16384}) for n in range(count)
    ]
    await store.event_insert_many(events)
    run.published.update(str(event.id) for event in events)


async def keep_publishing(store: Store, run: Run) -> None:
    """Another service publishing while the worker runs (and dies)."""
    while True:
        await publish(store, run, 5)
        await asyncio.sleep(0.05)


async def wait_for_writes(path: Path, beyond: int, worker: asyncio.subprocess.Process) -> bool:
    """Until the worker has committed effects past ``beyond`` (it is mid-stream)."""
    deadline = time.monotonic() + PROGRESS_TIMEOUT
    while time.monotonic() < deadline and worker.returncode is None:
        if await asyncio.to_thread(lambda: read_effects(path)) > beyond:
            return True
        await asyncio.sleep(0.02)
    return False


def read_effects(path: Path) -> int:
    db = sqlite3.connect(path, timeout=30)
    try:
        return int(db.execute("SELECT count(*) FROM crash_effects").fetchone()[0])
    finally:
        db.close()


def cut_short(marks: Path) -> int:
    """Handler runs the kill interrupted inside their transaction."""
    begun: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        for line in marks.read_text().splitlines():
            kind, _, event_id = line.partition(" ")
            if kind == "b":
                begun.add(event_id)
            else:
                begun.discard(event_id)
    return len(begun)


async def until_inside(marks: Path) -> None:
    """Until a handler is inside its transaction (at most 2 s), so the kill cuts it short."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # a file another process writes: polled
        if cut_short(marks):
            return
        await asyncio.sleep(0.001)


def check_round(run: Run, label: str, counts: Counts) -> None:
    if counts.integrity != "ok":
        run.failures.append(f"{label}: integrity_check says {counts.integrity!r}")
    if counts.rows != len(run.published):
        run.failures.append(f"{label}: {counts.rows} event rows, {len(run.published)} published")
    if not counts.effects == counts.total == counts.succeeded:
        run.failures.append(
            f"{label}: effects {counts.effects}, counter {counts.total} and succeeded "
            f"{counts.succeeded} differ (a transaction half-committed)"
        )
    if counts.other_outcomes or counts.dead_letters:
        run.failures.append(
            f"{label}: {counts.other_outcomes} other outcomes, {counts.dead_letters} dead letters"
        )


async def kill_round(store: Store, run: Run, n: int, rng: random.Random, log: Path) -> None:
    await publish(store, run, 30)
    before = await asyncio.to_thread(read_effects, run.path)
    worker = await start_worker(run.url, f"crash{n}", log)
    publisher: asyncio.Task[None] | None = None
    writing = False
    try:
        writing = await wait_for_writes(run.path, before, worker)
        if writing:
            publisher = asyncio.create_task(keep_publishing(store, run))
            await asyncio.sleep(rng.uniform(0.05, 0.4))
            await until_inside(log.with_name(f"marks-crash{n}"))
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGKILL)
        code = await worker.wait()
        if publisher is not None:
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publisher
    label = f"kill {n:2d}"
    if not writing or code != -signal.SIGKILL:
        run.failures.append(f"{label}: worker not writing or exited early (code {code}); see {log}")
    counts = await asyncio.to_thread(read_counts, run.path)
    check_round(run, label, counts)
    run.rounds.append(counts)
    interrupted = cut_short(log.with_name(f"marks-crash{n}"))
    run.cut_short += interrupted
    run.say(f"{label}: {counts.line()} cut_short={interrupted}")


async def final_drain(run: Run, log: Path) -> Counts:
    """A last clean worker: backlog to zero, then SIGTERM and exit 0."""
    worker = await start_worker(run.url, "final", log)
    deadline = time.monotonic() + DRAIN_TIMEOUT
    try:
        while time.monotonic() < deadline and worker.returncode is None:
            counts = await asyncio.to_thread(read_counts, run.path)
            if counts.processed >= counts.rows:
                break
            await asyncio.sleep(0.1)
    finally:
        if worker.returncode is None:
            worker.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(worker.wait(), 30)
    if code != 0:
        run.failures.append(f"final worker exited {code}; see {log}")
    return await asyncio.to_thread(read_counts, run.path)


async def crash_run(folder: Path, kills: int, seed: int, say: Callable[[str], None] = print) -> Run:
    """The whole run; ``Run.failures`` is empty when it passed."""
    path = folder / "crash.db"
    run = Run(path, f"sqlite:///{path}", say=say)
    rng = random.Random(seed)
    log = folder / "workers.log"
    store = open_store(run.url, worker_name="crash-publisher")
    try:
        await store.migrate(registry.schema_hooks)
        for n in range(1, kills + 1):
            await kill_round(store, run, n, rng, log)
        final = await final_drain(run, log)
    finally:
        await store.close()
    check_round(run, "final", final)
    published = len(run.published)
    if not final.processed == final.succeeded == final.effects == published:
        run.failures.append(
            f"final: {published} published, {final.processed} processed, "
            f"{final.succeeded} succeeded, {final.effects} effects"
        )
    missing = run.published - await asyncio.to_thread(event_ids, path)
    if missing:
        run.failures.append(f"final: {len(missing)} published events missing from the table")
    say(f"final  : {final.line()} published={published}")
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keep", action="store_true", help="keep the database and worker log")
    args = parser.parse_args()
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    folder = Path(tempfile.mkdtemp(prefix="sqlite_crash-"))
    print(f"seed {args.seed}, {args.kills} kills, in {folder}")
    began = time.monotonic()
    run = asyncio.run(crash_run(folder, args.kills, args.seed))
    for failure in run.failures:
        print(f"FAIL: {failure}")
    verdict = "PASS" if not run.failures else "FAIL"
    print(
        f"{verdict}: {args.kills} kills, {len(run.published)} events published, "
        f"{len(run.failures)} failures, {time.monotonic() - began:.1f} s"
    )
    if not args.keep and not run.failures:
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()
    return 0 if not run.failures else 1


if __name__ == "__main__":
    sys.exit(main())
