"""The `llm.chat` workflow against a real chat-completions server on loopback: what it sends, what a
call costs at the configured price, and how cut streams and error answers fail."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from levqor.config import Settings
from levqor.errors import InvalidRequest
from levqor.workflows import CostExceeded, JobFailed, JobRunContext, TokenUsage, registry_for
from levqor.workflows.llm_chat import endpoint
from tests.callback_support import wait_for_job
from tests.conftest import LiveServer

API_KEY = "sk-test-0123456789abcdef"
MODEL = "test-model"
# USD per 1M tokens, that is micro-USD per token.
PRICES = json.dumps({MODEL: {"input": 0.15, "cached_input": 0.075, "output": 0.6}})
# What the server reports: 1201 prompt tokens of which 203 cached, 301 completion tokens of which 97
# reasoning. (1201 - 203) * 0.15 + 203 * 0.075 + 301 * 0.6 = 149.7 + 15.225 + 180.6 = 345.525.
USAGE = {
    "prompt_tokens": 1201,
    "completion_tokens": 301,
    "total_tokens": 1502,
    "prompt_tokens_details": {"cached_tokens": 203},
    "completion_tokens_details": {"reasoning_tokens": 97},
}
COST_MICROS = 346  # 345.525 rounded up
TOKENS = TokenUsage(prompt_tokens=1201, completion_tokens=301, cached_tokens=203, reasoning_tokens=97)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello."}]


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class ChatServer:
    """Speaks the chat-completions API; the mode is the base URL's last path segment."""

    url: str
    received: list[Received] = field(default_factory=list)

    def base_url(self, mode: str = "ok") -> str:
        return f"{self.url}/v1/{mode}"


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "test-model-0001",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


STREAM_CHUNKS = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Hel"}),
    _chunk({"content": "lo ☀"}),
    _chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "wave"}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"hand":'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ' "left"}'}}]}),
    _chunk({}, "stop"),
]


def _handler(received: list[Received]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # chunked streams, so a cut one is seen as cut

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length))
            received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            mode = self.path.split("/")[2]
            if mode in ("429", "500", "400"):
                return self._error(int(mode))
            if body.get("stream"):
                return self._stream(mode, body)
            return self._json(200, self._completion())

        def _completion(self) -> dict[str, Any]:
            return {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": "test-model-0001",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Hello ☀"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": USAGE,
            }

        def _error(self, status: int) -> None:
            # As some providers do: the error names the key it was sent.
            message = f"rejected for key {self.headers.get('Authorization', '').removeprefix('Bearer ')}"
            self._json(status, {"error": {"message": message, "type": "test"}})

        def _json(self, status: int, answer: dict[str, Any]) -> None:
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 429:
                self.send_header("Retry-After", "3")
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, mode: str, body: dict[str, Any]) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            events = [json.dumps(chunk) for chunk in STREAM_CHUNKS]
            if mode == "cut":
                events = events[:3]
            elif (body.get("stream_options") or {}).get("include_usage") and mode != "nousage":
                events.append(json.dumps({**_chunk({}), "choices": [], "usage": USAGE}))
            if mode != "cut":
                events.append("[DONE]")
            for event in events:
                data = f"data: {event}\n\n".encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            if mode == "cut":  # the connection drops: no last chunk, no [DONE]
                self.close_connection = True
                return
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the test reads what was received, not a log."""

    return Handler


@pytest.fixture(scope="module")
def chat_server() -> Iterator[ChatServer]:
    received: list[Received] = []
    http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(received))
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield ChatServer(f"http://127.0.0.1:{http.server_address[1]}", received)
    http.shutdown()
    http.server_close()


@pytest.fixture
def chat(chat_server: ChatServer) -> ChatServer:
    chat_server.received.clear()
    return chat_server


def settings_for_mode(chat: ChatServer, mode: str = "ok", **env: str) -> Settings:
    values = {
        "LEVQOR_LLM_BASE_URL": chat.base_url(mode),
        "LEVQOR_LLM_API_KEY": API_KEY,
        "LEVQOR_LLM_PRICES": PRICES,
        **env,
    }
    return Settings.from_mapping(values)


def context(settings: Settings, **fields: Any) -> JobRunContext:
    return JobRunContext(
        job_id=uuid.uuid4(), attempt=1, workflow="llm.chat", worker_id="w", settings=settings, **fields
    )


async def run(
    settings: Settings, payload: dict[str, Any], ctx: JobRunContext | None = None
) -> dict[str, Any]:
    flow = registry_for(settings).get("llm.chat")
    flow.validate(payload)
    assert flow.handler is not None
    return await flow.handler(payload, ctx or context(settings))


async def test_a_completion_sends_the_payload_and_is_charged_its_usage_at_the_price(chat: ChatServer) -> None:
    settings = settings_for_mode(chat)
    ctx = context(settings)
    payload = {"model": MODEL, "messages": MESSAGES, "temperature": 0.2, "stop": ["\n\n"]}
    result = await run(settings, payload, ctx)
    (request,) = chat.received
    assert request.path == "/v1/ok/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == {**payload, "max_tokens": 1024, "stream": False}
    assert result == {
        "model": "test-model-0001",
        "message": {"role": "assistant", "content": "Hello ☀"},
        "finish_reason": "stop",
        "usage": {**TOKENS.as_dict()},
        "cost_micros": COST_MICROS,
    }
    assert (ctx.cost_micros, ctx.cost_estimated, ctx.usage) == (COST_MICROS, False, TOKENS)


async def test_without_a_key_no_authorization_is_sent(chat: ChatServer) -> None:
    settings = settings_for_mode(chat).with_overrides(llm_api_key=None)
    await run(settings, {"model": MODEL, "messages": MESSAGES, "max_tokens": 5})
    (request,) = chat.received
    assert "authorization" not in request.headers
    assert request.body["max_tokens"] == 5


async def test_a_stream_is_assembled_and_charged_its_final_usage(chat: ChatServer) -> None:
    settings = settings_for_mode(chat)
    ctx = context(settings)
    result = await run(settings, {"model": MODEL, "messages": MESSAGES, "stream": True}, ctx)
    (request,) = chat.received
    assert request.body["stream"] is True
    assert request.body["stream_options"] == {"include_usage": True}
    assert request.headers["accept"] == "text/event-stream"
    assert result["message"] == {
        "role": "assistant",
        "content": "Hello ☀",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "wave", "arguments": '{"hand": "left"}'},
            }
        ],
    }
    assert result["finish_reason"] == "stop"
    assert result["model"] == "test-model-0001"
    assert (result["usage"], result["cost_micros"]) == (TOKENS.as_dict(), COST_MICROS)
    assert (ctx.cost_micros, ctx.cost_estimated, ctx.usage) == (COST_MICROS, False, TOKENS)


@pytest.mark.parametrize("mode", ["cut", "nousage"])
async def test_a_stream_ended_before_its_usage_is_charged_the_reservation_and_retried(
    chat: ChatServer, mode: str
) -> None:
    settings = settings_for_mode(chat, mode)
    ctx = context(settings, cost_estimate_micros=900, reserved_micros=1200)
    with pytest.raises(JobFailed) as caught:
        await run(settings, {"model": MODEL, "messages": MESSAGES, "stream": True}, ctx)
    assert caught.value.retryable is True
    assert caught.value.details == {"type": "stream_incomplete", "charged_micros": 1200}
    assert (ctx.cost_micros, ctx.cost_estimated) == (1200, True)


async def test_a_cut_stream_without_a_reservation_is_charged_the_estimate(chat: ChatServer) -> None:
    settings = settings_for_mode(chat, "cut")
    payload = {"model": MODEL, "messages": MESSAGES, "stream": True, "max_tokens": 50}
    ctx = context(settings, cost_estimate_micros=777)
    with pytest.raises(JobFailed, match="before its usage"):
        await run(settings, payload, ctx)
    assert (ctx.cost_micros, ctx.cost_estimated) == (777, True)
    # Nothing known at all: the estimate is made again from the payload, never zero.
    bare = context(settings)
    with pytest.raises(JobFailed):
        await run(settings, payload, bare)
    expected = registry_for(settings).get("llm.chat").estimate_cost(payload)
    assert expected is not None
    assert expected > 0
    assert (bare.cost_micros, bare.cost_estimated) == (expected, True)


async def test_a_charge_past_the_reservation_stops_the_job(chat: ChatServer) -> None:
    settings = settings_for_mode(chat)
    ctx = context(settings, reserved_micros=COST_MICROS - 1)
    with pytest.raises(CostExceeded) as caught:
        await run(settings, {"model": MODEL, "messages": MESSAGES}, ctx)
    assert caught.value.retryable is False
    assert ctx.cost_micros == COST_MICROS


async def test_rate_limits_and_server_errors_are_retried_with_the_servers_delay(chat: ChatServer) -> None:
    payload = {"model": MODEL, "messages": MESSAGES}
    with pytest.raises(JobFailed) as limited:
        await run(settings_for_mode(chat, "429"), payload)
    assert (limited.value.retryable, limited.value.retry_after_s) == (True, 3.0)
    assert limited.value.details["status"] == 429
    with pytest.raises(JobFailed) as broken:
        await run(settings_for_mode(chat, "500"), payload)
    assert (broken.value.retryable, broken.value.retry_after_s) == (True, None)


async def test_a_client_error_is_not_retried_and_never_shows_the_key(chat: ChatServer) -> None:
    settings = settings_for_mode(chat, "400")
    ctx = context(settings)
    with pytest.raises(JobFailed) as caught:
        await run(settings, {"model": MODEL, "messages": MESSAGES}, ctx)
    assert caught.value.retryable is False
    assert caught.value.details["status"] == 400
    assert "rejected for key [redacted]" in caught.value.message
    everything = json.dumps(caught.value.as_error()) + repr(settings) + str(settings.model_dump())
    assert API_KEY not in everything
    assert ctx.cost_micros is None  # no usage, no charge: the provider bills no rejected request


async def test_an_unreachable_server_fails_the_attempt_for_a_retry() -> None:
    settings = Settings.from_mapping(
        {"LEVQOR_LLM_BASE_URL": "http://127.0.0.1:1/v1", "LEVQOR_LLM_PRICES": PRICES}
    )
    ctx = context(settings)
    with pytest.raises(JobFailed, match="cannot connect") as caught:
        await run(settings, {"model": MODEL, "messages": MESSAGES, "stream": True}, ctx)
    assert caught.value.retryable is True
    assert ctx.cost_micros is None  # nothing was sent


def test_the_default_base_url_is_guarded_and_a_configured_one_trusted() -> None:
    assert endpoint(Settings()) == ("https://api.openai.com/v1/chat/completions", False)
    configured = Settings.from_mapping({"LEVQOR_LLM_BASE_URL": "http://127.0.0.1:8080/v1/"})
    assert endpoint(configured) == ("http://127.0.0.1:8080/v1/chat/completions", True)


def test_a_model_without_a_price_is_refused_naming_the_field_and_the_priced_models(chat: ChatServer) -> None:
    flow = registry_for(settings_for_mode(chat)).get("llm.chat")
    with pytest.raises(InvalidRequest) as caught:
        flow.estimate_cost({"model": "no-such-model", "messages": MESSAGES})
    assert caught.value.details[0]["field"] == "payload.model"
    assert caught.value.details[0]["code"] == "enum"
    assert "'no-such-model'" in caught.value.message
    assert MODEL in caught.value.message
    assert "gpt-4o-mini" in caught.value.message


def test_payloads_outside_the_schema_are_refused(chat: ChatServer) -> None:
    flow = registry_for(settings_for_mode(chat)).get("llm.chat")
    for payload, where in [
        ({"model": MODEL, "messages": MESSAGES, "n": 3}, "payload"),
        ({"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, "payload.messages.0.role"),
        ({"model": MODEL, "messages": MESSAGES, "max_tokens": 0}, "payload.max_tokens"),
        ({"model": MODEL, "messages": []}, "payload.messages"),
    ]:
        with pytest.raises(InvalidRequest) as caught:
            flow.validate(payload)
        assert caught.value.details[0]["field"] == where, payload


@pytest.mark.timeout(120)
def test_an_llm_chat_job_runs_end_to_end_with_its_actual_cost(
    make_server: Callable[..., LiveServer], chat: ChatServer
) -> None:
    server = make_server(
        LEVQOR_INPROCESS_WORKER="true",
        LEVQOR_POLL_INTERVAL_MS="20",
        LEVQOR_LLM_BASE_URL=chat.base_url(),
        LEVQOR_LLM_API_KEY=API_KEY,
        LEVQOR_LLM_PRICES=PRICES,
    )
    with server.client() as http:
        response = http.post(
            "/api/v1/intake",
            json={"workflow": "llm.chat", "payload": {"model": MODEL, "messages": MESSAGES, "stream": True}},
        )
        assert response.status_code == 202, response.text
        job = wait_for_job(
            http, str(response.json()["job_id"]), lambda body: body["status"] not in ("queued", "running")
        )
        unpriced = http.post(
            "/api/v1/intake",
            json={"workflow": "llm.chat", "payload": {"model": "no-such-model", "messages": MESSAGES}},
        )
        assert unpriced.status_code == 400
        assert unpriced.json()["details"][0]["field"] == "payload.model"
    assert job["status"] == "succeeded", job
    assert job["cost_estimate_micros"] > COST_MICROS  # the worst case, held before the call
    assert job["cost_actual_micros"] == COST_MICROS
    assert job["result"]["message"]["content"] == "Hello ☀"
    assert API_KEY not in json.dumps(job)
