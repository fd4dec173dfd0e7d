"""The events a chaos run publishes: seeded, spread over aggregates, some set to fail.

Each event picks a random aggregate; ``seq`` is its position within that
aggregate (0, 1, 2, ...), in publishing order. Events set to end dead-lettered
get an aggregate of their own (see ``plan``). Ids are eventproc's time-ordered
uuid7s, made here in order, so ``(created_at, id)`` follows ``seq`` even for
events published in one statement (same ``created_at``).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass

from chaos_handlers import PLAIN, TRANSACTIONAL

from eventproc import NewEvent

INJECTED = {"permanent", "always_fail", "fail_first"}


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
class Planned:
    event: NewEvent
    aggregate: int
    seq: int
    expected: str  # the outcome it must end with: "succeeded" or "dead_lettered"
    injected: bool  # has some failure injected


def plan(count: int, aggregates: int, seed: int, mix: Mix | None = None) -> list[Planned]:
    mix = mix or Mix()
    rng = random.Random(f"chaos-workload-{seed}")
    aggregate_ids = [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(aggregates)]
    next_seq = [0] * aggregates
    planned = []
    for n in range(count):
        work_ms = rng.uniform(0, mix.max_work_ms)
        if rng.random() < mix.slow:
            work_ms = rng.uniform(*mix.slow_work_ms)
        payload: dict[str, object] = {"n": n, "work_ms": round(work_ms, 2)}
        roll = rng.random()
        if roll < mix.permanent:
            payload["permanent"] = True
        elif roll < mix.permanent + mix.always_fail:
            payload["always_fail"] = True
        elif roll < mix.permanent + mix.always_fail + mix.fail_first:
            payload["fail_first"] = rng.randint(1, mix.max_fail_first)
        dead = bool(payload.get("permanent") or payload.get("always_fail"))
        if dead:
            # An aggregate of its own: with AGGREGATE_FAILURE=block (an opt-in) a
            # dead letter holds back the rest of its aggregate for good.
            aggregate, seq = -1, 0
            aggregate_id = uuid.UUID(int=rng.getrandbits(128), version=4)
        else:
            aggregate = rng.randrange(aggregates)
            seq = next_seq[aggregate]
            next_seq[aggregate] += 1
            aggregate_id = aggregate_ids[aggregate]
        payload["seq"] = seq
        event_type = TRANSACTIONAL if rng.random() < mix.transactional else PLAIN
        planned.append(
            Planned(
                NewEvent(
                    event_type,
                    payload,
                    aggregate_id=aggregate_id,
                    aggregate_type="chaos",
                    created_by="chaos",
                ),
                aggregate,
                seq,
                "dead_lettered" if dead else "succeeded",
                injected=bool(INJECTED.intersection(payload)),
            )
        )
    return planned
