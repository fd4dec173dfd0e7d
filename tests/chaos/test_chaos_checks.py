"""The chaos checks themselves, on hand-made observations: each one can fail.

A clean history of two fan-out events (one aggregate, handlers ``fast`` and
``flaky``, the transactional one) passes every check; each test then breaks
it the way one invariant breaks and expects exactly that check to count it.
Also: a single-subscription event handled on its row, and one whose failure
moved onto a delivery, pass; handlings of different handlers of one
aggregate may interleave (the delivery model's contract) while handlings of
one handler may not.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import replace

import pytest
from chaos_checks import DeliveryRow, EventRow, Handling, Observed, Report, Transition, analyse
from chaos_handlers import FANOUT, PLAIN
from chaos_workload import Planned

from eventproc import NewEvent

AGGREGATE = uuid.UUID(int=7, version=4)
T0 = 1_000_000.0


class History:
    """Observations built step by step, as the triggers and the journal record them."""

    def __init__(self) -> None:
        self.planned: list[Planned] = []
        self.obs = Observed({}, {}, [], [], [], [])
        self.xid = 100

    def event(self, seq: int, handlers: dict[str, str], event_type: str = FANOUT) -> uuid.UUID:
        new = NewEvent(event_type, {"seq": seq}, aggregate_id=AGGREGATE)
        outcome = "partial" if len(set(handlers.values())) > 1 else next(iter(handlers.values()))
        self.planned.append(Planned(new, 0, seq, outcome, False, handlers))
        self.obs.events[new.id] = EventRow(
            new.id, AGGREGATE, True, outcome, 1, T0 + seq / 1000, True, 0
        )
        return new.id

    def step(
        self,
        event_id: uuid.UUID,
        handler: str | None,
        kind: str,
        at: float,
        *,
        old: str | None = None,
        new: str | None = None,
        until: float | None = None,
        xid: int | None = None,
    ) -> Transition:
        """One trigger row; each its own transaction unless ``xid`` says otherwise."""
        if xid is None:
            self.xid += 1
            xid = self.xid
        transition = Transition(event_id, handler, kind, old, new, until, xid, T0 + at)
        self.obs.transitions.append(transition)
        return transition

    def handle(
        self, event_id: uuid.UUID, handler: str, token: str, start: float, end: float, status: str
    ) -> None:
        self.obs.handlings.append(
            Handling(event_id, handler, token, token.split(":")[0], 1, T0 + start, T0 + end, status)
        )

    def fan_out(self, event_id: uuid.UUID, token: str, at: float) -> None:
        """Claimed on its row, then routed: each handler handles and succeeds."""
        self.step(event_id, None, "claim", at, new=token)
        self.step(event_id, None, "routed", at + 0.01, old=token)
        for n, handler in enumerate(("fast", "flaky")):
            self.step(event_id, handler, "opened", at + 0.01, new=token)
            self.handle(event_id, handler, token, at + 0.02, at + 0.03 + n / 100, "ok")
            if handler == "flaky":
                self.obs.effects.append((event_id, handler, token))
            done = self.step(event_id, handler, "succeeded", at + 0.05 + n / 100, old=token)
            self.obs.deliveries[(event_id, handler)] = DeliveryRow(
                event_id, handler, "done", "succeeded", 1
            )
        self.step(event_id, None, "succeeded", at + 0.061, xid=done.xid)

    def analyse(self) -> Report:
        return analyse(
            self.obs,
            self.planned,
            {p.event.id for p in self.planned},
            ordered=True,
            publish_started=T0,
            fault_times=[T0 + 0.5],
            healthy=("fast",),
        )


def clean() -> tuple[History, uuid.UUID, uuid.UUID]:
    history = History()
    first = history.event(0, {"fast": "succeeded", "flaky": "succeeded"})
    second = history.event(1, {"fast": "succeeded", "flaky": "succeeded"})
    history.fan_out(first, "w00:1", 1.0)
    history.fan_out(second, "w00:2", 2.0)
    return history, first, second


def test_a_clean_fan_out_history_passes_every_check() -> None:
    history, _, _ = clean()
    report = history.analyse()
    assert report.violations == {}
    assert report.outcomes["deliveries_planned"] == report.outcomes["succeeded"] == 4
    assert report.activity["deliveries_opened"] == 4
    assert report.throughput["healthy"]["deliveries"] == 2


def _lose(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    """The second event's flaky delivery never finished (and so neither did the event)."""
    h.obs.deliveries[(second, "flaky")] = DeliveryRow(second, "flaky", "pending", None, 1)
    h.obs.events[second] = replace(h.obs.events[second], processed=False, outcome=None)
    h.obs.transitions[:] = [
        t
        for t in h.obs.transitions
        if not (t.event_id == second and t.kind == "succeeded" and t.handler in (None, "flaky"))
    ]


def _overlap(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    h.handle(first, "fast", "w01:9", 1.021, 1.04, "ok")
    h.step(first, "fast", "retry", 1.045, old="w01:9")


def _out_of_order(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    # the second event's fast handling (which committed) starts while the
    # first event's fast handling still runs
    h.handle(second, "fast", "w01:9", 1.025, 1.026, "failed")
    h.step(second, "fast", "retry", 1.027, old="w01:9")


def _duplicate_effect(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    h.obs.effects.append((first, "flaky", "w00:1"))


def _stray_effect(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    h.handle(first, "flaky", "w01:9", 1.5, 1.6, "failed")
    h.obs.effects.append((first, "flaky", "w01:9"))  # a failed attempt's effect committed


def _missing_effect(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    h.obs.effects.remove((second, "flaky", "w00:2"))


def _twice(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    h.step(first, "fast", "succeeded", 1.5, old="w01:9")


def _unbacked(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    index = next(
        i for i, x in enumerate(h.obs.handlings) if x.event_id == first and x.handler == "fast"
    )
    h.obs.handlings[index] = replace(h.obs.handlings[index], status="failed")


def _stolen(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    h.step(first, "fast", "takeover", 1.03, old="w00:1", new="w01:9", until=T0 + 3)


def _extra_dead_letter(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    h.obs.dead_letters.append((first, "fast", "boom"))


def _unexpected_dead_letter(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    h.obs.deliveries[(first, "fast")] = DeliveryRow(first, "fast", "done", "dead_lettered", 9)
    h.obs.dead_letters.append((first, "fast", "boom"))
    h.obs.events[first] = replace(h.obs.events[first], outcome="partial")


def _wrong_summary(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    h.obs.events[first] = replace(h.obs.events[first], outcome="partial")


def _closed_early(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    close = next(
        t
        for t in h.obs.transitions
        if t.event_id == first and t.handler is None and t.kind == "succeeded"
    )
    h.obs.transitions[h.obs.transitions.index(close)] = replace(close, xid=1, at=T0 + 1.055)


def _wrong_outcome(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    h.obs.deliveries[(first, "fast")] = DeliveryRow(first, "fast", "done", "skipped", 1)


def _publish_order(h: History, first: uuid.UUID, second: uuid.UUID) -> None:
    h.obs.events[first] = replace(h.obs.events[first], created_at=T0 + 5)


BREAKS: dict[str, Callable[[History, uuid.UUID, uuid.UUID], None]] = {
    "lost": _lose,
    "overlapping": _overlap,
    "out_of_order": _out_of_order,
    "duplicate_effects": _duplicate_effect,
    "stray_effects": _stray_effect,
    "missing_effects": _missing_effect,
    "outcome_twice": _twice,
    "unbacked_success": _unbacked,
    "stolen_lease": _stolen,
    "dead_letter_rows": _extra_dead_letter,
    "dead_unexpected": _unexpected_dead_letter,
    "event_summary": _wrong_summary,
    "wrong_outcome": _wrong_outcome,
    "publish_order": _publish_order,
}


@pytest.mark.parametrize("check", sorted(BREAKS))
def test_each_check_counts_what_breaks_it(check: str) -> None:
    history, first, second = clean()
    BREAKS[check](history, first, second)
    report = history.analyse()
    assert report.check(check).value > 0, report.violations
    assert not report.passed


def test_a_close_by_a_transaction_that_finished_no_delivery_is_counted() -> None:
    history, first, second = clean()
    _closed_early(history, first, second)
    assert history.analyse().violations == {"event_summary": 1}


def test_other_handlers_of_an_aggregate_may_interleave_one_handler_may_not() -> None:
    history, first, second = clean()
    # the second event's fast delivery runs after the first event's fast
    # handling ended (1.03) and while its flaky one still runs (until 1.04):
    # another handler, independent, not out of order
    history.handle(second, "fast", "w01:9", 1.035, 1.036, "failed")
    history.step(second, "fast", "retry", 1.037, old="w01:9")
    assert history.analyse().violations == {}
    # one of fast's own that starts before the first event's fast ended is
    _out_of_order(history, first, second)
    assert history.analyse().violations == {"out_of_order": 1}


def test_an_uncommitted_stale_handling_is_not_counted() -> None:
    history, _, second = clean()
    history.handle(second, "fast", "w01:9", 1.025, 1.026, "ok")  # fenced out: no write-back
    report = history.analyse()
    assert report.violations == {}
    assert report.activity["results_fenced_out"] == 1


def test_single_subscriptions_on_rows_and_moved_failures_pass() -> None:
    history = History()
    on_row = history.event(0, {"plain": "succeeded"}, PLAIN)
    moved = history.event(1, {"plain": "succeeded"}, PLAIN)
    history.obs.events[on_row] = replace(history.obs.events[on_row], routed=False)
    history.step(on_row, None, "claim", 1.0, new="w00:1")
    history.handle(on_row, "plain", "w00:1", 1.01, 1.02, "ok")
    history.step(on_row, None, "succeeded", 1.03, old="w00:1")
    # fails on its row under w00:2, moves onto its delivery, succeeds there
    history.step(moved, None, "claim", 1.04, new="w00:2")
    history.handle(moved, "plain", "w00:2", 1.05, 1.06, "failed")
    history.step(moved, None, "routed", 1.07, old="w00:2")
    history.step(moved, "plain", "opened", 1.07, new="w00:2")
    history.step(moved, "plain", "retry", 1.08, old="w00:2")
    history.step(moved, "plain", "claim", 1.2, new="w01:1")
    history.handle(moved, "plain", "w01:1", 1.21, 1.22, "ok")
    done = history.step(moved, "plain", "succeeded", 1.23, old="w01:1")
    history.step(moved, None, "succeeded", 1.23, xid=done.xid)
    history.obs.deliveries[(moved, "plain")] = DeliveryRow(moved, "plain", "done", "succeeded", 2)
    report = history.analyse()
    assert report.violations == {}
    assert report.activity["failures_moved_onto_deliveries"] == 1
    assert report.activity["handlings_never_committed"] == 0
    # and its on-row success must be backed by an ok handling of that claim
    history.obs.handlings[0] = replace(history.obs.handlings[0], status="failed")
    assert history.analyse().violations == {"unbacked_success": 1}
