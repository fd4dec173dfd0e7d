"""Handlers for the chaos workers: ``HANDLERS=chaos_handlers:registry``, ``PYTHONPATH=bench/chaos``.

Every handler call journals itself in ``chaos_journal`` over a connection of
its own (its own commits), so attempts that crash, fail or are fenced out
are on record too: a row when the call starts (event, claim token, worker,
attempt, start time) and an update when it ends (end time, ``ok``/``failed``).
A call whose worker was killed or stopped keeps ``finished_at`` NULL.

``chaos.tx`` is transactional: its side effect is one row in ``chaos_effects``
written through ``ctx.connection`` (the transaction that also marks the event
processed). ``chaos_effects.event_id`` is deliberately not unique, so a second
committed effect for one event would be visible and countable instead of
being refused. An injected failure happens after the effect was written, so
the rollback is what keeps it out.

Failures are injected from the payload: ``fail_first: k`` raises on attempts
1..k (``ctx.attempt`` counts claims, so attempts lost to kills count too),
``always_fail`` raises every time (dead-lettered after MAX_RETRIES),
``permanent`` raises PermanentError (dead-lettered at once). ``work_ms`` is
how long the handler pretends to work.

``SCHEMA`` also installs ``chaos_transitions``: a row trigger on ``events``
that records every change of claim or of ``processed``, with the claim token
before and after, in the same transaction as the change. It observes and
never alters a row: it is how the checker knows which claim's write-back
actually committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from typing import Any

import asyncpg
from sqlalchemy import text

from eventproc import Event, HandlerContext, PermanentError, Registry

PLAIN = "chaos.plain"
TRANSACTIONAL = "chaos.tx"

SCHEMA = """
CREATE TABLE IF NOT EXISTS chaos_journal (
    id          bigserial PRIMARY KEY,
    event_id    uuid NOT NULL,
    handler     text NOT NULL,
    worker      text NOT NULL,
    token       text NOT NULL,
    attempt     int NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    status      text
);
CREATE TABLE IF NOT EXISTS chaos_effects (
    id          bigserial PRIMARY KEY,
    event_id    uuid NOT NULL,  -- not unique on purpose: duplicates must be countable
    journal_id  bigint NOT NULL,
    token       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS chaos_transitions (
    id               bigserial PRIMARY KEY,
    event_id         uuid NOT NULL,
    kind             text NOT NULL,
    old_token        text,
    new_token        text,
    old_locked_until timestamptz,
    attempts         int NOT NULL,
    at               timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS chaos_workers (
    name     text NOT NULL,
    pid      int NOT NULL,
    ready_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE FUNCTION chaos_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_transitions (event_id, kind, old_token, new_token, old_locked_until, attempts)
    VALUES (
        NEW.id,
        CASE
            WHEN NEW.processed IS TRUE AND OLD.processed IS NOT TRUE
                THEN coalesce(NEW.outcome, 'processed')
            WHEN OLD.processed IS TRUE AND NEW.processed IS NOT TRUE THEN 'replayed'
            WHEN NEW.processed IS TRUE THEN 'changed_while_processed'
            WHEN OLD.locked_by IS NULL THEN 'claim'
            WHEN NEW.locked_by IS NOT NULL THEN 'takeover'
            WHEN NEW.attempts < OLD.attempts THEN 'release'
            -- a claimer taking over a stalled run clears its leases and
            -- changes nothing else: not a write-back of the old token
            WHEN NEW.attempts = OLD.attempts
                 AND NEW.next_attempt_at IS NOT DISTINCT FROM OLD.next_attempt_at
                THEN 'revoked'
            ELSE 'retry'
        END,
        OLD.locked_by, NEW.locked_by, OLD.locked_until, NEW.attempts
    );
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS chaos_audit ON events;
CREATE TRIGGER chaos_audit AFTER UPDATE ON events FOR EACH ROW
    WHEN (OLD.locked_by IS DISTINCT FROM NEW.locked_by
          OR OLD.processed IS DISTINCT FROM NEW.processed)
    EXECUTE FUNCTION chaos_audit();
"""

_START = """
INSERT INTO chaos_journal (event_id, handler, worker, token, attempt, started_at)
VALUES ($1, $2, $3, $4, $5, clock_timestamp())
RETURNING id
"""
_END = "UPDATE chaos_journal SET finished_at = clock_timestamp(), status = $2 WHERE id = $1"
_EFFECT = text(
    "INSERT INTO chaos_effects (event_id, journal_id, token) "
    "VALUES (:event_id, :journal_id, :token)"
)

registry = Registry()


def _die_with_driver() -> None:
    """A worker must not outlive a chaos driver that was killed outright."""
    driver = os.environ.get("CHAOS_DRIVER_PID")
    if not driver:
        return
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != int(driver):  # it died before we got here
        os._exit(3)


_die_with_driver()


class InjectedFailure(Exception):
    """A failure the chaos plan asked for (retried like any handler error)."""


_pool: asyncpg.Pool | None = None
_pool_lock = asyncio.Lock()


async def _journal() -> asyncpg.Pool:
    """The journal's own small pool (never the event's transaction)."""
    global _pool
    if _pool is not None:
        return _pool
    async with _pool_lock:
        if _pool is None:
            _pool = await asyncpg.create_pool(
                # Direct even when the workers go through a pooler (the driver sets it).
                os.environ.get("CHAOS_JOURNAL_URL") or os.environ["DATABASE_URL"],
                min_size=0,
                max_size=int(os.environ.get("CONCURRENCY", "16")),
                timeout=5,  # connect
                command_timeout=10,
            )
    return _pool


async def _record_start(event: Event, ctx: HandlerContext, handler: str) -> int:
    pool = await _journal()
    token = event.locked_by or "?"
    return int(await pool.fetchval(_START, event.id, handler, ctx.worker_id, token, ctx.attempt))


async def _record_end(journal_id: int, status: str) -> None:
    pool = await _journal()
    await pool.execute(_END, journal_id, status)


def _inject(payload: dict[str, Any], attempt: int) -> None:
    if payload.get("permanent"):
        raise PermanentError("injected permanent failure")
    if payload.get("always_fail"):
        raise InjectedFailure(f"injected failure (every attempt; this is attempt {attempt})")
    if attempt <= int(payload.get("fail_first", 0)):
        raise InjectedFailure(f"injected failure on attempt {attempt}")


async def _handle(event: Event, ctx: HandlerContext, handler: str) -> None:
    journal_id = await _record_start(event, ctx, handler)
    try:
        if ctx.transactional:
            await ctx.connection.execute(
                _EFFECT,
                {"event_id": event.id, "journal_id": journal_id, "token": event.locked_by},
            )
        await asyncio.sleep(float(event.payload.get("work_ms", 0)) / 1000)
        _inject(event.payload, ctx.attempt)
    except Exception:
        # Best effort: the handler's own exception is what must reach eventproc.
        with contextlib.suppress(Exception):
            await _record_end(journal_id, "failed")
        raise
    # Recorded before returning: a success write-back always has its "ok" row.
    await _record_end(journal_id, "ok")


@registry.handler(PLAIN, description="journals itself; may fail as the payload says")
async def plain(event: Event, ctx: HandlerContext) -> None:
    await _handle(event, ctx, "plain")


@registry.handler(
    TRANSACTIONAL,
    description="writes one side effect in the event's transaction; may fail after it",
    transactional=True,
)
async def transactional(event: Event, ctx: HandlerContext) -> None:
    await _handle(event, ctx, "tx")


@registry.on_migrate
async def _ready(connection: Any) -> None:
    """Runs in each worker's start-up migration, right before its processing loop."""
    name = os.environ.get("WORKER_ID")
    if name:
        await connection.execute(
            text("INSERT INTO chaos_workers (name, pid) VALUES (:name, :pid)"),
            {"name": name, "pid": os.getpid()},
        )
