"""What a chaos run proves, computed from the database once every worker has stopped.

Every invariant is checked per *delivery*: one (event, handler) pair, the
work of one subscription on one event, whether it ran on the event's own row
(an event taken by one subscription, as before the delivery model) or on an
``event_deliveries`` row (an event taken by several subscriptions, or a
single one that failed or had to wait). Vocabulary (see README.md for the
reasoning):

* a *handling* is one handler call: one ``chaos_journal`` row, keyed by its
  event, its handler and the claim token it ran under (for a delivery, the
  delivery's lease: ``event_deliveries.locked_by``);
* a handling *committed* when the write-back fenced on its claim (success,
  retry, dead letter or release) changed a row: ``chaos_transitions`` has a
  write-back of that token on the event's row (work on the row) or on that
  handler's delivery row. Moving an event onto deliveries is not a
  write-back (``routed``); handlings of a worker that was killed, or whose
  lease expired and was taken over (a stopped worker), committed nothing:
  their results were fenced out;
* a handling's *end* is its recorded ``finished_at``, or, when that could
  not be written (database down), the moment its write-back committed, which
  came after the handler returned;
* a delivery's *final handling* is the one whose claim wrote its final
  outcome (on the event's row, or on its delivery row);
* an event is *closed* when ``events.processed`` turned true: on its row by
  its only handling, or by the write-back that finished its last delivery.
"""

from __future__ import annotations

import bisect
import itertools
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg
from chaos_handlers import TRANSACTIONAL_HANDLERS
from chaos_workload import Planned, summary

FINAL_KINDS = {"succeeded", "dead_lettered", "skipped", "processed", "partial", "done"}
WRITE_BACK_KINDS = FINAL_KINDS | {"retry", "release"}
EXAMPLES = 5

Key = tuple[uuid.UUID, str]  # one delivery: (event id, handler)


@dataclass(frozen=True)
class EventRow:
    id: uuid.UUID
    aggregate_id: uuid.UUID | None
    processed: bool
    outcome: str | None
    attempts: int
    created_at: float
    routed: bool  # routed_at is set: its work moved onto deliveries
    deliveries_open: int | None


@dataclass(frozen=True)
class DeliveryRow:
    event_id: uuid.UUID
    handler: str
    status: str
    outcome: str | None
    attempts: int


@dataclass(frozen=True)
class Handling:
    event_id: uuid.UUID
    handler: str
    token: str
    worker: str
    attempt: int
    started: float
    finished: float | None
    status: str | None

    @property
    def key(self) -> Key:
        return (self.event_id, self.handler)


@dataclass(frozen=True)
class Transition:
    event_id: uuid.UUID
    handler: str | None  # None: the events row; else that handler's delivery row
    kind: str
    old_token: str | None
    new_token: str | None
    old_locked_until: float | None
    xid: int
    at: float


@dataclass
class Observed:
    """Everything the checks read, fetched in one go."""

    events: dict[uuid.UUID, EventRow]
    deliveries: dict[Key, DeliveryRow]
    handlings: list[Handling]
    transitions: list[Transition]
    effects: list[tuple[uuid.UUID, str, str]]  # (event_id, handler, token) of each effect
    dead_letters: list[tuple[uuid.UUID, str | None, str]]  # (event_id, handler, error_message)


def _ts(value: Any) -> float | None:
    return None if value is None else float(value.timestamp())


def _when(moment: float) -> str:
    """A database time as it reads in the dumps (UTC, microseconds)."""
    if moment in (float("inf"), float("-inf")):
        return "never"
    return datetime.fromtimestamp(moment, UTC).strftime("%H:%M:%S.%f")


async def fetch(url: str) -> Observed:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute("SET statement_timeout = '120s'")
        events, deliveries = await _rows(conn)
        handlings, transitions = await _history(conn)
        effects = [
            (row["event_id"], row["handler"], row["token"])
            for row in await conn.fetch("SELECT event_id, handler, token FROM chaos_effects")
        ]
        dead_letters = [
            (row["event_id"], row["handler"], row["error_message"])
            for row in await conn.fetch(
                "SELECT event_id, handler, error_message FROM event_dead_letters"
            )
        ]
    finally:
        await conn.close()
    return Observed(events, deliveries, handlings, transitions, effects, dead_letters)


async def _rows(
    conn: asyncpg.Connection,
) -> tuple[dict[uuid.UUID, EventRow], dict[Key, DeliveryRow]]:
    """eventproc's own tables as they ended: events and event_deliveries."""
    events = {
        row["id"]: EventRow(
            row["id"],
            row["aggregate_id"],
            bool(row["processed"]),
            row["outcome"],
            row["attempts"],
            row["created_at"].timestamp(),
            row["routed_at"] is not None,
            row["deliveries_open"],
        )
        for row in await conn.fetch(
            "SELECT id, aggregate_id, processed, outcome, attempts, created_at, routed_at, "
            "deliveries_open FROM events"
        )
    }
    deliveries = {
        (row["event_id"], row["handler"]): DeliveryRow(
            row["event_id"], row["handler"], row["status"], row["outcome"], row["attempts"]
        )
        for row in await conn.fetch(
            "SELECT event_id, handler, status, outcome, attempts FROM event_deliveries"
        )
    }
    return events, deliveries


async def _history(conn: asyncpg.Connection) -> tuple[list[Handling], list[Transition]]:
    """What the harness recorded on the way: the journal and the triggers' rows."""
    handlings = [
        Handling(
            row["event_id"],
            row["handler"],
            row["token"],
            row["worker"],
            row["attempt"],
            row["started_at"].timestamp(),
            _ts(row["finished_at"]),
            row["status"],
        )
        for row in await conn.fetch(
            "SELECT event_id, handler, token, worker, attempt, started_at, finished_at, "
            "status FROM chaos_journal ORDER BY id"
        )
    ]
    transitions = [
        Transition(
            row["event_id"],
            row["handler"],
            row["kind"],
            row["old_token"],
            row["new_token"],
            _ts(row["old_locked_until"]),
            row["xid"],
            row["at"].timestamp(),
        )
        for row in await conn.fetch(
            "SELECT event_id, handler, kind, old_token, new_token, old_locked_until, xid, at "
            "FROM chaos_transitions ORDER BY id"
        )
    ]
    return handlings, transitions


@dataclass(frozen=True)
class Check:
    key: str
    label: str
    value: int
    enforced: bool  # must be 0

    @property
    def ok(self) -> bool:
        return not self.enforced or self.value == 0


@dataclass
class Report:
    outcomes: dict[str, int] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    activity: dict[str, int] = field(default_factory=dict)
    throughput: dict[str, Any] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def violations(self) -> dict[str, int]:
        return {check.key: check.value for check in self.checks if not check.ok}

    @property
    def passed(self) -> bool:
        return not self.violations

    def check(self, key: str) -> Check:
        return next(check for check in self.checks if check.key == key)

    def as_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "outcomes": self.outcomes,
            "checks": [
                {"key": c.key, "label": c.label, "value": c.value, "must_be_zero": c.enforced}
                for c in self.checks
            ],
            "violations": self.violations,
            "activity": self.activity,
            "throughput": self.throughput,
            "examples": self.examples,
        }


class _Observations:
    """The observations indexed per delivery: its handlings, commits and finals."""

    def __init__(
        self, observed: Observed, planned: list[Planned], published: set[uuid.UUID]
    ) -> None:
        self.obs = observed
        self.planned = {p.event.id: p for p in planned}
        self.published = published
        # Every delivery the published events must get, with the outcome it must end with.
        self.expected: dict[Key, str] = {
            (event_id, handler): outcome
            for event_id in sorted(published)
            for handler, outcome in self.planned[event_id].deliveries.items()
        }
        self.handlings: dict[Key, list[Handling]] = defaultdict(list)
        self.by_token: dict[tuple[uuid.UUID, str], list[Handling]] = defaultdict(list)
        for handling in observed.handlings:
            self.handlings[handling.key].append(handling)
            self.by_token[(handling.event_id, handling.token)].append(handling)
        # (event, handler, claim token) -> the write-back fenced on that claim
        self.commits: dict[tuple[uuid.UUID, str | None, str], Transition] = {}
        self.finals: dict[Key, list[Transition]] = defaultdict(list)
        self.closes: dict[uuid.UUID, list[Transition]] = defaultdict(list)
        self.unattributed: list[Transition] = []  # closed on its row, but by whom?
        for transition in observed.transitions:
            self._index(transition)

    def _index(self, transition: Transition) -> None:
        event_id, token = transition.event_id, transition.old_token
        if transition.kind in WRITE_BACK_KINDS and token is not None:
            self.commits[(event_id, transition.handler, token)] = transition
        if transition.kind not in FINAL_KINDS:
            return
        if transition.handler is not None:
            self.finals[(event_id, transition.handler)].append(transition)
            return
        self.closes[event_id].append(transition)
        if token is None:
            return  # closed by the write-back of its last delivery
        handler = self._row_handler(event_id, token)
        if handler is None:
            self.unattributed.append(transition)
        else:
            self.finals[(event_id, handler)].append(transition)

    def _row_handler(self, event_id: uuid.UUID, token: str) -> str | None:
        """The subscription whose work on the event's row claim ``token`` finished."""
        ran = {h.handler for h in self.by_token.get((event_id, token), [])}
        if len(ran) == 1:
            return ran.pop()
        planned = self.planned.get(event_id)
        if not ran and planned is not None and len(planned.deliveries) == 1:
            return next(iter(planned.deliveries))  # finished without a handler call
        return None

    def commit_of(self, handling: Handling) -> Transition | None:
        """The write-back of this handling's claim: on its delivery row, else on the event's."""
        event_id, token = handling.event_id, handling.token
        found = self.commits.get((event_id, handling.handler, token))
        return found if found is not None else self.commits.get((event_id, None, token))

    def is_committed(self, handling: Handling) -> bool:
        return self.commit_of(handling) is not None

    def end(self, handling: Handling) -> float | None:
        if handling.finished is not None:
            return handling.finished
        transition = self.commit_of(handling)
        return transition.at if transition is not None else None

    def final_of(self, key: Key) -> Transition | None:
        finals = self.finals.get(key)
        return finals[0] if finals else None

    def final_end(self, key: Key) -> float:
        """When the handling that decided the delivery's outcome ended (inf if never)."""
        final = self.final_of(key)
        if final is None:
            return float("inf")
        for handling in self.handlings.get(key, []):
            if handling.token == final.old_token:
                end = self.end(handling)
                return end if end is not None else final.at
        return final.at  # dead-lettered without a handler call (claimed too often)

    def state(self, key: Key) -> str | None:
        """The outcome the delivery ended with; None while unfinished (or never made)."""
        row = self.obs.deliveries.get(key)
        if row is not None:
            return row.outcome if row.status == "done" else None
        event = self.obs.events.get(key[0])
        planned = self.planned.get(key[0])
        on_its_row = event is not None and event.processed and not event.routed
        if on_its_row and planned is not None and len(planned.deliveries) == 1:
            return event.outcome if event is not None else None
        return None


class _Analysis(_Observations):
    """One pass over the observations; each check adds its rows to the report."""

    def __init__(
        self, observed: Observed, planned: list[Planned], published: set[uuid.UUID]
    ) -> None:
        super().__init__(observed, planned, published)
        self.report = Report()

    def example(self, key: str, text: str) -> None:
        found = self.report.examples.setdefault(key, [])
        if len(found) < EXAMPLES:
            found.append(text)

    def add(self, key: str, label: str, value: int, *, enforced: bool = True) -> None:
        self.report.checks.append(Check(key, label, value, enforced))

    # -- outcomes ----------------------------------------------------------------

    def outcomes(self) -> None:
        out: Counter[str] = Counter()
        for key, expected in self.expected.items():
            out[self._delivery_verdict(key, expected)] += 1
        events: Counter[str] = Counter()
        for event_id in self.published:
            row = self.obs.events.get(event_id)
            if row is None or not row.processed:
                events["lost"] += 1
            else:
                events[row.outcome or "?"] += 1
        self.report.outcomes = {
            "planned": len(self.planned),
            "published": len(self.published),
            "deliveries_planned": len(self.expected),
            "succeeded": out["succeeded"],
            "dead_lettered_expected": out["dead_expected"],
            "dead_lettered_planned": sum(1 for o in self.expected.values() if o == "dead_lettered"),
            "dead_lettered_unexpected": out["dead_unexpected"],
            "lost": out["lost"],
            "events_lost": events["lost"],
            "events_succeeded": events["succeeded"],
            "events_partial": events["partial"],
            "events_dead_lettered": events["dead_lettered"],
            "injected_failures": sum(1 for p in self.planned.values() if p.injected),
        }
        not_published = len(self.planned) - len(self.published)
        self.add("not_published", "events not published within the time limit", not_published)
        self.add("lost", "lost deliveries (published, not finished at the end)", out["lost"])
        self.add(
            "dead_unexpected",
            "deliveries dead-lettered although only transient failures were injected",
            out["dead_unexpected"],
        )
        self.add(
            "wrong_outcome",
            "other wrong delivery outcomes (e.g. success of an always-failing one)",
            out["wrong_outcome"],
        )

    def _delivery_verdict(self, key: Key, expected: str) -> str:
        event_id, handler = key
        state = self.state(key)
        if state is None:
            row = self.obs.events.get(event_id)
            where = "event missing" if row is None else f"event processed={row.processed}"
            delivery = self.obs.deliveries.get(key)
            where += ", no delivery row" if delivery is None else f", delivery {delivery.status}"
            self.example("lost", f"{event_id} {handler}: {where}")
            return "lost"
        if state == expected:
            return "succeeded" if expected == "succeeded" else "dead_expected"
        if state == "dead_lettered":
            reason = next(
                (m for e, h, m in self.obs.dead_letters if e == event_id and h == handler), "?"
            )
            self.example("dead_unexpected", f"{event_id} {handler}: {reason[:200]}")
            return "dead_unexpected"
        self.example("wrong_outcome", f"{event_id} {handler}: {state}, {expected=}")
        return "wrong_outcome"

    # -- concurrency and order -----------------------------------------------------

    def overlapping(self) -> None:
        """Two handlings of one delivery running at the same time that both committed."""
        overlaps = 0
        for (event_id, handler), handlings in self.handlings.items():
            committed = sorted(
                (h for h in handlings if self.is_committed(h)), key=lambda h: h.started
            )
            latest_end, latest = float("-inf"), None
            for handling in committed:
                if handling.started < latest_end and latest is not None:
                    overlaps += 1
                    self.example(
                        "overlapping",
                        f"{event_id} {handler}: claim {handling.token} started "
                        f"{_when(handling.started)}, claim {latest.token} ran until "
                        f"{_when(latest_end)}",
                    )
                end = self.end(handling)
                end = float("inf") if end is None else end
                if end > latest_end:
                    latest_end, latest = end, handling
        self.add(
            "overlapping",
            "one (event, handler) handled twice at the same time (both handlings committed)",
            overlaps,
        )

    def ordering(self, ordered: bool) -> None:
        """Within a (handler, aggregate), no committed handling of a delivery may start
        before the final handling of that handler's delivery of the event published
        before it (same aggregate) ended. Different handlers are independent."""
        lanes: dict[tuple[str, uuid.UUID], list[EventRow]] = defaultdict(list)
        by_aggregate: dict[uuid.UUID, list[EventRow]] = defaultdict(list)
        for event_id in self.published:
            row = self.obs.events.get(event_id)
            if row is None or row.aggregate_id is None:
                continue
            by_aggregate[row.aggregate_id].append(row)
            for handler in self.planned[event_id].deliveries:
                lanes[(handler, row.aggregate_id)].append(row)
        out_of_order = sum(
            self._lane_out_of_order(handler, rows) for (handler, _), rows in lanes.items()
        )
        broken_publish_order = 0
        for rows in by_aggregate.values():
            rows.sort(key=lambda r: (r.created_at, r.id))
            seqs = [self.planned[r.id].seq for r in rows]
            broken_publish_order += seqs != sorted(seqs)
        label = "out-of-order handlings within a (handler, aggregate)"
        if not ordered:
            label += " (ORDERING=none: not required)"
        self.add("out_of_order", label, out_of_order, enforced=ordered)
        self.add(
            "publish_order",
            "aggregates whose (created_at, id) order differs from seq (harness check)",
            broken_publish_order,
        )

    def _lane_out_of_order(self, handler: str, rows: list[EventRow]) -> int:
        rows.sort(key=lambda r: (r.created_at, r.id))
        found = 0
        for previous, current in itertools.pairwise(rows):
            previous_end = self.final_end((previous.id, handler))
            for handling in self.handlings.get((current.id, handler), []):
                if not self.is_committed(handling) or handling.started >= previous_end:
                    continue
                found += 1
                final = self.final_of((previous.id, handler))
                self.example(
                    "out_of_order",
                    f"{handler} {current.id} (seq {self.planned[current.id].seq}) claim "
                    f"{handling.token} ({handling.worker}) started {_when(handling.started)}, "
                    f"{previous_end - handling.started:.3f}s before {previous.id}'s final "
                    f"handling (claim {final.old_token if final else None}) ended "
                    f"{_when(previous_end)}",
                )
        return found

    # -- transactional effects --------------------------------------------------------

    def side_effects(self) -> None:
        tokens: dict[Key, list[str]] = defaultdict(list)
        for event_id, handler, token in self.obs.effects:
            tokens[(event_id, handler)].append(token)
        duplicate = missing = stray = 0
        for key, found in tokens.items():
            if key not in self.expected or key[1] not in TRANSACTIONAL_HANDLERS:
                stray += len(found)
                self.example("stray_effects", f"{key[0]} {key[1]}: not a transactional delivery")
        for key in self.expected:
            if key[1] not in TRANSACTIONAL_HANDLERS:
                continue
            found = tokens.get(key, [])
            duplicate += max(len(found) - 1, 0)
            if len(found) > 1:
                self.example("duplicate_effects", f"{key[0]} {key[1]}: {len(found)} effects")
            final = self.final_of(key)
            if self.state(key) == "succeeded" and final is not None:
                missing += not found
                wrong = [token for token in found if token != final.old_token]
            else:
                wrong = found
            stray += len(wrong)
            if wrong:
                self.example(
                    "stray_effects",
                    f"{key[0]} {key[1]}: effects of claims {wrong}, outcome "
                    f"{self.state(key)} by claim {final.old_token if final else None}",
                )
        self.add(
            "duplicate_effects",
            "duplicate side effects of a transactional delivery",
            duplicate,
        )
        self.add(
            "missing_effects", "succeeded transactional deliveries without their effect", missing
        )
        self.add(
            "stray_effects",
            "side effects committed by a handling that did not decide the outcome",
            stray,
        )

    # -- the write-backs themselves ------------------------------------------------------

    def bookkeeping(self) -> None:
        """The write-backs themselves: fenced, once, and matching a handler success."""
        twice = sum(1 for finals in self.finals.values() if len(finals) > 1)
        twice += sum(1 for closes in self.closes.values() if len(closes) > 1)
        twice += sum(
            1 for t in self.obs.transitions if t.kind in ("replayed", "changed_while_processed")
        )
        self.add("outcome_twice", "outcomes written twice for one delivery or event", twice)
        self._unbacked_successes()
        stolen = [
            t
            for t in self.obs.transitions
            if t.kind == "takeover"
            and t.old_locked_until is not None
            and t.old_locked_until >= t.at
        ]
        for t in stolen:
            self.example(
                "stolen_lease", f"{t.event_id} {t.handler or 'row'}: {t.old_token} -> {t.new_token}"
            )
        self.add("stolen_lease", "leases taken over before they expired", len(stolen))
        self._dead_letter_rows()
        self._event_summaries()

    def _unbacked_successes(self) -> None:
        unbacked = 0
        for key in self.expected:
            if self.state(key) != "succeeded":
                continue
            final = self.final_of(key)
            token = final.old_token if final is not None else None
            if not any(h.token == token and h.status == "ok" for h in self.handlings.get(key, [])):
                unbacked += 1
                self.example("unbacked_success", f"{key[0]} {key[1]} claim {token}")
        self.add(
            "unbacked_success",
            "successes written for a claim whose handler did not succeed",
            unbacked,
        )

    def _dead_letter_rows(self) -> None:
        letters = Counter((event_id, handler) for event_id, handler, _ in self.obs.dead_letters)
        mismatch = 0
        for key in self.expected:
            wanted = 1 if self.state(key) == "dead_lettered" else 0
            found = letters.get(key, 0)
            if found != wanted:
                mismatch += 1
                self.example("dead_letter_rows", f"{key[0]} {key[1]}: {found} dead letters")
        for (event_id, handler), count in letters.items():
            if (event_id, handler) not in self.expected and event_id in self.published:
                mismatch += count
                self.example("dead_letter_rows", f"{event_id}: {count} naming {handler!r}")
        self.add(
            "dead_letter_rows",
            "dead-lettered deliveries without exactly one dead letter naming their handler",
            mismatch,
        )

    def _event_summaries(self) -> None:
        """events.processed and events.outcome summarise the deliveries (the seed's contract)."""
        wrong = len(self.unattributed)
        for t in self.unattributed:
            self.example("event_summary", f"{t.event_id}: closed on its row by claim {t.old_token}")
        for event_id in self.published:
            problem = self._summary_problem(event_id)
            if problem:
                wrong += 1
                self.example("event_summary", f"{event_id}: {problem}")
        self.add(
            "event_summary",
            "events whose processed flag, outcome or closing write-back disagrees with "
            "their deliveries",
            wrong,
        )

    def _summary_problem(self, event_id: uuid.UUID) -> str | None:
        row = self.obs.events.get(event_id)
        if row is None:
            return None  # counted as lost
        states = [self.state((event_id, h)) for h in self.planned[event_id].deliveries]
        finished = [s for s in states if s is not None]
        if row.processed != (len(finished) == len(states)):
            return f"processed={row.processed} with {len(finished)}/{len(states)} finished"
        if not row.processed:
            return None
        if row.outcome != summary(finished):
            return f"outcome {row.outcome}, deliveries {finished}"
        if row.deliveries_open not in (None, 0):
            return f"processed with deliveries_open={row.deliveries_open}"
        close = self.closes[event_id][0] if self.closes.get(event_id) else None
        if close is None or close.old_token is not None:
            return None if close is not None else "processed without a recorded close"
        delivery_finals = [
            t for h in self.planned[event_id].deliveries for t in self.finals.get((event_id, h), [])
        ]
        if not any(t.xid == close.xid for t in delivery_finals):
            return f"closed by transaction {close.xid}, which finished none of its deliveries"
        late = [t for t in delivery_finals if t.at > close.at and t.xid != close.xid]
        if late:
            return f"closed at {_when(close.at)} before {late[0].handler} finished"
        return None

    # -- what happened ---------------------------------------------------------------------

    def activity(self) -> None:
        handlings = self.obs.handlings
        uncommitted = [h for h in handlings if not self.is_committed(h)]
        concurrent = 0
        for handling in uncommitted:
            if handling.finished is None:
                continue
            if any(
                other is not handling and handling.started < other.started < handling.finished
                for other in self.handlings[handling.key]
            ):
                concurrent += 1
        row = Counter(t.kind for t in self.obs.transitions if t.handler is None)
        delivery = Counter(t.kind for t in self.obs.transitions if t.handler is not None)
        opened = [t for t in self.obs.transitions if t.kind == "opened"]
        leased_at_open = sum(1 for t in opened if t.new_token is not None)
        self.report.activity = {
            "handlings": len(handlings),
            "handlings_failed_by_injection": sum(1 for h in handlings if h.status == "failed"),
            "deliveries_handled_more_than_once": sum(
                1 for hs in self.handlings.values() if len(hs) > 1
            ),
            "handlings_never_committed": len(uncommitted),
            "handlings_cut_short": sum(1 for h in uncommitted if h.finished is None),
            "results_fenced_out": sum(1 for h in uncommitted if h.status == "ok"),
            "stale_handlings_overlapping_a_newer_one": concurrent,
            "claims": row["claim"] + delivery["claim"] + leased_at_open,
            "lease_takeovers": row["takeover"] + delivery["takeover"],
            "retries_written": row["retry"] + delivery["retry"],
            "releases_written": row["release"] + delivery["release"],
            "stalled_runs_revoked": row["revoked"] + delivery["revoked"],
            "events_routed_to_deliveries": row["routed"],
            "failures_moved_onto_deliveries": self._moved_failures(),
            "deliveries_opened": len(opened),
            "deliveries_opened_waiting": len(opened) - leased_at_open,
        }

    def _moved_failures(self) -> int:
        """Routings of an event whose handler had already run on its row under that claim."""
        return sum(
            1
            for t in self.obs.transitions
            if t.kind == "routed"
            and t.old_token is not None
            and any(h.started < t.at for h in self.by_token.get((t.event_id, t.old_token), []))
        )

    def throughput(
        self, publish_started: float, fault_times: list[float], healthy: Sequence[str]
    ) -> None:
        closes = sorted(
            self.closes[event_id][0].at for event_id in self.published if self.closes.get(event_id)
        )
        result: dict[str, Any] = {"events_final": len(closes)}
        result |= _rates(closes, publish_started, fault_times)
        if closes:
            gaps = [b - a for a, b in zip([publish_started, *closes], closes, strict=False)]
            result["longest_stall_s"] = round(max(gaps), 2)
            per_second = Counter(int(t - publish_started) for t in closes)
            last = int(closes[-1] - publish_started)
            result["per_second"] = [per_second.get(s, 0) for s in range(last + 1)]
        finished: dict[str, list[float]] = defaultdict(list)
        for key in self.expected:
            final = self.final_of(key)
            if final is not None and self.state(key) is not None:
                finished[key[1]].append(final.at)
        result["deliveries_per_s"] = {
            handler: _rates(sorted(times), publish_started, [])["overall_per_s"]
            for handler, times in sorted(finished.items())
        }
        if healthy:
            times = sorted(t for handler in healthy for t in finished.get(handler, []))
            result["healthy"] = {"handlers": list(healthy), "deliveries": len(times)}
            result["healthy"] |= _rates(times, publish_started, fault_times)
            result["healthy"]["latency_ms"] = self._healthy_latency(set(healthy))
        self.report.throughput = result

    def _healthy_latency(self, healthy: set[str]) -> dict[str, Any]:
        """How long the healthy deliveries took from their event's routing to their
        final write-back, for events whose other deliveries failed at least once and
        for the others: a failing handler that held the healthy ones back shows here."""
        waits: dict[str, list[float]] = {"beside_a_failure": [], "beside_no_failure": []}
        routed: dict[uuid.UUID, float] = {}
        for t in self.obs.transitions:
            if t.kind == "routed" and t.handler is None:
                routed.setdefault(t.event_id, t.at)
        for event_id in self.published:
            handlers = self.planned[event_id].deliveries
            if event_id not in routed or not healthy.intersection(handlers):
                continue
            failed = any(
                h.status == "failed"
                for other in handlers
                if other not in healthy
                for h in self.handlings.get((event_id, other), [])
            )
            group = waits["beside_a_failure" if failed else "beside_no_failure"]
            for handler in healthy.intersection(handlers):
                final = self.final_of((event_id, handler))
                if final is not None:
                    group.append((final.at - routed[event_id]) * 1000)
        return {group: _spread(values) for group, values in waits.items()}


def _rates(finals: list[float], started: float, fault_times: Iterable[float]) -> dict[str, Any]:
    """Finishes per second: whole run (start to the last), before the first fault, after."""
    if not finals:
        return {"overall_per_s": None}
    end = finals[-1]
    result: dict[str, Any] = {
        "seconds": round(end - started, 2),
        "overall_per_s": _rate(len(finals), end - started),
    }
    faults = list(fault_times)
    if faults:
        first = min(faults)
        before = bisect.bisect_right(finals, first)
        result["fault_free_seconds"] = round(first - started, 2)
        result["fault_free_per_s"] = _rate(before, first - started)
        result["under_faults_per_s"] = _rate(len(finals) - before, end - first)
        if result["fault_free_per_s"]:
            result["held"] = round(result["under_faults_per_s"] / result["fault_free_per_s"], 3)
    return result


def _spread(values: list[float]) -> dict[str, Any]:
    """Count, median and 90th percentile (ms, rounded)."""
    if not values:
        return {"deliveries": 0}
    ordered = sorted(values)
    return {
        "deliveries": len(ordered),
        "median": round(ordered[len(ordered) // 2], 1),
        "p90": round(ordered[min(int(len(ordered) * 0.9), len(ordered) - 1)], 1),
    }


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def analyse(
    observed: Observed,
    planned: list[Planned],
    published: set[uuid.UUID],
    *,
    ordered: bool,
    publish_started: float,
    fault_times: list[float],
    healthy: Sequence[str] = (),
) -> Report:
    """Every check, per delivery; ``healthy``: handlers whose throughput is reported apart."""
    analysis = _Analysis(observed, planned, published)
    analysis.outcomes()
    analysis.overlapping()
    analysis.ordering(ordered)
    analysis.side_effects()
    analysis.bookkeeping()
    analysis.activity()
    analysis.throughput(publish_started, fault_times, healthy)
    return analysis.report
