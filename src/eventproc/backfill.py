"""Backfill (issue 14, point 6): apply a newly added subscription to past events.

A subscription sees the events published after it was registered; the
ones before it never had its delivery. ``backfill`` pages through the
events of the subscription's types created in a time window, routes each
through that subscription alone (its types and filter, and an optional
narrower filter), and counts what it finds; for real, it gives the matching
ones a delivery of it, batch by batch. The deliveries then run like any
other: processors claim them, and only that subscription runs.

Counting on delivery rows, it cannot see an event that this subscription
handled alone on the event's own row (a single-subscriber event gets no
delivery row): end ``until`` at the moment the subscription went live, so
that events it has handled since are left out.
"""

import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from eventproc.errors import RegistryError
from eventproc.registry import Handler, Registry
from eventproc.routing import Matcher, compile, envelope_of
from eventproc.store import Store, reads
from eventproc.store.errors import idempotent

DEFAULT_BATCH_SIZE = 500

# The reads are not Store methods (store.py is at its size limit): backfill
# calls them with the store's driver, so they get the Store's error
# translation here (and, being reads, one retry on a dead connection).
_page = idempotent(reads.backfill_page)
_types_present = idempotent(reads.event_types_present)


@dataclass(frozen=True, slots=True)
class BackfillReport:
    """What a backfill found (a dry run) or did; the counts add up batch by batch.

    ``scanned``: events of the subscription's types in the window;
    ``matched``: of those, the ones its filter (and the extra one) takes,
    which are ``already_delivered`` (a delivery of it exists), ``pending``
    (still pending on their own row: routed, this subscription with them,
    when claimed) or ``would_create``. ``created``: deliveries actually
    created (0 in a dry run; less than ``would_create`` only when events
    changed meanwhile).
    """

    subscription: str
    since: datetime
    until: datetime | None
    dry_run: bool
    scanned: int = 0
    matched: int = 0
    already_delivered: int = 0
    pending: int = 0
    would_create: int = 0
    created: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (``eventproc backfill --json``)."""
        return {
            "subscription": self.subscription,
            "since": _iso(self.since),
            "until": None if self.until is None else _iso(self.until),
            "dry_run": self.dry_run,
            "scanned": self.scanned,
            "matched": self.matched,
            "already_delivered": self.already_delivered,
            "pending": self.pending,
            "would_create": self.would_create,
            "created": self.created,
            "batches": self.batches,
        }


OnBatch = Callable[[BackfillReport], None]


async def backfill(
    store: Store,
    registry: Registry,
    subscription_name: str,
    *,
    since: datetime,
    until: datetime | None = None,
    filter: Mapping[str, Any] | None = None,
    dry_run: bool = True,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: OnBatch | None = None,
) -> BackfillReport:
    """Give past events (created in [since, until)) the subscription's delivery.

    A dry run (the default) only counts. Each batch is at most
    ``batch_size`` events of one type; ``on_batch`` gets the running totals
    after each. Raises ``RegistryError`` for an unknown subscription,
    ``PatternError`` for a bad ``filter`` and ``ValueError`` for a bad
    window or batch size, before touching the database. Naive times are UTC.
    """
    handler = subscription(registry, subscription_name)
    narrower = None if filter is None else compile(filter)
    since, until = _window(since, until)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    report = BackfillReport(handler.name, since, until, dry_run)
    for event_type in await _types(store, handler):
        after: tuple[datetime, uuid.UUID] | None = None
        while True:
            rows = await _page(
                store.driver,
                event_type,
                handler.name,
                since=since,
                until=until,
                after=after,
                limit=batch_size,
            )
            if not rows:
                break
            report = await _batch(store, report, rows, handler, narrower)
            if on_batch is not None:
                on_batch(report)
            if len(rows) < batch_size:
                break
            last = rows[-1].event
            assert last.created_at is not None  # the window's bound excludes NULL
            after = (last.created_at, last.id)
    return report


def subscription(registry: Registry, name: str) -> Handler:
    """The subscription named ``name``, or one line naming the ones there are."""
    found = registry.subscription(name)
    if found is None:
        names = ", ".join(entry.name for entry in registry) or "none"
        raise RegistryError(f"no subscription named {name!r} (the registry has: {names})")
    return found


async def _types(store: Store, handler: Handler) -> list[str]:
    """The exact event types to page through: the subscribed ones, or those present."""
    patterns = handler.route.types.patterns
    if not any(pattern.endswith("*") for pattern in patterns):
        return sorted(patterns)
    return [name for name in await _types_present(store.driver) if handler.takes(name)]


async def _batch(
    store: Store,
    report: BackfillReport,
    rows: Sequence[reads.BackfillRow],
    handler: Handler,
    narrower: Matcher | None,
) -> BackfillReport:
    """Count one page and, for real, add the deliveries it lacks (one statement)."""
    matched = delivered = pending = 0
    to_create: list[uuid.UUID] = []
    for row in rows:
        envelope = envelope_of(row.event)
        if not handler.route.matches(envelope):
            continue
        if narrower is not None and not narrower.matches(envelope):
            continue
        matched += 1
        if row.delivered:
            delivered += 1
        elif row.unrouted:
            pending += 1
        else:
            to_create.append(row.event.id)
    created = 0
    if not report.dry_run and to_create:
        created = await store.delivery_add(to_create, handler.name)
    return replace(
        report,
        scanned=report.scanned + len(rows),
        matched=report.matched + matched,
        already_delivered=report.already_delivered + delivered,
        pending=report.pending + pending,
        would_create=report.would_create + len(to_create),
        created=report.created + created,
        batches=report.batches + 1,
    )


def _window(since: datetime, until: datetime | None) -> tuple[datetime, datetime | None]:
    since = _utc(since)
    if until is None:
        return since, None
    until = _utc(until)
    if until <= since:
        raise ValueError(f"until ({_iso(until)}) must be after since ({_iso(since)})")
    return since, until


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def report_lines(report: BackfillReport, handler: Handler) -> list[str]:
    """The report as ``eventproc backfill`` prints it."""
    shown = f"types {list(handler.types)}"
    if handler.filter is not None:
        shown += f", filter {json.dumps(handler.filter, default=str)}"
    until = "now" if report.until is None else _iso(report.until)
    batches = f"{report.batches} batch" + ("" if report.batches == 1 else "es")
    counts = (
        ("scanned", report.scanned, "events of its types in the window"),
        ("matched", report.matched, "taken by its filter"),
        ("already delivered", report.already_delivered, "have a delivery of it"),
        ("pending", report.pending, "pending, routed when claimed"),
        ("would create", report.would_create, ""),
    )
    lines = [
        f"backfill of {report.subscription} ({shown})",
        f"events created from {_iso(report.since)} to {until}, in {batches}",
    ]
    lines += [f"  {name:<18} {count:>9}  {note}".rstrip() for name, count, note in counts]
    if report.dry_run:
        lines.append("nothing written; add --execute to create them")
    else:
        lines.append(f"created {report.created} deliveries")
    return lines


def progress_line(report: BackfillReport, previous: BackfillReport | None) -> str:
    """One batch of a real run: what it scanned and created, and the totals so far."""
    scanned = report.scanned - (previous.scanned if previous else 0)
    created = report.created - (previous.created if previous else 0)
    return (
        f"batch {report.batches}: {scanned} scanned, {created} created "
        f"({report.scanned} scanned, {report.created} created so far)"
    )
