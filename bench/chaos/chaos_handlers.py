"""Handlers for the chaos workers: ``HANDLERS=chaos_handlers:<registry>``, PYTHONPATH=bench/chaos.

Two workloads, one registry each (the driver picks it):

* ``registry``: one subscription per event type, as before the delivery
  model: ``chaos.plain`` -> ``plain``, ``chaos.tx`` -> ``tx`` (transactional).
  These events run on their own rows unless they fail or must wait, when
  their work moves to a delivery row.
* ``fanout``: one event type, ``chaos.fan``, taken by three subscriptions,
  so every event gets three delivery rows at its claim: ``fast`` (plain and
  healthy), ``flaky`` (transactional, fails as the payload's ``flaky`` part
  says: about 20 % of the events, mostly transient, some for good) and
  ``slow`` (plain, sleeps the payload's ``slow_ms``). ``fanout_without_flaky``
  is the same without ``flaky``, for the comparison run.

Every handler call journals itself in ``chaos_journal`` over a connection of
its own (its own commits), so attempts that crash, fail or are fenced out
are on record too: a row when the call starts (event, subscription, claim
token, worker, attempt, start time) and an update when it ends (end time,
``ok``/``failed``). A call whose worker was killed or stopped keeps
``finished_at`` NULL. The token is ``event.locked_by``, which for a delivery
is the delivery's lease (``event_deliveries.locked_by``).

A transactional handler's side effect is one row in ``chaos_effects``
written through ``ctx.connection`` (the transaction that also completes its
event or delivery). ``chaos_effects.event_id`` is deliberately not unique, so
a second committed effect would be visible and countable instead of being
refused. An injected failure happens after the effect was written, so the
rollback is what keeps it out.

Failures are injected from the payload: ``fail_first: k`` raises on attempts
1..k (``ctx.attempt`` counts claims, so attempts lost to kills count too),
``always_fail`` raises every time (dead-lettered after MAX_RETRIES),
``permanent`` raises PermanentError (dead-lettered at once).

``SCHEMA`` also installs ``chaos_transitions``: row triggers on ``events``
and on ``event_deliveries`` that record every change of claim, of
``processed`` / ``status`` and every move of an event onto deliveries, with
the claim token before and after and the writing transaction's id, in the
same transaction as the change. They observe and never alter a row: they
are how the checker knows which claim's write-back actually committed, per
(event, handler).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Mapping
from typing import Any

import asyncpg
from sqlalchemy import text

from eventproc import Event, HandlerContext, PermanentError, Registry

PLAIN = "chaos.plain"
TRANSACTIONAL = "chaos.tx"
FANOUT = "chaos.fan"

# Subscription names are the deliveries' and dead letters' ``handler``.
TRANSACTIONAL_HANDLERS = frozenset({"tx", "flaky"})
HEALTHY_HANDLERS = ("fast", "slow")  # fanout: the ones whose throughput is reported

SCHEMA = """
CREATE TABLE IF NOT EXISTS chaos_journal (
    id          bigserial PRIMARY KEY,
    event_id    uuid NOT NULL,
    handler     text NOT NULL,  -- the subscription's name
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
    handler     text NOT NULL,
    journal_id  bigint NOT NULL,
    token       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE IF NOT EXISTS chaos_transitions (
    id               bigserial PRIMARY KEY,
    event_id         uuid NOT NULL,
    handler          text,  -- NULL: the events row; else the delivery's handler
    kind             text NOT NULL,
    old_token        text,
    new_token        text,
    old_locked_until timestamptz,
    attempts         int NOT NULL,
    xid              bigint NOT NULL DEFAULT txid_current(),
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
            -- its work moved onto deliveries (fan-out at the claim, or a single
            -- subscription that failed or must wait): not a write-back
            WHEN NEW.routed_at IS DISTINCT FROM OLD.routed_at THEN 'routed'
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
          OR OLD.processed IS DISTINCT FROM NEW.processed
          OR OLD.routed_at IS DISTINCT FROM NEW.routed_at)
    EXECUTE FUNCTION chaos_audit();
CREATE OR REPLACE FUNCTION chaos_audit_delivery() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        -- leased at once with the claim's token (new_token), or waiting (NULL)
        INSERT INTO chaos_transitions (event_id, handler, kind, new_token, attempts)
        VALUES (NEW.event_id, NEW.handler, 'opened', NEW.locked_by, NEW.attempts);
        RETURN NULL;
    END IF;
    INSERT INTO chaos_transitions (event_id, handler, kind, old_token, new_token,
                                   old_locked_until, attempts)
    VALUES (
        NEW.event_id, NEW.handler,
        CASE
            WHEN NEW.status = 'done' AND OLD.status <> 'done' THEN coalesce(NEW.outcome, 'done')
            WHEN OLD.status = 'done' AND NEW.status <> 'done' THEN 'replayed'
            WHEN NEW.status = 'done' THEN 'changed_while_processed'
            WHEN OLD.locked_by IS NULL THEN 'claim'
            WHEN NEW.locked_by IS NOT NULL THEN 'takeover'
            WHEN NEW.attempts < OLD.attempts THEN 'release'
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
DROP TRIGGER IF EXISTS chaos_audit_opened ON event_deliveries;
CREATE TRIGGER chaos_audit_opened AFTER INSERT ON event_deliveries FOR EACH ROW
    EXECUTE FUNCTION chaos_audit_delivery();
DROP TRIGGER IF EXISTS chaos_audit_delivery ON event_deliveries;
CREATE TRIGGER chaos_audit_delivery AFTER UPDATE ON event_deliveries FOR EACH ROW
    WHEN (OLD.locked_by IS DISTINCT FROM NEW.locked_by OR OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION chaos_audit_delivery();
"""

_START = """
INSERT INTO chaos_journal (event_id, handler, worker, token, attempt, started_at)
VALUES ($1, $2, $3, $4, $5, clock_timestamp())
RETURNING id
"""
_END = "UPDATE chaos_journal SET finished_at = clock_timestamp(), status = $2 WHERE id = $1"
_EFFECT = text(
    "INSERT INTO chaos_effects (event_id, handler, journal_id, token) "
    "VALUES (:event_id, :handler, :journal_id, :token)"
)

registry = Registry()
fanout = Registry()
fanout_without_flaky = Registry()


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


def _inject(faults: Mapping[str, Any], attempt: int) -> None:
    if faults.get("permanent"):
        raise PermanentError("injected permanent failure")
    if faults.get("always_fail"):
        raise InjectedFailure(f"injected failure (every attempt; this is attempt {attempt})")
    if attempt <= int(faults.get("fail_first", 0)):
        raise InjectedFailure(f"injected failure on attempt {attempt}")


async def _handle(
    event: Event, ctx: HandlerContext, handler: str, faults: Mapping[str, Any], work_ms: float
) -> None:
    """Journal the call, write the effect (transactional), pretend to work, fail as told."""
    journal_id = await _record_start(event, ctx, handler)
    try:
        if ctx.transactional:
            await ctx.connection.execute(
                _EFFECT,
                {
                    "event_id": event.id,
                    "handler": handler,
                    "journal_id": journal_id,
                    "token": event.locked_by,
                },
            )
        await asyncio.sleep(work_ms / 1000)
        _inject(faults, ctx.attempt)
    except Exception:
        # Best effort: the handler's own exception is what must reach eventproc.
        with contextlib.suppress(Exception):
            await _record_end(journal_id, "failed")
        raise
    # Recorded before returning: a success write-back always has its "ok" row.
    await _record_end(journal_id, "ok")


def _work(event: Event, key: str = "work_ms") -> float:
    return float(event.payload.get(key, 0))


# -- the default workload: one subscription per type ----------------------------


@registry.handler(PLAIN, name="plain", description="journals itself; may fail as the payload says")
async def plain(event: Event, ctx: HandlerContext) -> None:
    await _handle(event, ctx, "plain", event.payload, _work(event))


@registry.handler(
    TRANSACTIONAL,
    name="tx",
    description="writes one side effect in the event's transaction; may fail after it",
    transactional=True,
)
async def transactional(event: Event, ctx: HandlerContext) -> None:
    await _handle(event, ctx, "tx", event.payload, _work(event))


# -- the fan-out workload: three subscriptions of one type ----------------------


async def fast(event: Event, ctx: HandlerContext) -> None:
    """Healthy: never fails, works 0-5 ms."""
    await _handle(event, ctx, "fast", {}, _work(event))


async def flaky(event: Event, ctx: HandlerContext) -> None:
    """Transactional; fails as ``payload.flaky`` says (after writing its effect)."""
    await _handle(event, ctx, "flaky", event.payload.get("flaky", {}), _work(event))


async def slow(event: Event, ctx: HandlerContext) -> None:
    """Healthy but slow: sleeps ``payload.slow_ms``."""
    await _handle(event, ctx, "slow", {}, _work(event, "slow_ms"))


def _subscribe(target: Registry, *, with_flaky: bool) -> None:
    target.register(FANOUT, fast, name="fast", description="healthy")
    if with_flaky:
        target.register(
            FANOUT,
            flaky,
            name="flaky",
            description="transactional; fails about 20 % of the time",
            transactional=True,
        )
    target.register(FANOUT, slow, name="slow", description="healthy, sleeps a little")


_subscribe(fanout, with_flaky=True)
_subscribe(fanout_without_flaky, with_flaky=False)


async def _ready(connection: Any) -> None:
    """Runs in each worker's start-up migration, right before its processing loop."""
    name = os.environ.get("WORKER_ID")
    if name:
        await connection.execute(
            text("INSERT INTO chaos_workers (name, pid) VALUES (:name, :pid)"),
            {"name": name, "pid": os.getpid()},
        )


REGISTRIES = {"registry": registry, "fanout": fanout, "fanout_without_flaky": fanout_without_flaky}
for _registry in REGISTRIES.values():
    _registry.on_migrate(_ready)


def subscribers(registry_name: str, event_type: str) -> tuple[str, ...]:
    """The names of the subscriptions of ``registry_name`` that take ``event_type``."""
    return tuple(entry.name for entry in REGISTRIES[registry_name] if entry.takes(event_type))
