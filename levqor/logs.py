"""Log set-up: one JSON object per line in production, readable text in a terminal."""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra=` and is context.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's ANSI copy of the message
}


# `json.dumps(entry, default=str)`, without building an encoder for each record.
_ENCODER = json.JSONEncoder(default=str)


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD}


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # Records come many to a second: the date and time up to the second is formatted once.
        self._second = -1
        self._second_text = ""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)

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


def configure_logging(log_format: str, level: int = logging.INFO) -> None:
    # Thread, process and multiprocessing names are never logged; not looking them up on every
    # record is measurably cheaper on the request path.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler()
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Our access log replaces uvicorn's, which would log each request a second time.
    logging.getLogger("uvicorn.access").disabled = True
    logging.getLogger("alembic").setLevel(logging.WARNING)
