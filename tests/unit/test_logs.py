import asyncio
import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from eventproc.logs import EventLine, JsonFormatter, LoopBatchedHandler, TextFormatter

Batched = tuple[logging.Logger, LoopBatchedHandler, io.StringIO]


def record(**extra: object) -> logging.LogRecord:
    entry = logging.LogRecord(
        "eventproc.dispatch", logging.INFO, __file__, 1, "Event %s", ("ok",), None
    )
    for key, value in extra.items():
        setattr(entry, key, value)
    return entry


def test_json_lines_carry_the_fixed_fields() -> None:
    line = JsonFormatter().format(
        record(event_id="e1", event_type="t", attempt=2, duration_ms=1.5, action="succeeded")
    )
    entry = json.loads(line)
    assert entry["severity"] == "INFO" and entry["message"] == "Event ok"
    assert entry["event_id"] == "e1" and entry["attempt"] == 2 and entry["duration_ms"] == 1.5


def test_text_lines_are_readable() -> None:
    line = TextFormatter().format(record(event_id="e1", attempt=1))
    assert "INFO" in line and "Event ok" in line and "event_id=e1" in line


def test_json_time_is_utc_rfc3339_with_microseconds() -> None:
    formatter = JsonFormatter()
    for created in (1_764_486_000.0, 1_764_486_000.25, 1_764_486_001.999_999_4, 0.5):
        entry = record()
        entry.created = created
        stamp = json.loads(formatter.format(entry))["time"]
        drift = datetime.fromisoformat(stamp) - datetime.fromtimestamp(created, UTC)
        assert abs(drift) <= timedelta(microseconds=1)
        assert stamp.endswith("+00:00") and len(stamp) == len("2026-11-30T07:09:22.000000+00:00")


def logger_writing_with(formatter: logging.Formatter) -> Iterator[Batched]:
    """A fresh INFO logger whose only handler is a LoopBatchedHandler into a string."""
    stream = io.StringIO()
    handler = LoopBatchedHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"eventproc.test.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield logger, handler, stream
    logger.removeHandler(handler)


@pytest.fixture
def batched() -> Iterator[Batched]:
    yield from logger_writing_with(logging.Formatter("%(levelname)s %(message)s"))


async def test_lines_of_one_loop_turn_are_written_together_and_in_order(batched: Batched) -> None:
    logger, _, stream = batched
    logger.info("one")
    logger.info("two")
    assert stream.getvalue() == ""  # waiting for the end of this turn
    await asyncio.sleep(0)
    assert stream.getvalue() == "INFO one\nINFO two\n"


async def test_a_warning_is_written_at_once_after_what_waits(batched: Batched) -> None:
    logger, _, stream = batched
    logger.info("before")
    logger.warning("trouble")
    assert stream.getvalue() == "INFO before\nWARNING trouble\n"


async def test_flush_writes_what_waits(batched: Batched) -> None:
    logger, handler, stream = batched
    logger.info("last words")
    handler.flush()  # logging.shutdown() does this at exit
    assert stream.getvalue() == "INFO last words\n"


def test_outside_a_loop_lines_are_written_at_once(batched: Batched) -> None:
    logger, _, stream = batched
    logger.info("plain")
    assert stream.getvalue() == "INFO plain\n"


def test_a_loop_closed_before_its_write_does_not_hold_back_later_lines(batched: Batched) -> None:
    logger, _, stream = batched
    first = asyncio.new_event_loop()

    def log_then_stop() -> None:
        logger.info("from a loop that closes")
        first.stop()  # the write scheduled by that line never runs

    first.call_soon(log_then_stop)
    first.run_forever()
    first.close()
    assert stream.getvalue() == ""

    async def log_and_yield() -> None:
        logger.info("from the next loop")
        await asyncio.sleep(0)

    asyncio.run(log_and_yield())
    assert stream.getvalue() == "INFO from a loop that closes\nINFO from the next loop\n"


# -- the per-event line, without a LogRecord ------------------------------------

EVENT_FIELDS: dict[str, Any] = {
    "event_id": str(uuid.UUID(int=7)),
    "event_type": 'odd "type" \\ é\n',
    "attempt": 3,
    "duration_ms": 0.07,
}


@pytest.fixture
def json_logger() -> Iterator[Batched]:
    yield from logger_writing_with(JsonFormatter())


def test_the_direct_event_line_is_what_the_formatter_makes_of_the_record() -> None:
    formatter = JsonFormatter()
    for created in (1_764_486_000.0, 1_764_486_000.123_456_7):
        entry = logging.LogRecord("eventproc.dispatch", logging.INFO, __file__, 1, "Done", (), None)
        entry.created = created
        for key, value in {**EVENT_FIELDS, "action": "succeeded"}.items():
            setattr(entry, key, value)
        direct = formatter.event_line(
            created, "eventproc.dispatch", "Done", action="succeeded", **EVENT_FIELDS
        )
        assert direct == formatter.format(entry)


def test_an_event_line_reaching_only_our_json_handler_skips_the_record(
    json_logger: Batched, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, handler, stream = json_logger
    monkeypatch.setattr(
        logger, "handlers", [handler]
    )  # pytest's capture handlers, too, would see records
    monkeypatch.setattr(logger, "makeRecord", _no_records)
    EventLine(logger, "Event processed", action="succeeded")(**EVENT_FIELDS)
    handler.flush()
    entry = json.loads(stream.getvalue())
    assert entry["message"] == "Event processed" and entry["logger"] == logger.name
    assert entry["event_type"] == EVENT_FIELDS["event_type"] and entry["attempt"] == 3
    assert entry["action"] == "succeeded" and entry["duration_ms"] == 0.07


def test_an_event_line_goes_through_filters_and_other_handlers(
    json_logger: Batched, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, handler, stream = json_logger
    monkeypatch.setattr(logger, "handlers", [handler])
    seen: list[logging.LogRecord] = []

    def remember(record: logging.LogRecord) -> bool:
        seen.append(record)
        return True

    handler.addFilter(remember)
    line = EventLine(logger, "Event processed", action="succeeded")
    line(**EVENT_FIELDS)
    handler.flush()
    assert len(seen) == 1 and seen[0].event_id == EVENT_FIELDS["event_id"]  # type: ignore[attr-defined]
    assert json.loads(stream.getvalue())["event_type"] == EVENT_FIELDS["event_type"]

    handler.filters.clear()
    other = _Collecting()
    logger.parent.addHandler(other)  # type: ignore[union-attr]
    logger.propagate = True
    try:
        line(**EVENT_FIELDS)
    finally:
        logger.parent.removeHandler(other)  # type: ignore[union-attr]
    assert [record.getMessage() for record in other.records] == ["Event processed"]


def test_an_event_line_below_the_level_writes_nothing(json_logger: Batched) -> None:
    logger, handler, stream = json_logger
    logger.setLevel(logging.WARNING)
    EventLine(logger, "Event processed", action="succeeded")(**EVENT_FIELDS)
    handler.flush()
    assert stream.getvalue() == ""


async def test_direct_lines_keep_their_place_among_records(
    json_logger: Batched, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger, handler, stream = json_logger
    monkeypatch.setattr(logger, "handlers", [handler])
    monkeypatch.setattr(logger, "makeRecord", _no_records_for("Event processed", logger.makeRecord))
    logger.info("first")
    EventLine(logger, "Event processed", action="succeeded")(**EVENT_FIELDS)
    logger.warning("third")
    messages = [json.loads(line)["message"] for line in stream.getvalue().splitlines()]
    assert messages == ["first", "Event processed", "third"]


def _no_records(*args: object, **kwargs: object) -> logging.LogRecord:
    raise AssertionError("a LogRecord was made")


def _no_records_for(message: str, make: Any) -> Any:
    def checked(*args: Any, **kwargs: Any) -> logging.LogRecord:
        assert args[4] != message, "a LogRecord was made for the direct line"
        return make(*args, **kwargs)  # type: ignore[no-any-return]

    return checked


class _Collecting(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
