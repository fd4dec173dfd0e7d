import asyncio
import io
import json
import logging
from datetime import UTC, datetime, timedelta

from eventproc.logs import JsonFormatter, LoopBatchedHandler, TextFormatter


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


def batched(stream: io.StringIO) -> tuple[logging.Logger, LoopBatchedHandler]:
    handler = LoopBatchedHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"eventproc.test.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger, handler


async def test_lines_of_one_loop_turn_are_written_together_and_in_order() -> None:
    stream = io.StringIO()
    logger, _ = batched(stream)
    logger.info("one")
    logger.info("two")
    assert stream.getvalue() == ""  # waiting for the end of this turn
    await asyncio.sleep(0)
    assert stream.getvalue() == "INFO one\nINFO two\n"


async def test_a_warning_is_written_at_once_after_what_waits() -> None:
    stream = io.StringIO()
    logger, _ = batched(stream)
    logger.info("before")
    logger.warning("trouble")
    assert stream.getvalue() == "INFO before\nWARNING trouble\n"


async def test_flush_writes_what_waits() -> None:
    stream = io.StringIO()
    logger, handler = batched(stream)
    logger.info("last words")
    handler.flush()  # logging.shutdown() does this at exit
    assert stream.getvalue() == "INFO last words\n"


def test_outside_a_loop_lines_are_written_at_once() -> None:
    stream = io.StringIO()
    logger, _ = batched(stream)
    logger.info("plain")
    assert stream.getvalue() == "INFO plain\n"
