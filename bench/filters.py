"""Filter evaluation: microseconds per event per subscription, off the database.

    .venv/bin/python bench/filters.py [--events 5000] [--runs 15] [--seed 14]

Builds ``--events`` realistic envelopes (seeded), compiles a few patterns
once, then times ``Matcher.matches`` (or ``Route.matches``) over every
envelope, ``--runs`` times. Prints, per pattern, the median [min-max] over
runs of the mean µs per evaluation, and the share of envelopes it matched.
The first row is the cost of the timing loop itself (a call of a no-op),
already included in every other row. Writes the same as JSON to
``bench/results/filters-<stamp>.json``. No database, no network.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from eventproc.routing import Route, TypeMatcher, compile, envelope  # noqa: E402

TYPES = [
    "intro.completed",
    "intro.requested",
    "user.created",
    "user.profile.updated",
    "payment.settled",
]
PLANS = ["free", "pro", "team", "enterprise"]

PATTERNS: dict[str, dict[str, Any]] = {
    "3-field (aggregate_type, payload.plan, metadata.region)": {
        "aggregate_type": ["intro"],
        "payload": {"plan": ["pro", "team"]},
        "metadata": {"region": ["eu-west-1", "eu-central-1"]},
    },
    "numeric + prefix (payload.amount range, payload.email)": {
        "payload": {
            "amount": [{"numeric": [">=", 100, "<", 500]}],
            "email": [{"prefix": "admin"}],
        }
    },
    "$or of 3 branches": {
        "$or": [
            {"payload": {"plan": ["enterprise"]}},
            {"payload": {"seats": [{"numeric": [">=", 50]}]}},
            {"metadata": {"source": ["import"]}},
        ]
    },
    "wildcard (payload.email '*@*.example.com')": {
        "payload": {"email": [{"wildcard": "*@*.example.com"}]}
    },
    "anything-but + exists false": {
        "payload": {"plan": [{"anything-but": ["free"]}], "coupon": [{"exists": False}]}
    },
    "array of objects (payload.items sku and qty)": {
        "payload": {"items": {"sku": ["SKU-7"], "qty": [{"numeric": [">", 1]}]}}
    },
}


def make_envelopes(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        event_type = rng.choice(TYPES)
        user = rng.choice(["admin", "bob", "carol", "dave", "erin"])
        domain = rng.choice(["example.com", "mail.example.com", "example.org"])
        payload: dict[str, Any] = {
            "plan": rng.choice(PLANS),
            "amount": round(rng.uniform(0, 1000), 2),
            "seats": rng.randint(1, 100),
            "email": f"{user}{rng.randint(1, 99)}@{domain}",
            "tags": rng.sample(["vip", "new", "churn-risk", "beta"], rng.randint(0, 3)),
            "items": [
                {"sku": f"SKU-{rng.randint(1, 9)}", "qty": rng.randint(1, 3)}
                for _ in range(rng.randint(0, 3))
            ],
        }
        if rng.random() < 0.2:
            payload["coupon"] = "WELCOME"
        metadata = {
            "region": rng.choice(["eu-west-1", "eu-central-1", "us-east-1"]),
            "source": rng.choice(["api", "api", "import"]),
            "retry_count": 0,
        }
        out.append(
            envelope(
                event_type,
                payload,
                aggregate_id=uuid.UUID(int=rng.getrandbits(128)),
                aggregate_type=event_type.split(".")[0],
                created_by="bench",
                metadata=metadata,
            )
        )
    return out


def time_runs(
    check: Callable[[dict[str, Any]], bool], envelopes: list[dict[str, Any]], runs: int
) -> tuple[list[float], float]:
    """Mean µs per call for each run, and the share of envelopes that matched."""
    matched = sum(1 for one in envelopes if check(one)) / len(envelopes)  # also a warm-up
    per_run = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        for one in envelopes:
            check(one)
        per_run.append((time.perf_counter_ns() - started) / len(envelopes) / 1000)
    return per_run, matched


def cases() -> dict[str, Callable[[dict[str, Any]], bool]]:
    types = TypeMatcher(["intro.completed"])
    typed = Route("typed", "intro.completed")
    out: dict[str, Callable[[dict[str, Any]], bool]] = {
        "(timing loop: a no-op call)": lambda one: True,
        "exact type only: TypeMatcher.matches(event_type)": lambda one: types.matches(
            one["event_type"]
        ),
        "exact type only: Route.matches (no filter)": typed.matches,
    }
    for name, pattern in PATTERNS.items():
        out[name] = compile(pattern).matches
    explained = compile(next(iter(PATTERNS.values())))
    out["explain() of the 3-field pattern (not the hot path)"] = lambda one: (
        explained.explain(one).matched
    )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=14)
    args = parser.parse_args()
    if not 1 <= args.events <= 1_000_000 or not 1 <= args.runs <= 1000:
        parser.error("--events 1..1,000,000 and --runs 1..1000")
    envelopes = make_envelopes(args.events, args.seed)
    rows = []
    width = max(len(name) for name in cases())
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{args.events} envelopes, {args.runs} runs, Python {platform.python_version()}, "
        f"load {load:.2f}; µs per evaluation, median [min-max] over runs"
    )
    for name, check in cases().items():
        per_run, matched = time_runs(check, envelopes, args.runs)
        median = statistics.median(per_run)
        print(
            f"  {name:<{width}}  {median:6.3f} [{min(per_run):.3f}-{max(per_run):.3f}]"
            f"  matched {matched:6.1%}"
        )
        rows.append({"case": name, "us_per_eval": per_run, "median": median, "matched": matched})
    results = ROOT / "bench" / "results"
    results.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = results / f"filters-{stamp}.json"
    meta = {"events": args.events, "runs": args.runs, "seed": args.seed, "load": load}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
