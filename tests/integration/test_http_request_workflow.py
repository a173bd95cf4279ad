"""The `http.request` workflow against a real HTTP server on loopback: the callback guard refuses it
unless LEVQOR_CALLBACK_ALLOW_PRIVATE is set, and answers map to success, retry or failure. (How the
guard connects, pins and caps is tested in test_callback_guard.py.)"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from levqor.config import Settings
from levqor.workflows import JobFailed, JobRunContext, registry_for


class Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        received = self.rfile.read(length).decode() if length else ""
        status = int(self.path.strip("/").split("/")[0] or 200)
        body = json.dumps(
            {
                "method": self.command,
                "body": received,
                "host": self.headers["Host"],
                "x": self.headers["X-Test"],
            }
        ).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if status == 503:
            self.send_header("Retry-After", "7")
        if status == 302:
            self.send_header("Location", "http://127.0.0.1:1/elsewhere")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads the answers, not a log."""


@pytest.fixture(scope="module")
def target() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def run(payload: dict[str, Any], *, allow_private: bool) -> dict[str, Any]:
    settings = Settings(callback_allow_private=allow_private)
    flow = registry_for(settings).get("http.request")
    flow.validate(payload)
    assert flow.handler is not None
    ctx = JobRunContext(job_id=uuid.uuid4(), attempt=1, workflow=flow.name, worker_id="w", settings=settings)
    return await flow.handler(payload, ctx)


async def test_loopback_is_refused_without_the_private_setting(target: str) -> None:
    for url in (f"{target}/200", target.replace("127.0.0.1", "localhost") + "/200"):
        with pytest.raises(JobFailed, match="not a public address") as caught:
            await run({"url": url}, allow_private=False)
        assert caught.value.retryable is False


async def test_a_request_with_a_json_body_returns_status_headers_and_body(target: str) -> None:
    result = await run(
        {"method": "POST", "url": f"{target}/201", "headers": {"X-Test": "yes"}, "body": {"a": [1, 2]}},
        allow_private=True,
    )
    assert result["status"] == 201
    assert result["json"] == {"method": "POST", "body": '{"a": [1, 2]}', "host": target[7:], "x": "yes"}
    assert result["headers"]["content-type"] == "application/json"
    assert result["truncated"] is False


async def test_redirects_are_reported_not_followed(target: str) -> None:
    result = await run({"url": f"{target}/302"}, allow_private=True)
    assert result["status"] == 302
    assert result["headers"]["location"] == "http://127.0.0.1:1/elsewhere"


async def test_server_errors_are_retried_and_client_errors_are_not(target: str) -> None:
    with pytest.raises(JobFailed) as unavailable:
        await run({"url": f"{target}/503"}, allow_private=True)
    assert (unavailable.value.retryable, unavailable.value.retry_after_s) == (True, 7.0)
    assert unavailable.value.details["status"] == 503
    with pytest.raises(JobFailed) as missing:
        await run({"url": f"{target}/404"}, allow_private=True)
    assert missing.value.retryable is False


async def test_an_unreachable_host_fails_the_attempt() -> None:
    with pytest.raises(JobFailed, match="failed") as caught:
        await run({"url": "http://127.0.0.1:1/", "timeout_s": 2}, allow_private=True)
    assert caught.value.retryable is True


async def test_every_form_of_a_loopback_address_is_refused(target: str) -> None:
    port = target.rsplit(":", 1)[1]
    for host in ("2130706433", "0x7f000001", "0177.0.0.1", "[::ffff:127.0.0.1]", "0.0.0.0"):
        with pytest.raises(JobFailed) as caught:
            await run({"url": f"http://{host}:{port}/200"}, allow_private=False)
        assert caught.value.retryable is False, host


async def test_the_timeout_covers_the_whole_exchange() -> None:
    """A receiver that accepts and never answers fails the attempt at `timeout_s`."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        started = time.monotonic()
        with pytest.raises(JobFailed, match=r"timed out after 0\.5 s") as caught:
            await run({"url": url, "timeout_s": 0.5}, allow_private=True)
    assert time.monotonic() - started < 2
    assert caught.value.retryable is True
