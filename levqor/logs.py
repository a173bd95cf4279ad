"""Log set-up: one JSON object per line in production, readable text in a terminal.

The access log (`levqor.access`, a line per request) is written straight to `configure_logging`'s
JSON handler while that handler is the line's only destination, and the lines of one event-loop turn
leave in one write: about half the CPU of the logging path (bench/README.md). Any other set-up gets
the ordinary logging path, so nothing is lost or bypassed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=` and is context.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI copy of the message
}


# Built once: `json.dumps` with options builds an encoder per call.
_encode = json.JSONEncoder(default=str).encode


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # Records come many to a second: the date and time up to the second is formatted once.
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        exc = self.formatException(record.exc_info) if record.exc_info else None
        return self.line(
            record.created, record.levelname, record.name, record.getMessage(), _context(record), exc
        )

    def line(
        self,
        created: float,
        level_name: str,
        logger_name: str,
        message: str,
        context: dict[str, Any],
        exc: str | None = None,
    ) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(created),
            "level": level_name.lower(),
            "logger": logger_name,
            "msg": message,
            **context,
        }
        if exc is not None:
            entry["exc"] = exc
        return _encode(entry)

    def _timestamp(self, created: float) -> str:
        """ISO 8601 in UTC to the millisecond, as `datetime.isoformat(timespec="milliseconds")`."""
        # Rounded to the microsecond the way `datetime.fromtimestamp` rounds, then cut to the millisecond.
        fraction, whole = math.modf(created)
        second, microsecond = int(whole), round(fraction * 1_000_000)
        if microsecond >= 1_000_000:
            second, microsecond = second + 1, microsecond - 1_000_000
        if second != self._second:
            self._second_text = datetime.fromtimestamp(second, UTC).isoformat()[: -len("+00:00")]
            self._second = second
        return f"{self._second_text}.{microsecond // 1000:03d}+00:00"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = " ".join(f"{key}={value}" for key, value in _context(record).items())
        return f"{line} {context}" if context else line


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that also takes access lines already formatted, and writes those of one turn
    of the event loop in one write at its end (or at once, called outside an event loop)."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: list[str] = []

    def add_line(self, line: str) -> None:
        with self.lock:  # type: ignore[union-attr]  # set by `Handler.__init__`
            first = not self._waiting
            self._waiting.append(line + self.terminator)
        if not first:
            return  # the flush the first line scheduled takes this one too
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
        else:
            loop.call_soon(self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        # Called with the lock held (`Handler.handle`): the waiting lines came first, so they go first.
        self._write_waiting()
        super().emit(record)

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write_waiting()
            super().flush()

    def _write_waiting(self) -> None:
        if not self._waiting:
            return
        text = "".join(self._waiting)
        self._waiting.clear()
        try:
            self.stream.write(text)
        except Exception:  # as `StreamHandler.emit` does: a broken log must not break a request
            self.handleError(logging.makeLogRecord({"msg": text}))


ACCESS_LOGGER = "levqor.access"
_access_logger = logging.getLogger(ACCESS_LOGGER)
# The handler `configure_logging` installed with JSON lines, and its formatter; None until then, or
# with text lines.
_json_handler: JsonLinesHandler | None = None
_json_formatter: JsonFormatter | None = None


def log_access(fields: dict[str, Any]) -> None:
    """The access log line: `logging.getLogger("levqor.access").info("request", extra=fields)`.

    Handed straight to `configure_logging`'s JSON handler when that handler is still the only place
    the line can go; otherwise by the logging machinery, without its look-up of the caller's source
    line (a walk up the stack per request, for a location no one reads)."""
    logger = _access_logger
    if not logger.isEnabledFor(logging.INFO):
        return
    handler, formatter = _json_handler, _json_formatter
    if handler is not None and formatter is not None and _only_destination(logger, handler):
        handler.add_line(formatter.line(time.time(), "INFO", ACCESS_LOGGER, "request", fields))
        return
    record = logger.makeRecord(
        ACCESS_LOGGER, logging.INFO, "(unknown file)", 0, "request", (), None, "(unknown function)", fields
    )
    logger.handle(record)


def _only_destination(logger: logging.Logger, handler: logging.Handler) -> bool:
    """Whether `handler` is the one handler a record of `logger` reaches, with no filter on the way."""
    if logger.disabled or logger.filters or handler.filters or handler.level > logging.INFO:
        return False
    if handler.formatter is not _json_formatter:
        return False
    current: logging.Logger | None = logger
    while current is not None:
        if current.handlers:
            return current.parent is None and len(current.handlers) == 1 and current.handlers[0] is handler
        if not current.propagate:
            return False
        current = current.parent
    return False


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    # Thread, process and multiprocessing names are never logged; not looking them up on every
    # record is measurably cheaper on the request path.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    global _json_handler, _json_formatter
    handler: logging.StreamHandler[Any]
    if log_format == "json":
        handler = JsonLinesHandler()
        _json_handler, _json_formatter = handler, JsonFormatter()
        handler.setFormatter(_json_formatter)
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        _json_handler = _json_formatter = None
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Our access log replaces uvicorn's, which would log each request a second time.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
