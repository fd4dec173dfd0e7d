"""Logging setup: JSON lines for Cloud Logging, readable lines in a terminal.

Structured fields travel in ``extra=`` under fixed names (event_id,
event_type, attempt, duration_ms, action), so JSON logs are filterable.
"""

import asyncio
import json
import logging
import sys
import time
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any, TextIO

FIELDS = ("event_id", "event_type", "attempt", "duration_ms", "action", "worker")


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``severity`` is what Cloud Logging reads.

    A busy worker writes one line per event, so this is on the hot path: one
    shared encoder (``json.dumps`` with options builds a new one per call) and
    the date part of the timestamp formatted once per second.
    """

    def __init__(self) -> None:
        super().__init__()
        self._encode = json.JSONEncoder(default=str).encode
        self._second = -1
        self._prefix = ""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "time": self._timestamp(record.created),
            "logger": record.name,
        }
        given = record.__dict__
        for name in FIELDS:
            value = given.get(name)
            if value is not None:
                entry[name] = value if isinstance(value, int | float) else str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return self._encode(entry)

    def event_line(
        self,
        created: float,
        logger_name: str,
        message: str,
        event_id: str,
        event_type: str,
        attempt: int,
        duration_ms: float,
        action: str,
    ) -> str:
        """What :meth:`format` makes of an INFO record with these fields, without the record."""
        template = self.event_template(logger_name, message, action)
        return template.line(created, event_id, event_type, attempt, duration_ms)

    def event_template(self, logger_name: str, message: str, action: str) -> "EventTemplate":
        """:meth:`event_line` with its constant parts encoded once."""
        return EventTemplate(self, logger_name, message, action)

    def _timestamp(self, created: float) -> str:
        """RFC 3339 in UTC, always with six fractional digits (truncated)."""
        second = int(created)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        micros = min(int((created - second) * 1_000_000), 999_999)
        return f"{self._prefix}.{micros:06d}+00:00"


class EventTemplate:
    """One kind of event line (logger, message, action), its constant JSON encoded once."""

    __slots__ = ("_head", "_middle", "_tail", "_timestamp")

    def __init__(
        self, formatter: JsonFormatter, logger_name: str, message: str, action: str
    ) -> None:
        self._timestamp = formatter._timestamp
        self._head = f'{{"severity": "INFO", "message": {_json_string(message)}, "time": "'
        self._middle = f'", "logger": {_json_string(logger_name)}, "event_id": '
        self._tail = f', "action": {_json_string(action)}}}'

    def line(
        self, created: float, event_id: str, event_type: str, attempt: int, duration_ms: float
    ) -> str:
        return (
            f"{self._head}{self._timestamp(created)}{self._middle}{_json_string(event_id)}, "
            f'"event_type": {_json_string(event_type)}, "attempt": {int(attempt)}, '
            f'"duration_ms": {float(duration_ms)!r}{self._tail}'
        )


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


class LoopBatchedHandler(logging.StreamHandler[TextIO]):
    """Writes the lines logged during one turn of the event loop with one write.

    A busy worker logs a line per event, and writing and flushing each line
    cost more than formatting it. Inside a running loop a line waits only for
    the end of the loop's current turn (``call_soon``), in order; WARNING and
    above, and lines logged outside a loop, are written at once, together
    with anything still waiting.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []
        # The loop a write is scheduled on; a loop closed before it ran its
        # callback must not keep later lines waiting.
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._waiting.append(self.format(record))
        except Exception:
            self.handleError(record)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or record.levelno >= logging.WARNING:
            self._write_waiting()
        elif self._scheduled_on is not loop:
            self._scheduled_on = loop
            loop.call_soon(self._write_scheduled)

    def write_line(self, line: str) -> None:
        """Queue a line already formatted (see :class:`EventLine`) like an INFO record."""
        lock = self.lock
        assert lock is not None  # made by Handler.__init__
        with lock:
            self._waiting.append(line)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is None:
                self._write_waiting()
            elif self._scheduled_on is not loop:
                self._scheduled_on = loop
                loop.call_soon(self._write_scheduled)

    def flush(self) -> None:
        self.acquire()
        try:
            self._write_waiting()
        finally:
            self.release()

    def _write_scheduled(self) -> None:
        self.acquire()
        try:
            self._scheduled_on = None
            self._write_waiting()
        finally:
            self.release()

    def _write_waiting(self) -> None:
        # Called with the handler's lock held (Handler.handle takes it for emit).
        if self._waiting:
            lines, self._waiting = self._waiting, []
            try:
                self.stream.write("\n".join(lines) + "\n")
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": lines[-1]}))
        super().flush()


class EventLine:
    """The INFO line of a handled event, built without a LogRecord when nothing would see one.

    A busy worker writes one such line per event, and going through a
    LogRecord made logging a quarter of its CPU. When the only thing the line
    would reach is one :class:`LoopBatchedHandler` with the JSON formatter (no
    filters on the way, nothing else listening), the line is formatted
    straight from its fields, as the formatter would have done; otherwise it
    is logged the usual way, so user-installed handlers and filters see every
    record.
    """

    def __init__(self, logger: logging.Logger, message: str, *, action: str) -> None:
        self.logger = logger
        self.message = message
        self.action = action
        self._template: tuple[JsonFormatter, EventTemplate] | None = None  # of the last formatter

    def __call__(
        self,
        event_id: object,
        event_type: str,
        attempt: int,
        duration_ms: float,
        created: float | None = None,
    ) -> None:
        """One line; ``event_id`` is made text and ``duration_ms`` rounded only if it is written.

        ``created``: the line's time (time.time()), when the caller has it already.
        """
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        handler = _only_json_handler(logger)
        if handler is None:
            logger.info(
                self.message,
                extra={
                    "event_id": str(event_id),
                    "event_type": event_type,
                    "attempt": attempt,
                    "duration_ms": round(duration_ms, 2),
                    "action": self.action,
                },
            )
            return
        formatter: JsonFormatter = handler.formatter  # type: ignore[assignment]
        known = self._template
        if known is None or known[0] is not formatter:
            template = formatter.event_template(logger.name, self.message, self.action)
            known = self._template = (formatter, template)
        line = known[1].line(
            time.time() if created is None else created,
            str(event_id),
            event_type,
            attempt,
            round(duration_ms, 2),
        )
        handler.write_line(line)


def _only_json_handler(logger: logging.Logger) -> LoopBatchedHandler | None:
    """The one handler an INFO record of ``logger`` would reach, if it is ours and unfiltered."""
    found: LoopBatchedHandler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or current.disabled:
            return None
        for handler in current.handlers:
            if (
                found is not None
                or type(handler) is not LoopBatchedHandler
                or handler.filters
                or handler.level > logging.INFO
                or type(handler.formatter) is not JsonFormatter
            ):
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    return found


def configure(level: str = "info", fmt: str = "auto", *, production: bool = False) -> None:
    """Install one handler on the root logger (idempotent)."""
    use_json = fmt == "json" or (fmt == "auto" and (production or not sys.stderr.isatty()))
    handler = LoopBatchedHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_eventproc", False):
            root.removeHandler(existing)
    handler._eventproc = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(_level(level))
    # Neither formatter prints the caller, thread or process of a record, and
    # looking them up is a third of what a log call costs (the Optimization
    # section of the logging docs names these switches). Process-wide: other
    # handlers in this process no longer get funcName, lineno or threadName.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # uvicorn's access log would repeat every health probe; keep its errors.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # Alembic announces each of its plugins and steps at INFO on every start
    # (about nine lines); they are worth reading only when debugging.
    debugging = root.level <= logging.DEBUG
    logging.getLogger("alembic").setLevel(logging.NOTSET if debugging else logging.WARNING)


def _level(name: str) -> int:
    name = name.upper()
    return logging.WARNING if name == "WARN" else logging.getLevelNamesMapping()[name]
