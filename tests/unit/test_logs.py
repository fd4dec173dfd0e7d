import json
import logging

from eventproc.logs import JsonFormatter, TextFormatter


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
