"""The access log's direct path writes the line the logging machinery would, and steps aside for any
other logging set-up; its lines wait for the end of the event loop's turn, and nothing else's."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from levqor.logs import ACCESS_LOGGER, _encode, _only_destination, configure_logging, log_access

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


def test_lines_of_one_loop_turn_are_written_together_at_its_end() -> None:
    async def requests(stream: io.StringIO) -> tuple[str, str]:
        for number in range(3):
            log_access({**FIELDS, "request_id": f"r{number}"})
        during_the_turn = stream.getvalue()
        await asyncio.sleep(0)  # the turn ends: the flush it scheduled runs
        return during_the_turn, stream.getvalue()

    with json_logging() as stream:
        during_the_turn, after_it = asyncio.run(requests(stream))
    assert during_the_turn == ""
    assert [json.loads(line)["request_id"] for line in after_it.splitlines()] == ["r0", "r1", "r2"]


def test_other_records_and_flushes_write_the_waiting_lines_first() -> None:
    async def requests(stream: io.StringIO) -> list[str]:
        log_access({**FIELDS, "request_id": "first"})
        logging.getLogger("levqor.errors").warning("after the first request")
        log_access({**FIELDS, "request_id": "second"})
        logging.getLogger().handlers[0].flush()  # as `logging.shutdown` does at exit
        written = [json.loads(line)["msg"] for line in stream.getvalue().splitlines()]
        log_access({**FIELDS, "request_id": "third"})
        await asyncio.sleep(0)
        return written

    with json_logging() as stream:
        written_before_the_turn_ended = asyncio.run(requests(stream))
    assert written_before_the_turn_ended == ["request", "after the first request", "request"]
    assert [entry.get("request_id") for entry in _lines(stream)] == ["first", None, "second", "third"]


def test_a_broken_stream_does_not_break_the_request(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    async def request() -> None:
        log_access(dict(FIELDS))
        await asyncio.sleep(0)

    with json_logging() as stream:
        logging.getLogger().handlers[0].setStream(Broken())
        asyncio.run(request())  # does not raise
    assert stream.getvalue() == ""
    assert "disk full" in capsys.readouterr().err  # `Handler.handleError` reports it


@pytest.mark.parametrize(
    "context",
    [
        {"text": 'ünïcode "quoted" \\ \n\t\x00 \ud800 line'},
        {"float": 1.5, "big": 1e100, "nan": float("nan"), "inf": float("-inf"), "int": 2**70},
        {"nested": {"list": [1, None, True, False, "x"], "tuple": (1, 2)}, "empty": {}},
        {"object": ValueError("an exception"), "path": Path("/tmp/x"), 3: "int key", None: "none key"},
    ],
)
def test_the_encoder_writes_what_json_dumps_writes(context: dict[Any, Any]) -> None:
    assert _encode(context) == json.dumps(context, default=str)


def test_a_record_that_contains_itself_is_refused_as_json_dumps_refuses_it() -> None:
    context: dict[str, Any] = {}
    context["self"] = context
    with pytest.raises(ValueError, match="Circular reference"):
        _encode(context)
