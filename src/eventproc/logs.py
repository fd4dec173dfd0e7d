"""Logging setup: JSON lines for Cloud Logging, readable lines in a terminal.

Structured fields travel in ``extra=`` under fixed names (event_id,
event_type, attempt, duration_ms, action), so JSON logs are filterable.
"""

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

FIELDS = ("event_id", "event_type", "attempt", "duration_ms", "action", "worker")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``severity`` is what Cloud Logging reads."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "logger": record.name,
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value if isinstance(value, int | float) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL message  key=value ...`` for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [
            f"{name}={getattr(record, name)}"
            for name in FIELDS
            if getattr(record, name, None) is not None and name != "action"
        ]
        return f"{line}  {' '.join(extras)}" if extras else line


def configure(level: str = "info", fmt: str = "auto", *, production: bool = False) -> None:
    """Install one handler on the root logger (idempotent)."""
    use_json = fmt == "json" or (fmt == "auto" and (production or not sys.stderr.isatty()))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_eventproc", False):
            root.removeHandler(existing)
    handler._eventproc = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(_level(level))
    # uvicorn's access log would repeat every health probe; keep its errors.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)


def _level(name: str) -> int:
    name = name.upper()
    return logging.WARNING if name == "WARN" else logging.getLevelNamesMapping()[name]
