"""Arguments of the named queries, built once for both backends.

Positions follow the headers of store/queries/*.sql ($N on PostgreSQL, ?N
on SQLite). Lists are one array per column; a driver encodes them for its
database (asyncpg arrays; JSON arrays on SQLite).
"""

from collections.abc import Sequence
from typing import Any

from eventproc.event import NewEvent
from eventproc.store.protocol import ClaimPolicy, Kind, Lease, Plan, WriteBack

ERROR_CHARS = 2000  # of an error message kept in metadata.last_error
CLAIM_WINDOW = 100  # available events an ordered claim looks at (see Store.event_claim_many)


def claim_window(limit: int) -> int:
    """Available events an ordered claim of ``limit`` tests against the aggregate gate."""
    return max(CLAIM_WINDOW, limit * 5)


def _by_id(items: Sequence[WriteBack]) -> list[WriteBack]:
    # Sorted by id so that concurrent fenced updates of one worker (renewal,
    # completion) lock shared rows in the same order more often; the plan
    # decides the real order, so deadlocks still happen under load and are
    # retried (40P01).
    return sorted(items, key=lambda item: item.lease.event_id)


def successes(batch: Sequence[WriteBack]) -> list[Any]:
    """ids, tokens, outcomes and handlers of the successes in ``batch``, sorted once.

    The handlers go last in each query ($9 of the claims, $19 of the
    write-back), so callers place the first three and the fourth apart.
    """
    done = _by_id([item for item in batch if item.closing is not None])
    return [
        [item.lease.event_id for item in done],
        [item.lease.token for item in done],
        [item.closing.value for item in done if item.closing is not None],
        [item.handler for item in done],
    ]


def claim(
    token: str, policy: ClaimPolicy, worker: str, completing: Sequence[WriteBack] = ()
) -> list[Any]:
    args: list[Any] = [token, policy.lease_seconds, policy.limit, claim_window(policy.limit)]
    if completing:
        *done, handlers = successes(completing)
        args += [*done, worker, handlers]
    return args


def delivery_claim(token: str, policy: ClaimPolicy) -> list[Any]:
    return [token, policy.lease_seconds, policy.limit, claim_window(policy.limit)]


def write_back(batch: Sequence[WriteBack], worker: str, *, in_order: bool) -> list[Any]:
    retries = _by_id([item for item in batch if item.rescheduling])
    letters = _by_id([item for item in batch if item.kind is Kind.DEAD_LETTERED])
    *done, handlers = successes(batch)
    return [
        *done,
        worker,
        in_order,
        [item.lease.event_id for item in retries],
        [item.lease.token for item in retries],
        [item.delay_seconds for item in retries],
        [(item.error or "")[:ERROR_CHARS] for item in retries],
        [item.attempt for item in retries],
        [item.kind is Kind.RETRY for item in retries],
        [item.lease.event_id for item in letters],
        [item.lease.token for item in letters],
        [item.error or "" for item in letters],
        [item.attempt for item in letters],
        [item.detail for item in letters],
        [item.handler for item in letters],
        [item.fingerprint for item in letters],
        handlers,
    ]


def delivery_open(plans: Sequence[Plan], lease_seconds: float) -> list[Any]:
    ordered = sorted(plans, key=lambda plan: (plan.lease.event_id, plan.handler))
    return [
        [plan.lease.event_id for plan in ordered],
        [plan.lease.token for plan in ordered],
        [plan.handler for plan in ordered],
        [plan.run_now for plan in ordered],
        [plan.spent for plan in ordered],
        lease_seconds,
        [plan.give_back for plan in ordered],
    ]


_DELIVERY_KINDS = {
    Kind.SUCCEEDED: "succeeded",
    Kind.RETRY: "retry",
    Kind.RESCHEDULED: "rescheduled",
    Kind.DEAD_LETTERED: "dead_lettered",
}


def delivery_write_back(
    batch: Sequence[WriteBack], worker: str, *, in_order: bool, beside: Sequence[WriteBack] = ()
) -> list[Any]:
    """``batch``: results of deliveries; ``beside``: the same flush's results on events' rows."""
    items = sorted(batch, key=lambda item: (item.lease.event_id, item.lease.handler or ""))
    rows = _by_id([item for item in beside if item.closing is not None])
    return [
        [item.lease.event_id for item in items],
        [item.lease.handler for item in items],
        [item.lease.token for item in items],
        [_DELIVERY_KINDS[item.kind] for item in items],
        [item.delay_seconds for item in items],
        [item.error for item in items],
        [item.attempt for item in items],
        [item.detail for item in items],
        [item.fingerprint for item in items],
        worker,
        in_order,
        [item.lease.event_id for item in rows],
        [item.lease.token for item in rows],
    ]


def delivery_leases(items: Sequence[Lease]) -> list[Any]:
    ordered = sorted(items, key=lambda lease: (lease.event_id, lease.handler or ""))
    return [
        [lease.event_id for lease in ordered],
        [lease.handler for lease in ordered],
        [lease.token for lease in ordered],
    ]


def leases(items: Sequence[Lease]) -> list[Any]:
    ordered = sorted(items, key=lambda lease: lease.event_id)
    return [[lease.event_id for lease in ordered], [lease.token for lease in ordered]]


def insert(new_events: Sequence[NewEvent], dumps: Any) -> list[Any]:
    """One list per column; payload and metadata as JSON text (``dumps``)."""
    return [
        [e.id for e in new_events],
        [e.event_type for e in new_events],
        [e.aggregate_id for e in new_events],
        [e.aggregate_type for e in new_events],
        [dumps(e.payload) for e in new_events],
        [None if e.metadata is None else dumps(e.metadata) for e in new_events],
        [e.version for e in new_events],
        [e.created_by for e in new_events],
        [e.priority for e in new_events],
    ]
