#!/usr/bin/env python3
"""Dead tuples after a drain, with PostgreSQL's autovacuum defaults and with migration 0008's.

    .venv/bin/python bench/autovacuum_effect.py [--history 200000] [--events 50000]
                                                [--observe 70] [--url postgresql://...]

Makes two databases on the server (``autovacuum_bench_defaults`` and
``autovacuum_bench_eventproc``), migrates both, RESETs the per-table
autovacuum settings on the first, loads ``--history`` finished events (what
a retained week looks like) and ``--events`` pending ones into each, then
drains both side by side with the claim's and the completion's UPDATEs (two
row versions per event, as the processor writes them), sampling every 5 s
the events table's dead tuples, autovacuum runs and the claim's pick time
(eventproc.store.table_health). After the drain it keeps sampling for
``--observe`` seconds (the autovacuum launcher visits each database once per
``autovacuum_naptime``, 60 s by default, so a shorter look may see nothing).

With ``autovacuum = off`` on the server nothing can differ: the script says
so, prints the thresholds each setting would trigger at and the claim time
before and after a manual VACUUM (what the dead tuples cost), and skips the
observation. The two databases are dropped at the end.
"""

import argparse
import asyncio
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import asyncpg

import eventproc.store.migrations
from eventproc.store import open_store, table_health


def _revision() -> ModuleType:
    """Migration 0008's module (its file name starts with a digit: loaded by path)."""
    folder = Path(eventproc.store.migrations.__file__).parent / "versions"
    spec = importlib.util.spec_from_file_location(
        "revision_0008", folder / "0008_retention_table_health.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


revision = _revision()

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
VARIANTS = ("defaults", "eventproc")
SAMPLE_SECONDS = 5.0
BATCH = 500

CLAIM = """
WITH picked AS (
    SELECT id FROM events WHERE NOT processed AND locked_by IS NULL
    ORDER BY priority DESC, created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED
)
UPDATE events e SET locked_by = 'bench', locked_until = now() + interval '30 s',
       attempts = attempts + 1
WHERE e.id IN (SELECT id FROM picked) RETURNING e.id
"""
COMPLETE = """
UPDATE events SET processed = true, outcome = 'succeeded', processed_at = now(),
       locked_by = NULL, locked_until = NULL
WHERE id = ANY($1::uuid[])
"""
LOAD = """
INSERT INTO events (id, event_type, payload, processed, outcome, processed_at, created_at)
SELECT gen_random_uuid(), 'bench.av', jsonb_build_object('n', n), $2, $3,
       CASE WHEN $2 THEN now() END, now() - interval '1 day' + n * interval '1 ms'
FROM generate_series(1, $1) n
"""
STATS = (
    "SELECT n_dead_tup, autovacuum_count, n_live_tup FROM pg_stat_user_tables "
    "WHERE relname = 'events'"
)


@dataclass
class Sample:
    at: float
    dead: int
    autovacuums: int
    claim_ms: float


def url_of(database: str, base: str) -> str:
    return base.rsplit("/", 1)[0] + "/" + database


async def prepare(base: str, variant: str, history: int, events: int) -> str:
    name = f"autovacuum_bench_{variant}"
    admin = await asyncpg.connect(base)
    await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    url = url_of(name, base)
    store = open_store(url)
    await store.migrate()
    await store.close()
    conn = await asyncpg.connect(url)
    if variant == "defaults":
        options = ", ".join(revision.AUTOVACUUM)
        for table in revision.HOT_TABLES:
            await conn.execute(f"ALTER TABLE {table} RESET ({options})")
    await conn.execute(LOAD, history, True, "succeeded")
    await conn.execute(LOAD, events, False, None)
    await conn.execute("VACUUM ANALYZE events")
    await conn.close()
    return url


async def sample(url: str, started: float) -> Sample:
    conn = await asyncpg.connect(url)
    row = await conn.fetchrow(STATS)
    await conn.close()
    store = open_store(url)
    claims = [(await table_health.read(store.driver)).claim_seconds for _ in range(5)]
    await store.close()
    return Sample(time.monotonic() - started, row[0], row[1], min(claims) * 1000)


async def drain(url: str) -> int:
    conn = await asyncpg.connect(url)
    done = 0
    try:
        while True:
            ids = [row[0] for row in await conn.fetch(CLAIM, BATCH)]
            if not ids:
                return done
            await conn.execute(COMPLETE, ids)
            done += len(ids)
    finally:
        await conn.close()


async def watch(
    urls: dict[str, str], until: asyncio.Event, observe: float
) -> dict[str, list[Sample]]:
    started = time.monotonic()
    samples: dict[str, list[Sample]] = {variant: [] for variant in urls}
    deadline: float | None = None
    while deadline is None or time.monotonic() < deadline:
        for variant, url in urls.items():
            samples[variant].append(await sample(url, started))
        if until.is_set() and deadline is None:
            deadline = time.monotonic() + observe
        await asyncio.sleep(SAMPLE_SECONDS)
    return samples


def print_samples(samples: dict[str, list[Sample]]) -> None:
    head = " ".join(f"{v + ' dead':>16} {'avac':>4} {'claim ms':>8}" for v in VARIANTS)
    print(f"{'t (s)':>6} {head}")
    for index in range(min(len(s) for s in samples.values())):
        cells = [samples[v][index] for v in VARIANTS]
        line = " ".join(f"{c.dead:16,} {c.autovacuums:4} {c.claim_ms:8.2f}" for c in cells)
        print(f"{cells[0].at:6.0f} {line}")


async def dead_tuples_cost(urls: dict[str, str]) -> None:
    print("autovacuum is off on this server: the settings cannot act here.")
    print("What the dead tuples cost the claim's pick instead (best of 5):")
    for variant, url in urls.items():
        before = await sample(url, 0)
        conn = await asyncpg.connect(url)
        await conn.execute("VACUUM events")
        await conn.close()
        after = await sample(url, 0)
        print(
            f"{variant:>10}: {before.claim_ms:.2f} ms with {before.dead:,} dead tuples, "
            f"{after.claim_ms:.2f} ms after VACUUM"
        )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=ADMIN, help="an admin URL of the server")
    parser.add_argument("--history", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--observe", type=float, default=70.0)
    args = parser.parse_args()
    admin = await asyncpg.connect(args.url)
    autovacuum = await admin.fetchval("SHOW autovacuum")
    naptime = await admin.fetchval("SHOW autovacuum_naptime")
    await admin.close()
    print(f"server: autovacuum={autovacuum}, autovacuum_naptime={naptime}")
    urls = {v: await prepare(args.url, v, args.history, args.events) for v in VARIANTS}
    rows = args.history + args.events
    for variant, factor in (("defaults", 0.2), ("eventproc", 0.02)):
        print(f"{variant:>10}: vacuum starts at {50 + factor * rows:,.0f} dead tuples of events")
    done = asyncio.Event()
    observe = args.observe if autovacuum == "on" else 0.0
    watcher = asyncio.create_task(watch(urls, done, observe))
    started = time.monotonic()
    drained = await asyncio.gather(*(drain(url) for url in urls.values()))
    print(f"drained {drained} events in {time.monotonic() - started:.1f} s (both at once)")
    done.set()
    samples = await watcher
    print_samples(samples)
    if autovacuum != "on":
        await dead_tuples_cost(urls)
    admin = await asyncpg.connect(args.url)
    for variant in VARIANTS:
        await admin.execute(f"DROP DATABASE IF EXISTS autovacuum_bench_{variant} WITH (FORCE)")
    await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
