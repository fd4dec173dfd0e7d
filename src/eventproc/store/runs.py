"""Runs: the events right behind a claimed aggregate head, claimed with it.

In ordered mode a claim's spare room is filled with the due events that
follow each claimed head, so a burst on one aggregate drains a run per round
trip instead of one event. Nobody else can claim them: the head we hold
(pending) gates them. The statements are named queries; cutting the runs
(contiguous, stopping at the first event that is not ready or is locked
elsewhere) is done here, once for both backends.
"""

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.event import Event
from eventproc.store.driver import Driver, Row
from eventproc.store.protocol import ClaimPolicy
from eventproc.store.rows import uuid_of, with_blocked


def heads_to_extend(claimed: Sequence[Event], policy: ClaimPolicy) -> list[Event]:
    """The claimed aggregate heads whose runs need work after the claim.

    Only in ordered mode, and only when a head was taken over (its stalled
    run is revoked) or the batch has room for followers.
    """
    if not policy.ordered:
        return []
    heads = [event for event in claimed if event.aggregate_id is not None]
    follow = policy.follow and len(claimed) < policy.limit
    if heads and (follow or any(head.attempts > 1 for head in heads)):
        return heads
    return []


async def extend_runs(
    driver: Driver,
    conn: AsyncConnection,
    claimed: list[Event],
    heads: Sequence[Event],
    token: str,
    policy: ClaimPolicy,
) -> None:
    """Revoke stalled runs behind ``heads``, then add followers to ``claimed``.

    A head claimed again (attempts > 1) may have been part of a run whose
    worker stalled past its lease; that worker's later events of the
    aggregate must not run ahead of the head, so their lease is cleared: the
    stalled worker finds it lost before it handles them.
    """
    taken_over = [head.aggregate_id for head in heads if head.attempts > 1]
    if taken_over:
        await driver.run(conn, "event_revoke_stale_runs", [taken_over, token])
    spare = policy.limit - len(claimed)
    if policy.follow and spare > 0:
        claimed.extend(await _claim_followers(driver, conn, heads, token, policy, spare))


async def _claim_followers(
    driver: Driver,
    conn: AsyncConnection,
    heads: Sequence[Event],
    token: str,
    policy: ClaimPolicy,
    spare: int,
) -> list[Event]:
    per_head = max(spare // len(heads), 1)
    rows = await driver.run(
        conn,
        "event_runs_behind",
        [[head.id for head in heads], per_head + 1, policy.block_on_dead_letters],
    )
    runs = runs_behind(heads, rows)
    chosen = [event_id for run in runs for event_id in run]
    if not chosen:
        return []
    locked = await driver.run(conn, "event_lock_available", [chosen])
    contiguous = contiguous_prefixes(runs, {uuid_of(row[0]) for row in locked})
    if not contiguous:
        return []
    leased = await driver.run(
        conn,
        "event_claim_followers",
        [contiguous, token, policy.lease_seconds, policy.block_on_dead_letters],
    )
    return [with_blocked(driver.event(row), row) for row in leased]


def runs_behind(heads: Sequence[Event], rows: Sequence[Row]) -> list[list[uuid.UUID]]:
    """Each head's run from ``event_runs_behind`` rows (head, id, processed, ready).

    The head itself must come first among its aggregate's events on their
    own rows (routed ones wait on their deliveries, per handler): a run is
    only the events directly behind it, and stops at the first one that is
    processed (a dead letter, in block mode) or not ready.
    """
    by_head: dict[uuid.UUID, list[Row]] = {}
    for row in rows:
        by_head.setdefault(uuid_of(row[0]), []).append(row)
    runs: list[list[uuid.UUID]] = []
    for head in heads:
        behind = by_head.get(head.id, [])
        if not behind or uuid_of(behind[0][1]) != head.id:
            continue
        run: list[uuid.UUID] = []
        for _head, event_id, processed, ready in behind[1:]:
            if processed or not ready:
                break
            run.append(uuid_of(event_id))
        if run:
            runs.append(run)
    return runs


def contiguous_prefixes(
    runs: Sequence[list[uuid.UUID]], lockable: set[uuid.UUID]
) -> list[uuid.UUID]:
    """Each run cut at its first event that could not be locked: a run stays contiguous."""
    contiguous: list[uuid.UUID] = []
    for run in runs:
        for event_id in run:
            if event_id not in lockable:
                break
            contiguous.append(event_id)
    return contiguous
