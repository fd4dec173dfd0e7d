"""The events a chaos run publishes: seeded, spread over aggregates, some set to fail.

Each event picks a random aggregate; ``seq`` is its position within that
aggregate (0, 1, 2, ...), in publishing order. Events set to end dead-lettered
(on any of their deliveries) get an aggregate of their own (see ``plan``).
Ids are eventproc's time-ordered uuid7s, made here in order, so
``(created_at, id)`` follows ``seq`` even for events published in one
statement (same ``created_at``).

Every planned event says which deliveries it must get, one per subscription
that takes it (``Planned.deliveries``: handler -> the outcome that delivery
must end with), so the checks work per (event, handler) whatever the
workload.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from chaos_handlers import FANOUT, PLAIN, TRANSACTIONAL, subscribers

from eventproc import NewEvent

INJECTED = {"permanent", "always_fail", "fail_first"}
# The fan-out workload's failing subscription: present and failing as planned,
# present but never failing, or not registered at all (the comparison runs).
FLAKY_MODES = ("failing", "quiet", "absent")


@dataclass(frozen=True)
class Mix:
    """Shares of the events that get each behaviour (the rest simply succeed)."""

    transactional: float = 0.5  # chaos.tx instead of chaos.plain
    fail_first: float = 0.03  # fail on their first 1..max_fail_first attempts
    max_fail_first: int = 2
    always_fail: float = 0.002  # fail every attempt: dead-lettered after MAX_RETRIES
    permanent: float = 0.001  # PermanentError: dead-lettered at once
    max_work_ms: float = 5.0  # each handler pretends to work 0..max_work_ms
    slow: float = 0.05  # ... except these, which take slow_work_ms: a SIGSTOP catches
    slow_work_ms: tuple[float, float] = (200.0, 600.0)  # some of them half-way


@dataclass(frozen=True)
class FanMix:
    """The fan-out workload: what ``flaky`` fails on and how slow ``slow`` is."""

    fail_first: float = 0.17  # flaky fails its first 1..max_fail_first attempts
    max_fail_first: int = 2
    always_fail: float = 0.01  # flaky fails every attempt: its delivery dead-lettered
    permanent: float = 0.02  # flaky raises PermanentError: dead-lettered at once
    max_work_ms: float = 5.0  # fast and flaky work 0..max_work_ms
    slow_ms: tuple[float, float] = (10.0, 40.0)  # how long slow sleeps
    very_slow: float = 0.05  # ... except these, so that a SIGSTOP catches some half-way
    very_slow_ms: tuple[float, float] = (200.0, 600.0)

    @property
    def failing(self) -> float:
        """The share of events whose flaky delivery fails at least once (20 %)."""
        return self.fail_first + self.always_fail + self.permanent


@dataclass(frozen=True)
class Planned:
    event: NewEvent
    aggregate: int
    seq: int
    expected: str  # the event's outcome: succeeded, dead_lettered or partial
    injected: bool  # has some failure injected
    deliveries: Mapping[str, str]  # handler -> the outcome its delivery must end with


def summary(outcomes: list[str]) -> str:
    """An event's outcome from its deliveries' (eventproc's events.outcome rule)."""
    kinds = set(outcomes)
    return kinds.pop() if len(kinds) == 1 else "partial"


def _faults(
    rng: random.Random, permanent: float, always: float, first: float, most: int
) -> dict[str, object]:
    """One draw of injected failures (same draws for every workload variant)."""
    roll = rng.random()
    if roll < permanent:
        return {"permanent": True}
    if roll < permanent + always:
        return {"always_fail": True}
    if roll < permanent + always + first:
        return {"fail_first": rng.randint(1, most)}
    return {}


class _Aggregates:
    """The shared aggregates, and one of its own for each event meant to dead-letter."""

    def __init__(self, rng: random.Random, count: int) -> None:
        self.rng = rng
        self.ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(count)]
        self.next_seq = [0] * count

    def pick(self, alone: bool) -> tuple[int, int, uuid.UUID]:
        if alone:
            # An aggregate of its own: with AGGREGATE_FAILURE=block (an opt-in) a
            # dead letter holds back the rest of its (handler, aggregate) for good.
            return -1, 0, uuid.UUID(int=self.rng.getrandbits(128), version=4)
        aggregate = self.rng.randrange(len(self.ids))
        seq = self.next_seq[aggregate]
        self.next_seq[aggregate] += 1
        return aggregate, seq, self.ids[aggregate]


def _new_event(event_type: str, payload: dict[str, object], aggregate_id: uuid.UUID) -> NewEvent:
    return NewEvent(
        event_type, payload, aggregate_id=aggregate_id, aggregate_type="chaos", created_by="chaos"
    )


def plan(count: int, aggregates: int, seed: int, mix: Mix | None = None) -> list[Planned]:
    """The default workload: chaos.plain and chaos.tx, one subscription each."""
    mix = mix or Mix()
    rng = random.Random(f"chaos-workload-{seed}")
    shared = _Aggregates(rng, aggregates)
    planned = []
    for n in range(count):
        work_ms = rng.uniform(0, mix.max_work_ms)
        if rng.random() < mix.slow:
            work_ms = rng.uniform(*mix.slow_work_ms)
        payload: dict[str, object] = {"n": n, "work_ms": round(work_ms, 2)}
        payload |= _faults(rng, mix.permanent, mix.always_fail, mix.fail_first, mix.max_fail_first)
        dead = bool(payload.get("permanent") or payload.get("always_fail"))
        aggregate, seq, aggregate_id = shared.pick(alone=dead)
        payload["seq"] = seq
        event_type = TRANSACTIONAL if rng.random() < mix.transactional else PLAIN
        expected = "dead_lettered" if dead else "succeeded"
        planned.append(
            Planned(
                _new_event(event_type, payload, aggregate_id),
                aggregate,
                seq,
                expected,
                injected=bool(INJECTED.intersection(payload)),
                deliveries=dict.fromkeys(subscribers("registry", event_type), expected),
            )
        )
    return planned


def plan_fanout(
    count: int, aggregates: int, seed: int, mix: FanMix | None = None, flaky: str = "failing"
) -> list[Planned]:
    """The fan-out workload: chaos.fan, taken by fast, flaky and slow (see ``FLAKY_MODES``).

    Every variant draws the same numbers, so the events (ids, aggregates,
    timings) are the same; only flaky's failures, or flaky itself, differ.
    """
    if flaky not in FLAKY_MODES:
        raise ValueError(f"flaky must be one of {FLAKY_MODES}, got {flaky!r}")
    mix = mix or FanMix()
    rng = random.Random(f"chaos-fanout-{seed}")
    shared = _Aggregates(rng, aggregates)
    handlers = subscribers("fanout" if flaky != "absent" else "fanout_without_flaky", FANOUT)
    planned = []
    for n in range(count):
        slow_ms = rng.uniform(*mix.slow_ms)
        if rng.random() < mix.very_slow:
            slow_ms = rng.uniform(*mix.very_slow_ms)
        payload: dict[str, object] = {
            "n": n,
            "work_ms": round(rng.uniform(0, mix.max_work_ms), 2),
            "slow_ms": round(slow_ms, 2),
        }
        faults = _faults(rng, mix.permanent, mix.always_fail, mix.fail_first, mix.max_fail_first)
        dead = bool(faults.get("permanent") or faults.get("always_fail"))
        aggregate, seq, aggregate_id = shared.pick(alone=dead)  # in every variant alike
        payload["seq"] = seq
        injected = flaky == "failing" and bool(faults)
        if injected:
            payload["flaky"] = faults
        deliveries = dict.fromkeys(handlers, "succeeded")
        if injected and dead:
            deliveries["flaky"] = "dead_lettered"
        planned.append(
            Planned(
                _new_event(FANOUT, payload, aggregate_id),
                aggregate,
                seq,
                summary(list(deliveries.values())),
                injected=injected,
                deliveries=deliveries,
            )
        )
    return planned
