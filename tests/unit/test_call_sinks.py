"""A success counted through its sink reads exactly as one counted series by series."""

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import generate_latest

from eventproc.engine.call_sinks import SuccessSink, SuccessSinks
from eventproc.engine.handling_log import HandlingLog, Tally
from eventproc.event import Event
from eventproc.metrics import Metrics, type_label
from eventproc.registry import Registry

CALLS = [  # (event type, attempt, seconds, seconds since insert, replayed)
    ("user.created", 1, 0.003, 0.2, False),
    ("user.created", 2, 0.3, 45.0, False),
    ("user.deleted", 1, 12.0, 4000.0, False),
    ("user.deleted", 1, 0.07, 1.0, True),
    ("user.created", 1, 0.5, -3.0, False),  # the database's clock ahead of ours
]


async def _noop(event: Event, ctx: Any) -> None:
    return None


def _event(event_type: str, attempt: int, age: float, replayed: bool, now: float) -> Event:
    return Event(
        id=uuid.uuid4(),
        event_type=event_type,
        payload={},
        metadata={"replayed": True} if replayed else {},
        created_at=datetime.fromtimestamp(now, UTC) - timedelta(seconds=age),
        attempts=attempt,
    )


def _exposition(metrics: Metrics) -> list[str]:
    return sorted(
        line
        for line in generate_latest(metrics.registry).decode().splitlines()
        if not line.startswith(("process_", "# ")) and "_created" not in line
    )


def test_a_sink_counts_what_metrics_handled_and_the_tally_count() -> None:
    registry = Registry()
    handler = registry.register(["user.*"], _noop, name="audit")
    now = time.time()
    by_sink, by_series = Metrics(), Metrics()
    sink_log, series_log = HandlingLog(), HandlingLog()
    sinks = SuccessSinks(by_sink, sink_log, registry)
    for event_type, attempt, seconds, age, replayed in CALLS:
        event = _event(event_type, attempt, age, replayed, now)
        _sink(sinks, "audit", event_type).record(event, seconds, now)
        destination = type_label(handler.types, event_type)
        by_series.handled(event, "audit", destination, "succeeded", "", seconds, now)
        by_series.count(destination[0], "succeeded")
        series_log.succeeded("audit", seconds)

    assert _exposition(by_sink) == _exposition(by_series)
    assert 'messaging_destination_template="user.*"' in "".join(_exposition(by_sink))
    assert by_sink.event_counts.outcomes == {("user.*", "succeeded"): 5}
    assert (
        sink_log.take_tallies()
        == series_log.take_tallies()
        == {
            "audit": Tally(
                5, 0, sum(call[2] for call in CALLS), _buckets(0.003, 0.07, 0.3, 0.5, 12)
            )
        }
    )


def test_the_sink_keeps_counting_after_the_heartbeat_takes_the_tallies() -> None:
    registry = Registry()
    registry.register("t.a", _noop, name="h")
    log = HandlingLog()
    sinks = SuccessSinks(Metrics(), log, registry)
    now = time.time()
    _sink(sinks, "h", "t.a").record(_event("t.a", 1, 1.0, False, now), 0.01, now)
    first = log.take_tallies()
    assert log.take_tallies() == {}  # nothing since
    _sink(sinks, "h", "t.a").record(_event("t.a", 1, 1.0, False, now), 0.02, now)
    _sink(sinks, "h", "t.a").record(_event("t.a", 1, 1.0, False, now), 0.03, now)
    assert first["h"].succeeded == 1
    assert log.take_tallies()["h"].succeeded == 2


def _sink(sinks: SuccessSinks, name: str, event_type: str) -> SuccessSink:
    found = sinks.find(name, event_type)
    assert found is not None
    return found[1]


def _buckets(*seconds: float) -> list[int]:
    tally = Tally()
    for value in seconds:
        tally.add(value, ok=True)
    return tally.buckets


def test_find_gives_the_subscription_and_its_sink_or_none_for_an_unknown_name() -> None:
    registry = Registry()
    handler = registry.register(["user.*"], _noop, name="audit")
    sinks = SuccessSinks(Metrics(), HandlingLog(), registry)
    found = sinks.find("audit", "user.created")
    assert found is not None and found[0] is handler
    assert found[1].destination == ("user.*", True)  # the label its traces and failures use
    assert sinks.find("audit", "user.created") == found  # the same sink, looked up once
    assert sinks.find("audit", "user.deleted") != found  # one per event type
    assert sinks.find("renamed", "user.created") is None
