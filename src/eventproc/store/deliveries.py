"""Deliveries: opening, claiming and writing back the work of one subscription on one event.

An event handled by one subscription runs on its own row, as it always
did; its work moves to ``event_deliveries`` when it fans out to several,
when its single subscription must wait behind an earlier delivery of its
aggregate, or when that subscription fails (its retries and dead letter are
then the delivery's). The functions here name the queries and read their
rows; ``Store`` calls them.
"""

import uuid
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from eventproc.event import Event
from eventproc.store import args
from eventproc.store.driver import Driver
from eventproc.store.protocol import ClaimPolicy, Kind, Lease, Plan, WriteBack
from eventproc.store.rows import as_delivery, uuid_of

# A failure moved onto its delivery holds that lease only until the same
# write-back writes it, a statement later.
MOVE_LEASE_SECONDS = 30.0


def claim_query(policy: ClaimPolicy) -> str:
    if not policy.ordered:
        return "delivery_claim"
    return (
        "delivery_claim_ordered_blocking"
        if policy.block_on_dead_letters
        else ("delivery_claim_ordered")
    )


async def open_plans(driver: Driver, plans: Sequence[Plan], lease_seconds: float) -> list[Event]:
    """Move claimed events onto deliveries; the ones to run now come back leased."""
    if not plans:
        return []
    rows = await driver.fetch("delivery_open", args.delivery_open(plans, lease_seconds))
    return [as_delivery(driver.event(row), row) for row in rows]


async def claim(driver: Driver, token: str, policy: ClaimPolicy) -> list[Event]:
    """Due deliveries; ordered, with the runs behind each head when the claim has room."""
    rows = await driver.fetch(claim_query(policy), args.delivery_claim(token, policy))
    claimed = [as_delivery(driver.event(row), row) for row in rows]
    heads = [item for item in claimed if item.aggregate_id is not None]
    taken_over = [head for head in heads if head.attempts > 1] if policy.ordered else []
    if taken_over:
        # A head claimed again may have been part of a run whose worker
        # stalled past its lease: its later deliveries must not go on.
        await driver.fetch(
            "delivery_revoke_stale_runs",
            [[head.aggregate_id for head in taken_over], [h.handler for h in taken_over], token],
        )
    # Never more than the claim's room: each head's run gets an equal share.
    per_head = (policy.limit - len(claimed)) // len(heads) if heads else 0
    if policy.ordered and policy.follow and per_head > 0:
        followers = await driver.fetch(
            "delivery_claim_followers",
            [
                [head.id for head in heads],
                [head.handler for head in heads],
                per_head,
                token,
                policy.lease_seconds,
            ],
        )
        claimed += [as_delivery(driver.event(row), row) for row in followers]
    return claimed


async def move_failures(driver: Driver, batch: Sequence[WriteBack]) -> list[WriteBack]:
    """Failures of handlers on events' own rows, moved onto their deliveries.

    The event's lease becomes the delivery's (same token); a failure whose
    event lease was lost meanwhile moves nothing and is dropped.
    """
    plans = [
        Plan(item.lease, item.handler or "", True, max(item.attempt - 1, 0), give_back=False)
        for item in batch
    ]
    opened = await open_plans(driver, plans, MOVE_LEASE_SECONDS)
    keys = {(event.id, event.handler) for event in opened}
    moved = []
    for item in batch:
        if (item.lease.event_id, item.handler) in keys:
            lease = Lease(item.lease.event_id, item.lease.token, item.handler)
            moved.append(item._replace(lease=lease))
    return moved


async def write_back(
    driver: Driver,
    batch: Sequence[WriteBack],
    worker: str,
    *,
    in_order: bool,
    beside: Sequence[WriteBack] = (),
) -> set[tuple[uuid.UUID, str]]:
    """Write deliveries' results; the (event id, handler) of each one written."""
    if not batch:
        return set()
    rows = await driver.fetch(
        "delivery_write_back",
        args.delivery_write_back(batch, worker, in_order=in_order, beside=beside),
        durable=any(item.kind is not Kind.SUCCEEDED for item in batch),
    )
    return {(uuid_of(row[0]), str(row[1])) for row in rows}


async def complete_in(
    driver: Driver, conn: AsyncConnection, lease: Lease, worker: str, *, in_order: bool
) -> bool:
    """A transactional handler's delivery, completed inside its own transaction."""
    done = args.delivery_write_back(
        [WriteBack.succeeded(lease, lease.handler)], worker, in_order=in_order
    )
    return bool(await driver.run(conn, "delivery_write_back", done))


async def hold(driver: Driver, conn: AsyncConnection, lease: Lease) -> bool:
    return bool(
        await driver.run(conn, "delivery_hold", [lease.event_id, lease.handler, lease.token])
    )


async def release(driver: Driver, leases: Sequence[Lease]) -> int:
    if not leases:
        return 0
    return len(await driver.fetch("delivery_release", args.delivery_leases(leases)))


async def renew(driver: Driver, leases: Sequence[Lease], lease_seconds: float) -> set[uuid.UUID]:
    if not leases:
        return set()
    rows = await driver.fetch("delivery_renew", [*args.delivery_leases(leases), lease_seconds])
    return {uuid_of(row[0]) for row in rows}


async def replay(driver: Driver, event_id: uuid.UUID, handler: str) -> bool:
    return bool(await driver.fetch("delivery_replay", [event_id, handler], durable=True))


async def add(driver: Driver, event_ids: Sequence[uuid.UUID], handler: str) -> int:
    if not event_ids:
        return 0
    rows = await driver.fetch("delivery_add", [list(event_ids), handler], durable=True)
    return len(rows)
