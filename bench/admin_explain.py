#!/usr/bin/env python3
"""EXPLAIN (ANALYZE, BUFFERS) of every admin API list query, as the store runs it.

    .venv/bin/python bench/admin_explain.py [--no-analyze]

Recreates the PostgreSQL database ``admin_explain`` on 127.0.0.1:5432 (user
postgres), migrates it, fills it (200,000 events of five types over 30 days,
the newest 2,000 pending, 20,000 of them routed onto two deliveries each;
20,000 dead letters in a few (handler, fingerprint) groups, one of 12,000,
some replayed, some written before eventproc (no handler, no fingerprint);
20,000 attempts; 5,000 audit rows), runs VACUUM ANALYZE (as autovacuum
would have on a live database; ``--no-analyze`` leaves the tables without
statistics) and then calls the store's admin reads (``store.admin``, with the
filters the API passes) on a connection with ``auto_explain`` logging every
statement's plan to the client: the plans printed are those of the
statements the store built and ran, with the parameters it bound.

A summary table follows: per read, the statements it ran, the top plan node
of its main statement, the indexes used, any sequential scan of a big
table, and the server's time. Nothing outside ``admin_explain`` is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import event

from eventproc.store import open_store
from eventproc.store.admin import EventQuery
from eventproc.store.admin.dead_letters import DeadLetterQuery, GroupQuery

SERVER = "postgresql://postgres@127.0.0.1:5432"
DATABASE = "admin_explain"
BIG_TABLES = ("events", "event_deliveries", "event_dead_letters", "event_attempts")
TABLES = (*BIG_TABLES, "admin_actions")

FILL = [
    # Events: five types, 30 days (one every 12.96 s), the newest 2,000 pending;
    # one in 3 with an aggregate (5,000 of them), one in 50 dead-lettered with
    # a last error; handled_by as a completion on the row writes it.
    """
    INSERT INTO events (id, event_type, aggregate_id, aggregate_type, payload, metadata,
                        processed, created_at, created_by, outcome, processed_at)
    SELECT md5('e' || n)::uuid,
           (ARRAY['user.created','order.placed','order.paid','email.sent','intro.completed'])
               [1 + n % 5],
           CASE WHEN n % 3 = 0 THEN md5('a' || (n % 5000))::uuid END,
           CASE WHEN n % 3 = 0 THEN 'order' END,
           jsonb_build_object('n', n, 'user', jsonb_build_object('id', 'u' || (n % 1000)),
                              'plan', (ARRAY['free','pro','team'])[1 + n % 3]),
           jsonb_build_object('handled_by', 'h' || (n % 4))
             || CASE WHEN n % 50 = 0 THEN jsonb_build_object(
                    'last_error', 'RuntimeError: upstream ' || (n % 7) || ' timed out')
                ELSE '{}'::jsonb END,
           n <= 198000,
           now() - interval '30 days' + n * interval '12.96 seconds',
           (ARRAY['shop','crm','svc-mail'])[1 + n % 3],
           CASE WHEN n > 198000 THEN NULL WHEN n % 50 = 0 THEN 'dead_lettered'
                WHEN n % 97 = 0 THEN 'skipped' ELSE 'succeeded' END,
           CASE WHEN n <= 198000 THEN now() - interval '30 days' + n * interval '12.96 seconds' END
    FROM generate_series(1, 200000) AS n
    """,
    # One in ten events fanned out onto two deliveries (fan_a, fan_b).
    """
    UPDATE events SET routed_at = created_at, deliveries_open = 0
    WHERE (('x' || substr(id::text, 1, 8))::bit(32)::int % 10) = 0
    """,
    """
    INSERT INTO event_deliveries (event_id, handler, event_type, aggregate_id,
                                  event_created_at, status, outcome, attempts, last_error,
                                  created_at, finished_at)
    SELECT e.id, h.handler, e.event_type, e.aggregate_id, e.created_at,
           CASE WHEN e.processed THEN 'done' ELSE 'pending' END,
           CASE WHEN NOT e.processed THEN NULL
                WHEN h.handler = 'fan_b' AND e.outcome = 'dead_lettered' THEN 'dead_lettered'
                ELSE 'succeeded' END,
           1,
           CASE WHEN h.handler = 'fan_b' AND e.outcome = 'dead_lettered'
                THEN 'PermanentError: order refused' END,
           e.created_at, e.processed_at
    FROM events e CROSS JOIN (VALUES ('fan_a'), ('fan_b')) AS h(handler)
    WHERE e.routed_at IS NOT NULL
    """,
    # 20,000 dead letters: groups of 12,000 (over the 10,000 cap), 4,000 (and
    # 1,000 of it replayed), 1,500, 1,000, and 500 legacy ones.
    """
    INSERT INTO event_dead_letters (id, event_id, event_type, payload, error_message,
                                    retry_count, original_created_at, created_at,
                                    error_detail, handler, error_fingerprint, replayed_at)
    SELECT md5('d' || n)::uuid, md5('e' || (n * 7 % 200000 + 1))::uuid,
           (ARRAY['order.placed','order.paid','email.sent'])[1 + n % 3],
           jsonb_build_object('n', n), g.message || ' #' || n, 3,
           now() - interval '20 days' + n * interval '60 seconds',
           now() - interval '20 days' + n * interval '60 seconds',
           'Traceback (most recent call last): ...', g.handler, g.fingerprint,
           CASE WHEN g.replayed THEN now() END
    FROM generate_series(1, 20000) AS n
    JOIN LATERAL (
        SELECT * FROM (VALUES
            (1, 12000, 'fan_b', 'PermanentError: order <n> was refused', false,
             'PermanentError: order 12 was refused'),
            (12001, 16000, 'mailer', 'TimeoutError: smtp <ip> timed out', false,
             'TimeoutError: smtp 10.0.0.7 timed out'),
            (16001, 17000, 'mailer', 'TimeoutError: smtp <ip> timed out', true,
             'TimeoutError: smtp 10.0.0.7 timed out'),
            (17001, 18500, 'fan_b', 'KeyError: <q>', false, 'KeyError: ''sku'''),
            (18501, 19500, 'crm_sync', 'HTTPError: <n> from crm', false, 'HTTPError: 502 from crm'),
            (19501, 20000, NULL, NULL, false, 'legacy failure'))
          AS v(lo, hi, handler, fingerprint, replayed, message)
        WHERE n BETWEEN v.lo AND v.hi) AS g ON true
    """,
    """
    INSERT INTO event_attempts (event_id, handler, attempt, worker, finished_at, duration_ms,
                                outcome, error, detail)
    SELECT md5('e' || ((n % 4000) * 50))::uuid, 'fan_b', 1 + n / 4000, 'w1', now(), 12.5,
           'retry', 'RuntimeError: upstream timed out', 'Traceback ...'
    FROM generate_series(0, 19999) AS n
    """,
    """
    INSERT INTO admin_actions (at, actor, role, action, target, reason, counts, result)
    SELECT now() - interval '10 days' + n * interval '3 minutes',
           (ARRAY['alice','bob','ops-bot'])[1 + n % 3],
           'operator',
           (ARRAY['event.replay','dead_letter.replay','dead_letter.discard','handler.pause'])
               [1 + n % 4],
           jsonb_build_object('event_ids', jsonb_build_array(md5('e' || n)::uuid)),
           'bench', '{"matched": 1}'::jsonb, 'ok'
    FROM generate_series(1, 5000) AS n
    """,
]

AUTO_EXPLAIN = (
    "LOAD 'auto_explain';"
    " SET auto_explain.log_min_duration = 0;"
    " SET auto_explain.log_analyze = on;"
    " SET auto_explain.log_buffers = on;"
    " SET auto_explain.log_timing = on;"
    " SET auto_explain.log_format = text;"
    " SET client_min_messages = log;"
)


@dataclass
class Captured:
    """The plans auto_explain sent while one read ran."""

    plans: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        if "Query Text:" in message and any(
            re.search(rf"\b{table}\b", message) for table in TABLES
        ):
            self.plans.append(message)


@dataclass
class Result:
    label: str
    plans: list[str]

    @property
    def milliseconds(self) -> float:
        return sum(float(m) for p in self.plans for m in re.findall(r"duration: ([\d.]+) ms", p))

    @property
    def top_node(self) -> str:
        """The first plan line of the read's costliest statement."""
        costliest = max(self.plans, key=_duration, default="")
        for line in costliest.splitlines():
            if "(cost=" in line:
                return re.sub(r"\s+\(cost=.*", "", line).strip().removeprefix("-> ")
        return "?"

    @property
    def indexes(self) -> list[str]:
        found = re.findall(r"Index (?:Only )?Scan(?: Backward)? using (\w+)", "\n".join(self.plans))
        found += re.findall(r"Bitmap Index Scan on (\w+)", "\n".join(self.plans))
        return sorted(set(found))

    @property
    def seq_scans(self) -> list[str]:
        scanned = re.findall(r"Seq Scan on (\w+)", "\n".join(self.plans))
        return sorted({table for table in scanned if table in BIG_TABLES})


def _duration(plan: str) -> float:
    found = re.search(r"duration: ([\d.]+) ms", plan)
    return float(found[1]) if found else 0.0


async def recreate() -> None:
    admin = await asyncpg.connect(f"{SERVER}/postgres")
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()


async def fill(analyze: bool) -> None:
    store = open_store(f"{SERVER}/{DATABASE}", worker_name="bench")
    await store.migrate()
    await store.close()
    conn = await asyncpg.connect(f"{SERVER}/{DATABASE}")
    try:
        for statement in FILL:
            await conn.execute(statement)
        if analyze:
            await conn.execute("VACUUM ANALYZE")
        counts = {t: await conn.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
    finally:
        await conn.close()
    print("filled:", ", ".join(f"{table} {count:,}" for table, count in counts.items()))


Read = Callable[[Any], Awaitable[Any]]


def reads(day: datetime) -> list[tuple[str, Read]]:
    """Each admin list read the API makes, with the filters it passes."""
    week = (day - timedelta(days=1), day)
    aggregate = uuid.UUID(bytes=bytes.fromhex(_md5("a42")))
    dead_event = uuid.UUID(bytes=bytes.fromhex(_md5("e100")))  # dead-lettered, with attempts
    after_event = (day, uuid.UUID(int=0))
    after_letter = (day - timedelta(days=10), uuid.UUID(int=0))
    ev, dl = EventQuery, DeadLetterQuery
    return [
        ("events: no filter", lambda a: a.events_page(ev())),
        ("events: type", lambda a: a.events_page(ev(event_type="order.paid"))),
        ("events: type pattern", lambda a: a.events_page(ev(event_type="order.*"))),
        ("events: handler", lambda a: a.events_page(ev(handler="fan_b"))),
        ("events: handler on row", lambda a: a.events_page(ev(handler="h1"))),
        ("events: state pending", lambda a: a.events_page(ev(state="pending"))),
        ("events: outcome", lambda a: a.events_page(ev(outcome="dead_lettered"))),
        ("events: aggregate", lambda a: a.events_page(ev(aggregate_id=aggregate))),
        ("events: created_by", lambda a: a.events_page(ev(created_by="crm"))),
        ("events: time range", lambda a: a.events_page(ev(since=week[0], until=week[1]))),
        (
            "events: payload path",
            lambda a: a.events_page(ev(path=("payload", "user", "id"), value="u7")),
        ),
        ("events: error text", lambda a: a.events_page(ev(error="upstream 3"))),
        ("events: next page", lambda a: a.events_page(ev(after=after_event))),
        ("event detail", lambda a: a.event_detail(dead_event)),
        ("dead letters: open", lambda a: a.dead_letters.page(dl())),
        ("dead letters: handler", lambda a: a.dead_letters.page(dl(handler="mailer"))),
        (
            "dead letters: handler+fp",
            lambda a: a.dead_letters.page(
                dl(handler="fan_b", fingerprint="PermanentError: order <n> was refused")
            ),
        ),
        ("dead letters: event type", lambda a: a.dead_letters.page(dl(event_type="email.sent"))),
        ("dead letters: replayed", lambda a: a.dead_letters.page(dl(state="replayed"))),
        ("dead letters: all", lambda a: a.dead_letters.page(dl(state="all"))),
        (
            "dead letters: time range",
            lambda a: a.dead_letters.page(dl(since=day - timedelta(days=12), until=day)),
        ),
        ("dead letters: next page", lambda a: a.dead_letters.page(dl(after=after_letter))),
        ("dead letter", lambda a: a.dead_letters.get(uuid.UUID(bytes=bytes.fromhex(_md5("d7"))))),
        ("groups", lambda a: a.dead_letters.groups(GroupQuery())),
        ("groups: handler", lambda a: a.dead_letters.groups(GroupQuery(handler="fan_b"))),
        (
            "groups: event type",
            lambda a: a.dead_letters.groups(GroupQuery(event_type="order.paid")),
        ),
        (
            "groups: time range",
            lambda a: a.dead_letters.groups(GroupQuery(since=day - timedelta(days=10))),
        ),
        ("audit", lambda a: a.audit_page(limit=50)),
        ("audit: action", lambda a: a.audit_page(limit=50, action="handler.pause")),
        ("audit: actor", lambda a: a.audit_page(limit=50, actor="bob")),
        ("audit: next page", lambda a: a.audit_page(limit=50, after=(day - timedelta(days=5), 0))),
    ]


def _md5(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode()).hexdigest()  # ids of the fill, not a secret


async def explain_all() -> list[Result]:
    store = open_store(f"{SERVER}/{DATABASE}", worker_name="bench")
    captured = Captured()

    @event.listens_for(store.driver.reader.sync_engine, "connect")
    def explained(dbapi_connection: Any, record: Any) -> None:
        raw = dbapi_connection.driver_connection
        raw.add_log_listener(lambda _conn, message: captured.add(message.message))
        dbapi_connection.run_async(lambda conn: conn.execute(AUTO_EXPLAIN))

    await store.open()
    day = datetime.now(UTC)
    results = []
    try:
        for label, read in reads(day):
            for _ in range(2):  # the second run's plans: caches warm, as for a poller
                captured.plans = []
                await read(store.admin)
                await asyncio.sleep(0.05)  # the last log message may trail the result
            results.append(Result(label, list(captured.plans)))
    finally:
        await store.close()
    return results


def report(results: list[Result]) -> None:
    for result in results:
        print(f"\n=== {result.label} ({len(result.plans)} statement(s)) ===")
        for plan in result.plans:
            print(plan.rstrip())
    print("\nSummary (server time of the second run, auto_explain with ANALYZE and BUFFERS)")
    print(f"{'read':32} {'stmts':>5} {'ms':>8}  {'top node':44} seq scans | indexes")
    for r in results:
        seq = ",".join(r.seq_scans) or "-"
        print(
            f"{r.label:32} {len(r.plans):>5} {r.milliseconds:>8.2f}  {r.top_node[:44]:44} "
            f"{seq} | {', '.join(r.indexes) or '-'}"
        )


# Not the store's: a rewrite of the events list for its owner to weigh. With
# no created_at index on events (and none to be added), the list's
# ORDER BY created_at DESC is a sequential scan and a sort; walking the
# event types (a loose scan of events_type_created_idx) and taking each
# type's newest rows through the same index gives the same page.
PROPOSED = {
    "events: no filter": "",
    "events: created_by": "AND created_by = 'crm'",
    "events: time range": "AND created_at >= now() - interval '2 days' AND created_at < now()",
}
PROPOSED_SQL = """
WITH RECURSIVE types(t) AS (
    SELECT min(event_type) FROM events
    UNION ALL
    SELECT (SELECT min(event_type) FROM events WHERE event_type > t) FROM types
    WHERE t IS NOT NULL
)
SELECT e.* FROM types CROSS JOIN LATERAL (
    SELECT * FROM events WHERE event_type = types.t {where}
    ORDER BY created_at DESC, id DESC LIMIT 50) AS e
ORDER BY e.created_at DESC, e.id DESC LIMIT 50
"""


async def proposed() -> list[Result]:
    conn = await asyncpg.connect(f"{SERVER}/{DATABASE}")
    results = []
    try:
        for label, where in PROPOSED.items():
            sql = PROPOSED_SQL.format(where=where)
            for _ in range(2):
                rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
            plan = "\n".join(row[0] for row in rows)
            took = re.search(r"Execution Time: ([\d.]+) ms", plan)
            text = f"duration: {took[1] if took else 0} ms  plan:\nQuery Text: {sql}\n{plan}"
            results.append(Result(f"{label} (proposed)", [text]))
    finally:
        await conn.close()
    return results


async def main(analyze: bool) -> None:
    await recreate()
    await fill(analyze)
    report([*await explain_all(), *await proposed()])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--no-analyze", action="store_true", help="no VACUUM ANALYZE after the fill"
    )
    arguments = parser.parse_args()
    asyncio.run(main(analyze=not arguments.no_analyze))
    sys.exit(0)
