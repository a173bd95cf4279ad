"""The access log's direct path writes the line the logging machinery would, and steps aside for any
other logging set-up."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from levqor.logs import ACCESS_LOGGER, _only_destination, configure_logging, log_access

FIELDS = {
    "method": "POST",
    "path": "/api/v1/intake",
    "status": 202,
    "duration_ms": 1.25,
    "client_ip": "127.0.0.1",
    "user_agent": 'ünïcode "quoted" agent',
    "request_id": "abc123",
    "key_id": None,
}


@contextmanager
def json_logging(log_format: str = "json") -> Iterator[io.StringIO]:
    """`configure_logging` writing to a string, the root logger restored afterwards. Entered inside
    the test, as pytest adds its own capturing handler to the root logger for each test phase."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    configure_logging(log_format)
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    buffer = io.StringIO()
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_direct_line_is_the_logging_line() -> None:
    with json_logging() as stream:
        # The set-up `configure_logging` made is the only destination: the direct path is taken.
        assert _only_destination(logging.getLogger(ACCESS_LOGGER), logging.getLogger().handlers[0])
        log_access(dict(FIELDS))
        # The same record through the logging machinery, as any other logger's line is written.
        logging.getLogger(ACCESS_LOGGER).info("request", extra=dict(FIELDS))
    direct, through_logging = stream.getvalue().splitlines()
    direct_entry, logged_entry = json.loads(direct), json.loads(through_logging)
    assert list(direct_entry) == list(logged_entry) == ["ts", "level", "logger", "msg", *FIELDS]
    assert direct_entry.pop("ts")[:10] == logged_entry.pop("ts")[:10]
    assert (
        direct_entry == logged_entry == {"level": "info", "logger": ACCESS_LOGGER, "msg": "request", **FIELDS}
    )


def test_another_handler_gets_the_line_too() -> None:
    captured = io.StringIO()
    extra = logging.StreamHandler(captured)
    with json_logging() as stream:
        logging.getLogger().addHandler(extra)
        assert not _only_destination(logging.getLogger(ACCESS_LOGGER), logging.getLogger().handlers[0])
        log_access(dict(FIELDS))
    assert [entry["request_id"] for entry in _lines(stream)] == ["abc123"]
    assert captured.getvalue() == "request\n"  # the extra handler's own (default) format


def test_a_filter_on_the_access_logger_is_obeyed() -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    refuse_all = logging.Filter("nothing-matches-this-name")
    logger.addFilter(refuse_all)
    try:
        with json_logging() as stream:
            log_access(dict(FIELDS))
    finally:
        logger.removeFilter(refuse_all)
    assert stream.getvalue() == ""


def test_a_raised_level_silences_the_access_log() -> None:
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.setLevel(logging.WARNING)
    try:
        with json_logging() as stream:
            log_access(dict(FIELDS))
    finally:
        logger.setLevel(logging.NOTSET)
    assert stream.getvalue() == ""


def test_text_lines_take_the_logging_path() -> None:
    with json_logging("text") as stream:
        log_access(dict(FIELDS))
    line = stream.getvalue()
    assert f" INFO {ACCESS_LOGGER}: request " in line
    assert "request_id=abc123" in line
