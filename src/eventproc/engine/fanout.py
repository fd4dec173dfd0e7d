"""Routing a claim: which subscriptions take each claimed event, and where each runs.

An event that one subscription takes, and that nothing holds back, runs on
its own row as before: no delivery row, no extra statement. One that several
take, or whose single subscription must wait behind an earlier delivery of
its aggregate (ORDERING=aggregate), moves onto deliveries
(``Storage.delivery_open``): one per subscription, leased at once unless it
must wait. One that none takes runs nowhere and is closed ``skipped``. A
paused subscription (admin API) is held like a blocked one: its delivery
waits, and the delivery claims skip it until it is resumed.
"""

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from eventproc.event import Event
from eventproc.store.protocol import Lease, Plan

Route = Callable[[Event], Sequence[str]]  # an event -> the names of the subscriptions taking it


@dataclass(slots=True)
class Routed:
    """A claim, routed: what runs on events' rows now, and the deliveries to open."""

    on_rows: list[Event] = field(default_factory=list)
    plans: list[Plan] = field(default_factory=list)


def route_claim(
    claimed: Sequence[Event], route: Route, paused: frozenset[str] = frozenset()
) -> Routed:
    """Route each claimed event, oldest first within its aggregate.

    An aggregate's events stay on their rows only when one subscription
    takes all of this claim's events of it: then they are one run, handled
    and written back in order, and the in-order test of their completions
    (an earlier event of the aggregate still on its row) holds them to it.
    Where several subscriptions take them, each goes onto deliveries, whose
    order is kept per (handler, aggregate). A subscription that must wait on
    an aggregate (``Event.blocked``) waits for the rest of the claim's
    events of it too: a run's head that waits holds back its followers.
    ``paused`` subscriptions wait the same way (nothing of them starts).
    """
    taken_by = [route(event) for event in claimed]
    only = None if paused else _one_taker(claimed, taken_by)
    if only is not None:  # the common case: every event stays on its row
        for event in claimed:
            event.routed_to(only)
        return Routed(on_rows=list(claimed))
    routed = Routed()
    names_of = {event.id: taking for event, taking in zip(claimed, taken_by, strict=True)}
    shared = _shared_aggregates(claimed, names_of)
    waiting: dict[uuid.UUID, set[str]] = {}
    for event in sorted(claimed, key=_in_order):
        names = names_of[event.id]
        aggregate = event.aggregate_id
        held = event.blocked | paused if paused else event.blocked
        if aggregate is not None and aggregate in waiting:
            held = held | waiting[aggregate]
        if not names:
            routed.on_rows.append(event.routed_to(None))  # closed skipped by the dispatcher
        elif len(names) == 1 and names[0] not in held and aggregate not in shared:
            routed.on_rows.append(event.routed_to(names[0]))
        else:
            lease = Lease.of(event)
            spent = max(event.attempts - 1, 0)  # a retrying or expired event keeps its count
            routed.plans += [Plan(lease, name, name not in held, spent) for name in names]
            if aggregate is not None and held:
                waiting.setdefault(aggregate, set()).update(held & set(names))
    return routed


def _one_taker(claimed: Sequence[Event], names: list[Sequence[str]]) -> str | None:
    """The one subscription that takes every claimed event, none of them held; else None."""
    if not names or len(names[0]) != 1:
        return None
    first = names[0]
    for event, taking in zip(claimed, names, strict=True):
        if event.blocked or (taking is not first and taking != first):
            return None
    return first[0]


def _shared_aggregates(
    claimed: Sequence[Event], names_of: dict[uuid.UUID, Sequence[str]]
) -> set[uuid.UUID]:
    """The aggregates whose claimed events more than one subscription takes."""
    takers: dict[uuid.UUID, set[str]] = {}
    for event in claimed:
        if event.aggregate_id is not None:
            takers.setdefault(event.aggregate_id, set()).update(names_of[event.id])
    return {aggregate for aggregate, names in takers.items() if len(names) > 1}


def runs_of(items: Sequence[Event]) -> list[list[Event]]:
    """Group claimed work into runs: one per (handler, aggregate), in order; one per other item.

    Ordering is per subscription: a slow or failing handler's deliveries
    never hold back another's.
    """
    runs: list[list[Event]] = []
    by_key: dict[tuple[str | None, uuid.UUID], list[Event]] = {}
    for item in items:
        if item.aggregate_id is None:
            runs.append([item])
            continue
        key = (item.handler, item.aggregate_id)
        run = by_key.get(key)
        if run is None:
            by_key[key] = run = []
            runs.append(run)
        run.append(item)
    for run in by_key.values():
        if len(run) > 1:
            run.sort(key=_in_order)
    return runs


_EARLIEST = datetime.min.replace(tzinfo=UTC)


def _in_order(event: Event) -> tuple[datetime, uuid.UUID]:
    return (event.created_at or _EARLIEST, event.id)


def in_claim_order(items: list[Event]) -> list[Event]:
    """Priority first, then oldest, as a claim returns them."""
    return sorted(items, key=lambda e: (-e.priority, e.created_at or _EARLIEST, e.id))
