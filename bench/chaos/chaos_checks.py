"""What a chaos run proves, computed from the database once every worker has stopped.

Vocabulary (see README.md for the reasoning):

* a *handling* is one handler call: one ``chaos_journal`` row, keyed by its
  event and the claim token it ran under;
* a handling *committed* when the write-back fenced on its claim (success,
  retry, dead letter or release) changed the row: ``chaos_transitions`` has
  a row for that event whose ``old_token`` is its claim token. Handlings of
  a worker that was killed, or whose lease expired and was taken over (a
  stopped worker), committed nothing: their results were fenced out;
* a handling's *end* is its recorded ``finished_at``, or, when that could
  not be written (database down), the moment its write-back committed, which
  came after the handler returned;
* an event's *final handling* is the one whose claim wrote its final outcome.
"""

from __future__ import annotations

import bisect
import itertools
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from chaos_handlers import TRANSACTIONAL
from chaos_workload import Planned

FINAL_KINDS = {"succeeded", "dead_lettered", "skipped", "processed"}
WRITE_BACK_KINDS = FINAL_KINDS | {"retry", "release"}
EXAMPLES = 5


@dataclass(frozen=True)
class EventRow:
    id: uuid.UUID
    aggregate_id: uuid.UUID | None
    processed: bool
    outcome: str | None
    attempts: int
    created_at: float


@dataclass(frozen=True)
class Handling:
    event_id: uuid.UUID
    token: str
    worker: str
    attempt: int
    started: float
    finished: float | None
    status: str | None


@dataclass(frozen=True)
class Transition:
    event_id: uuid.UUID
    kind: str
    old_token: str | None
    new_token: str | None
    old_locked_until: float | None
    at: float


@dataclass
class Observed:
    """Everything the checks read, fetched in one go."""

    events: dict[uuid.UUID, EventRow]
    handlings: list[Handling]
    transitions: list[Transition]
    effects: list[tuple[uuid.UUID, str]]  # (event_id, token) of each side-effect row
    dead_letters: list[tuple[uuid.UUID, str]]  # (event_id, error_message)


def _ts(value: Any) -> float | None:
    return None if value is None else float(value.timestamp())


async def fetch(url: str) -> Observed:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute("SET statement_timeout = '120s'")
        events = {
            row["id"]: EventRow(
                row["id"],
                row["aggregate_id"],
                bool(row["processed"]),
                row["outcome"],
                row["attempts"],
                row["created_at"].timestamp(),
            )
            for row in await conn.fetch(
                "SELECT id, aggregate_id, processed, outcome, attempts, created_at FROM events"
            )
        }
        handlings = [
            Handling(
                row["event_id"],
                row["token"],
                row["worker"],
                row["attempt"],
                row["started_at"].timestamp(),
                _ts(row["finished_at"]),
                row["status"],
            )
            for row in await conn.fetch(
                "SELECT event_id, token, worker, attempt, started_at, finished_at, status "
                "FROM chaos_journal ORDER BY id"
            )
        ]
        transitions = [
            Transition(
                row["event_id"],
                row["kind"],
                row["old_token"],
                row["new_token"],
                _ts(row["old_locked_until"]),
                row["at"].timestamp(),
            )
            for row in await conn.fetch(
                "SELECT event_id, kind, old_token, new_token, old_locked_until, at "
                "FROM chaos_transitions ORDER BY id"
            )
        ]
        effects = [
            (row["event_id"], row["token"])
            for row in await conn.fetch("SELECT event_id, token FROM chaos_effects")
        ]
        dead_letters = [
            (row["event_id"], row["error_message"])
            for row in await conn.fetch("SELECT event_id, error_message FROM event_dead_letters")
        ]
    finally:
        await conn.close()
    return Observed(events, handlings, transitions, effects, dead_letters)


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


class _Analysis:
    """One pass over the observations; each ``_check_*`` adds its rows to the report."""

    def __init__(
        self, observed: Observed, planned: list[Planned], published: set[uuid.UUID]
    ) -> None:
        self.obs = observed
        self.planned = {p.event.id: p for p in planned}
        self.published = published
        self.report = Report()
        self.handlings: dict[uuid.UUID, list[Handling]] = defaultdict(list)
        for handling in observed.handlings:
            self.handlings[handling.event_id].append(handling)
        # (event, claim token) -> when the write-back fenced on that claim committed
        self.committed: dict[tuple[uuid.UUID, str], Transition] = {}
        self.finals: dict[uuid.UUID, list[Transition]] = defaultdict(list)
        for transition in observed.transitions:
            if transition.kind in WRITE_BACK_KINDS and transition.old_token is not None:
                self.committed[(transition.event_id, transition.old_token)] = transition
            if transition.kind in FINAL_KINDS:
                self.finals[transition.event_id].append(transition)

    # -- helpers -------------------------------------------------------------

    def example(self, key: str, text: str) -> None:
        found = self.report.examples.setdefault(key, [])
        if len(found) < EXAMPLES:
            found.append(text)

    def add(self, key: str, label: str, value: int, *, enforced: bool = True) -> None:
        self.report.checks.append(Check(key, label, value, enforced))

    def is_committed(self, handling: Handling) -> bool:
        return (handling.event_id, handling.token) in self.committed

    def end(self, handling: Handling) -> float | None:
        if handling.finished is not None:
            return handling.finished
        transition = self.committed.get((handling.event_id, handling.token))
        return transition.at if transition is not None else None

    def final_of(self, event_id: uuid.UUID) -> Transition | None:
        finals = self.finals.get(event_id)
        return finals[0] if finals else None

    def final_end(self, event_id: uuid.UUID) -> float:
        """When the handling that decided the event's outcome ended (inf if never)."""
        final = self.final_of(event_id)
        if final is None:
            return float("inf")
        for handling in self.handlings.get(event_id, []):
            if handling.token == final.old_token:
                end = self.end(handling)
                return end if end is not None else final.at
        return final.at  # dead-lettered without a handler call (claimed too often)

    # -- checks ----------------------------------------------------------------

    def outcomes(self) -> None:
        events = self.obs.events
        out = Counter()
        not_published = len(self.planned) - len(self.published)
        for event_id in self.published:
            row = events.get(event_id)
            planned = self.planned[event_id]
            if row is None or not row.processed:
                out["lost"] += 1
                self.example("lost", f"{event_id} {'missing' if row is None else 'pending'}")
                continue
            if row.outcome == "succeeded" and planned.expected == "succeeded":
                out["succeeded"] += 1
            elif row.outcome == "dead_lettered" and planned.expected == "dead_lettered":
                out["dead_expected"] += 1
            elif row.outcome == "dead_lettered":
                out["dead_unexpected"] += 1
                reason = next((m for e, m in self.obs.dead_letters if e == event_id), "?")
                self.example("dead_unexpected", f"{event_id}: {reason[:200]}")
            else:
                out["wrong_outcome"] += 1
                self.example("wrong_outcome", f"{event_id}: {row.outcome}, {planned.expected=}")
        self.report.outcomes = {
            "planned": len(self.planned),
            "published": len(self.published),
            "succeeded": out["succeeded"],
            "dead_lettered_expected": out["dead_expected"],
            "dead_lettered_planned": sum(
                1 for e in self.published if self.planned[e].expected == "dead_lettered"
            ),
            "dead_lettered_unexpected": out["dead_unexpected"],
            "lost": out["lost"],
            "injected_failures": sum(1 for p in self.planned.values() if p.injected),
        }
        self.add("not_published", "events not published within the time limit", not_published)
        self.add("lost", "lost (published, not in a final state at the end)", out["lost"])
        self.add(
            "dead_unexpected",
            "dead-lettered although only transient failures were injected",
            out["dead_unexpected"],
        )
        self.add(
            "wrong_outcome",
            "other wrong outcomes (e.g. success of an always-failing event)",
            out["wrong_outcome"],
        )

    def overlapping(self) -> None:
        """Two handlings of one event running at the same time that both committed."""
        overlaps = 0
        for event_id, handlings in self.handlings.items():
            committed = sorted(
                (h for h in handlings if self.is_committed(h)), key=lambda h: h.started
            )
            latest_end = float("-inf")
            for handling in committed:
                if handling.started < latest_end:
                    overlaps += 1
                    self.example("overlapping", f"{event_id} claim {handling.token}")
                end = self.end(handling)
                latest_end = max(latest_end, float("inf") if end is None else end)
        self.add(
            "overlapping",
            "handled twice at the same time (both handlings committed)",
            overlaps,
        )

    def ordering(self, ordered: bool) -> None:
        """Within an aggregate, no committed handling of an event may start before the
        final handling of the event published before it (same aggregate) ended."""
        by_aggregate: dict[uuid.UUID, list[EventRow]] = defaultdict(list)
        for event_id in self.published:
            row = self.obs.events.get(event_id)
            if row is not None and row.aggregate_id is not None:
                by_aggregate[row.aggregate_id].append(row)
        out_of_order = broken_publish_order = 0
        for rows in by_aggregate.values():
            rows.sort(key=lambda r: (r.created_at, r.id))
            seqs = [self.planned[r.id].seq for r in rows]
            if seqs != sorted(seqs):
                broken_publish_order += 1
            for previous, current in itertools.pairwise(rows):
                previous_end = self.final_end(previous.id)
                for handling in self.handlings.get(current.id, []):
                    if self.is_committed(handling) and handling.started < previous_end:
                        out_of_order += 1
                        self.example(
                            "out_of_order",
                            f"{current.id} (seq {self.planned[current.id].seq}) started "
                            f"{previous_end - handling.started:.3f}s before its predecessor's "
                            "final handling ended",
                        )
        label = "out-of-order handlings within an aggregate"
        if not ordered:
            label += " (ORDERING=none: not required)"
        self.add("out_of_order", label, out_of_order, enforced=ordered)
        self.add(
            "publish_order",
            "aggregates whose (created_at, id) order differs from seq (harness check)",
            broken_publish_order,
        )

    def side_effects(self) -> None:
        tokens: dict[uuid.UUID, list[str]] = defaultdict(list)
        for event_id, token in self.obs.effects:
            tokens[event_id].append(token)
        duplicate = missing = stray = 0
        for event_id in self.published:
            if self.planned[event_id].event.event_type != TRANSACTIONAL:
                stray += len(tokens.get(event_id, []))
                continue
            found = tokens.get(event_id, [])
            duplicate += max(len(found) - 1, 0)
            if len(found) > 1:
                self.example("duplicate_effects", f"{event_id}: {len(found)} effects")
            row = self.obs.events.get(event_id)
            final = self.final_of(event_id)
            if row is not None and row.outcome == "succeeded" and final is not None:
                missing += not found
                stray += sum(1 for token in found if token != final.old_token)
            else:
                stray += len(found)
        self.add(
            "duplicate_effects", "duplicate side effects of the transactional handler", duplicate
        )
        self.add("missing_effects", "succeeded transactional events without their effect", missing)
        self.add(
            "stray_effects",
            "side effects committed by a handling that did not decide the outcome",
            stray,
        )

    def bookkeeping(self) -> None:
        """The write-backs themselves: fenced, once, and matching a handler success."""
        twice = sum(1 for finals in self.finals.values() if len(finals) > 1)
        twice += sum(
            1 for t in self.obs.transitions if t.kind in ("replayed", "changed_while_processed")
        )
        self.add("outcome_twice", "outcomes written twice for one event", twice)

        unbacked = 0
        for event_id in self.published:
            row = self.obs.events.get(event_id)
            final = self.final_of(event_id)
            if row is None or row.outcome != "succeeded" or final is None:
                continue
            if not any(
                h.token == final.old_token and h.status == "ok"
                for h in self.handlings.get(event_id, [])
            ):
                unbacked += 1
                self.example("unbacked_success", f"{event_id} claim {final.old_token}")
        self.add(
            "unbacked_success",
            "successes written for a claim whose handler did not succeed",
            unbacked,
        )

        stolen = [
            t
            for t in self.obs.transitions
            if t.kind == "takeover"
            and t.old_locked_until is not None
            and t.old_locked_until >= t.at
        ]
        for t in stolen:
            self.example("stolen_lease", f"{t.event_id}: {t.old_token} -> {t.new_token}")
        self.add("stolen_lease", "leases taken over before they expired", len(stolen))

        letters = Counter(event_id for event_id, _ in self.obs.dead_letters)
        mismatch = 0
        for event_id in self.published:
            row = self.obs.events.get(event_id)
            wanted = 1 if row is not None and row.outcome == "dead_lettered" else 0
            mismatch += letters.get(event_id, 0) != wanted
        self.add(
            "dead_letter_rows", "dead-lettered events without exactly one dead letter", mismatch
        )

    def activity(self) -> None:
        handlings = self.obs.handlings
        uncommitted = [h for h in handlings if not self.is_committed(h)]
        concurrent = 0
        for handling in uncommitted:
            if handling.finished is None:
                continue
            if any(
                other is not handling and handling.started < other.started < handling.finished
                for other in self.handlings[handling.event_id]
            ):
                concurrent += 1
        kinds = Counter(t.kind for t in self.obs.transitions)
        self.report.activity = {
            "handlings": len(handlings),
            "handlings_failed_by_injection": sum(1 for h in handlings if h.status == "failed"),
            "events_handled_more_than_once": sum(
                1 for hs in self.handlings.values() if len(hs) > 1
            ),
            "handlings_never_committed": len(uncommitted),
            "handlings_cut_short": sum(1 for h in uncommitted if h.finished is None),
            "results_fenced_out": sum(1 for h in uncommitted if h.status == "ok"),
            "stale_handlings_overlapping_a_newer_one": concurrent,
            "claims": kinds["claim"],
            "lease_takeovers": kinds["takeover"],
            "retries_written": kinds["retry"],
            "releases_written": kinds["release"],
            "stalled_runs_revoked": kinds["revoked"],
        }

    def throughput(self, publish_started: float, fault_times: list[float]) -> None:
        finals = sorted(
            self.finals[event_id][0].at for event_id in self.published if self.finals.get(event_id)
        )
        result: dict[str, Any] = {"events_final": len(finals)}
        if not finals:
            self.report.throughput = result
            return
        end = finals[-1]
        result["seconds"] = round(end - publish_started, 2)
        result["overall_per_s"] = _rate(len(finals), end - publish_started)
        gaps = [b - a for a, b in zip([publish_started, *finals], finals, strict=False)]
        result["longest_stall_s"] = round(max(gaps), 2)
        if fault_times:
            first = min(fault_times)
            before = bisect.bisect_right(finals, first)
            result["fault_free_seconds"] = round(first - publish_started, 2)
            result["fault_free_per_s"] = _rate(before, first - publish_started)
            result["under_faults_per_s"] = _rate(len(finals) - before, end - first)
            if result["fault_free_per_s"]:
                result["held"] = round(result["under_faults_per_s"] / result["fault_free_per_s"], 3)
        per_second = Counter(int(t - publish_started) for t in finals)
        result["per_second"] = [per_second.get(s, 0) for s in range(int(end - publish_started) + 1)]
        self.report.throughput = result


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
) -> Report:
    analysis = _Analysis(observed, planned, published)
    analysis.outcomes()
    analysis.overlapping()
    analysis.ordering(ordered)
    analysis.side_effects()
    analysis.bookkeeping()
    analysis.activity()
    analysis.throughput(publish_started, fault_times)
    return analysis.report
