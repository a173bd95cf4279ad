"""The `llm.chat` workflow: one chat completion from an OpenAI-compatible API (CONTRACT.md §9).

The payload is sent as the request body to `{LEVQOR_LLM_BASE_URL}/chat/completions`, with the key of
`LEVQOR_LLM_API_KEY` as a bearer token. The cost is the reported token usage at the model's price
(levqor/costs/prices.py); a stream cut before its usage is charged what the job reserved, flagged as
estimated, since the provider bills the tokens it generated whether or not they arrived.

The default base URL is reached through the outbound guard (public addresses only). A base URL the
operator sets is trusted, private addresses included, so a local inference server works; it is
configuration, never a client's choice.

Streams are read whole, under the one deadline and size cap of the guard, then parsed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from levqor.callbacks.guard import AddressRefused, GuardedResponse, OutboundSession, guarded_request
from levqor.config import DEFAULT_LLM_BASE_URL, MAX_LLM_TIMEOUT_S, Settings
from levqor.costs.prices import ModelPrice
from levqor.errors import FieldCode, InvalidRequest
from levqor.workflows.context import JobFailed, JobRunContext, TokenUsage
from levqor.workflows.llm_stream import ChatStream, token_usage
from levqor.workflows.registry import Workflow

DEFAULT_MAX_TOKENS = 1024  # CONTRACT.md §9
MAX_TOKENS_CAP = 131_072
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_STREAM_BYTES = 64 * 1024 * 1024  # a streamed answer is one event of ~200 bytes per token or so
MAX_ERROR_CHARS = 500
ROLES = ["system", "developer", "user", "assistant", "tool"]
# The prompt-token bound. A byte-level BPE token stands for at least one byte of text, so a text's
# UTF-8 length bounds its tokens from above; the chat template adds a few tokens of its own around
# each message (role, separators, special tokens) and before the reply.
MESSAGE_OVERHEAD_TOKENS = 16
REPLY_OVERHEAD_TOKENS = 16
# `tools` and `response_format` are framed by the provider's own template; their JSON's length and
# this allowance per field stand for it (an allowance, not a proven bound).
FRAMING_ALLOWANCE_TOKENS = 1024

_TEXT_PART = {
    "type": "object",
    "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
    "required": ["type", "text"],
    "additionalProperties": False,
}
_MESSAGE = {
    "type": "object",
    "properties": {
        "role": {"enum": ROLES},
        "content": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": _TEXT_PART, "maxItems": 256},
                {"type": "null"},
            ]
        },
        "name": {"type": "string", "maxLength": 256},
        "tool_calls": {"type": "array", "items": {"type": "object"}, "maxItems": 128},
        "tool_call_id": {"type": "string", "maxLength": 256},
    },
    "required": ["role"],
    "anyOf": [{"required": ["content"]}, {"required": ["tool_calls"]}],
    "additionalProperties": False,
}
LLM_CHAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "model": {"type": "string", "minLength": 1, "maxLength": 256},
        "messages": {"type": "array", "items": _MESSAGE, "minItems": 1, "maxItems": 4096},
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": MAX_TOKENS_CAP},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "top_p": {"type": "number", "minimum": 0, "maximum": 1},
        "stop": {
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]
        },
        "stream": {"type": "boolean", "default": False},
        "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
        "seed": {"type": "integer"},
        "response_format": {"type": "object"},
        "tools": {"type": "array", "items": {"type": "object"}, "maxItems": 128},
        "tool_choice": {"anyOf": [{"enum": ["none", "auto", "required"]}, {"type": "object"}]},
        "parallel_tool_calls": {"type": "boolean"},
        "user": {"type": "string", "maxLength": 256},
    },
    "required": ["model", "messages"],
    "additionalProperties": False,
}


def llm_chat_schema(prices: Mapping[str, ModelPrice]) -> dict[str, Any]:
    """LLM_CHAT_SCHEMA with `model` one of the priced models, so that the published schema says
    which models intake takes (an unpriced one could not be estimated)."""
    model = {
        **LLM_CHAT_SCHEMA["properties"]["model"],
        "enum": sorted(prices),
        "description": "A model with a price: the built-in table, or LEVQOR_LLM_PRICES.",
    }
    return {**LLM_CHAT_SCHEMA, "properties": {**LLM_CHAT_SCHEMA["properties"], "model": model}}


def _utf8_length(value: Any) -> int:
    return (
        len(value.encode()) if isinstance(value, str) else len(json.dumps(value, ensure_ascii=False).encode())
    )


def prompt_token_bound(payload: Mapping[str, Any]) -> int:
    """At least as many tokens as the prompt can have (see MESSAGE_OVERHEAD_TOKENS): with no
    tokenizer at hand, the UTF-8 bytes of every message's text plus a fixed overhead per message."""
    total = REPLY_OVERHEAD_TOKENS
    for message in payload.get("messages") or []:
        total += MESSAGE_OVERHEAD_TOKENS
        content = message.get("content")
        if isinstance(content, str):
            total += _utf8_length(content)
        elif isinstance(content, list):
            total += sum(_utf8_length(part.get("text", "")) for part in content if isinstance(part, Mapping))
        for name in ("name", "tool_call_id", "tool_calls"):
            if name in message:
                total += _utf8_length(message[name])
    for name in ("tools", "response_format"):
        if name in payload:
            total += _utf8_length(payload[name]) + FRAMING_ALLOWANCE_TOKENS
    return total


def model_price(prices: Mapping[str, ModelPrice], model: Any) -> ModelPrice:
    """The price of `model`; an unknown one is refused naming the models that have a price."""
    price = prices.get(model) if isinstance(model, str) else None
    if price is None:
        raise InvalidRequest.for_field(
            "payload.model",
            f"no price is known for model {model!r} (priced: {', '.join(sorted(prices))}; "
            "the operator adds models with LEVQOR_LLM_PRICES)",
            FieldCode.ENUM,
        )
    return price


class ChatCompletionCost:
    """The worst case of one chat completion (CONTRACT.md §9): the prompt-token bound at the input
    price plus `max_tokens` at the output price, rounded up; no prompt is assumed cached."""

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self.prices = dict(prices)

    def estimate(self, payload: Mapping[str, Any]) -> int:
        price = model_price(self.prices, payload.get("model"))
        max_tokens = int(payload.get("max_tokens", DEFAULT_MAX_TOKENS))
        return price.cost_micros(prompt_token_bound(payload), max_tokens)


def endpoint(settings: Settings) -> tuple[str, bool]:
    """The chat-completions URL and whether it may be a private address (the operator set it)."""
    base_url = settings.llm_base_url or DEFAULT_LLM_BASE_URL
    return f"{base_url}/chat/completions", settings.llm_base_url is not None


def _redacted(text: str, settings: Settings) -> str:
    """`text` without the API key, should a provider echo it back."""
    if settings.llm_api_key is not None and (key := settings.llm_api_key.get_secret_value()):
        text = text.replace(key, "[redacted]")
    return text


def _stored(result: dict[str, Any]) -> dict[str, Any]:
    return {key: _storable(value) for key, value in result.items()}


def _storable(value: Any) -> Any:
    """The answer with U+0000 replaced: it cannot be stored in a PostgreSQL jsonb value."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_storable(item) for item in value]
    if isinstance(value, dict):
        return {key: _storable(item) for key, item in value.items()}
    return value


def _charge(ctx: JobRunContext, price: ModelPrice, usage: TokenUsage) -> int:
    cost = price.cost_micros(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
    ctx.report_usage(usage)
    ctx.report_cost(cost)
    return cost


def _charge_reservation(ctx: JobRunContext, price: ModelPrice, payload: Mapping[str, Any]) -> int:
    """What an attempt whose usage never arrived is charged: the job's reservation, else its
    estimate, else the estimate made again; never zero, as the provider may have billed it all."""
    if ctx.reserved_micros is not None:
        amount = ctx.reserved_micros
    elif ctx.cost_estimate_micros is not None:
        amount = ctx.cost_estimate_micros
    else:
        amount = price.cost_micros(
            prompt_token_bound(payload), int(payload.get("max_tokens", DEFAULT_MAX_TOKENS))
        )
    ctx.report_cost(amount, estimated=True)
    return amount


def _stream_incomplete(
    ctx: JobRunContext, price: ModelPrice, payload: Mapping[str, Any], why: str
) -> JobFailed:
    charged = _charge_reservation(ctx, price, payload)
    return JobFailed(
        f"the chat completion stream ended before its usage ({why}); charged the reservation of "
        f"{charged} micro-USD",
        details={"type": "stream_incomplete", "charged_micros": charged},
    )


def _retry_after_s(response: GuardedResponse) -> float | None:
    try:
        seconds = float(response.headers.get("retry-after", "").strip())
    except ValueError:  # absent, or an HTTP date
        return None
    return seconds if 0 <= seconds < float("inf") else None


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        found = json.loads(body)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return None
    return found if isinstance(found, dict) else None


def _provider_error(ctx: JobRunContext, price: ModelPrice, response: GuardedResponse, host: str) -> JobFailed:
    answer = _json_object(response.body) or {}
    usage = token_usage(answer.get("usage"))
    if usage is not None:  # billed although it failed
        _charge(ctx, price, usage)
    error = answer.get("error")
    message = error.get("message") if isinstance(error, Mapping) else None
    if not isinstance(message, str):
        message = response.body.decode("utf-8", errors="replace")
    message = _redacted(message, ctx.settings)[:MAX_ERROR_CHARS].replace("\x00", "\ufffd")
    retryable = response.status_code == 429 or response.status_code >= 500
    return JobFailed(
        f"the chat completions API at {host} answered {response.status_code}: {message}",
        retryable=retryable,
        retry_after_s=_retry_after_s(response) if retryable else None,
        details={"type": "provider_error", "status": response.status_code, "provider_message": message},
    )


def _request(payload: Mapping[str, Any], settings: Settings) -> tuple[dict[str, str], bytes, bool]:
    stream = bool(payload.get("stream", False))
    body = {**payload, "max_tokens": int(payload.get("max_tokens", DEFAULT_MAX_TOKENS)), "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if stream else "application/json",
    }
    if settings.llm_api_key is not None and (key := settings.llm_api_key.get_secret_value()):
        headers["Authorization"] = f"Bearer {key}"
    return headers, json.dumps(body, ensure_ascii=False).encode(), stream


async def llm_chat(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    settings = ctx.settings
    try:
        price = model_price(settings.llm_price_table, payload.get("model"))
    except InvalidRequest as exc:  # the model lost its price after intake: sending again will not help
        raise JobFailed(exc.message, retryable=False, details={"type": "unknown_model"}) from None
    url, trusted = endpoint(settings)
    host = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    headers, content, stream = _request(payload, settings)
    timeout_s = settings.llm_timeout_s
    async with OutboundSession(allow_private=trusted) as outbound:
        try:
            response = await guarded_request(
                outbound,
                "POST",
                url,
                headers=headers,
                content=content,
                timeout_s=timeout_s,
                max_response_bytes=MAX_STREAM_BYTES if stream else MAX_RESPONSE_BYTES,
            )
        except AddressRefused as exc:
            raise JobFailed(str(exc), retryable=False, details={"type": "address_refused"}) from None
        except aiohttp.ClientConnectorError as exc:  # nothing was sent
            raise JobFailed(f"cannot connect to the chat completions API at {host}: {exc.os_error}") from None
        except TimeoutError:
            if stream:
                raise _stream_incomplete(ctx, price, payload, f"no end within {timeout_s:g} s") from None
            raise JobFailed(
                f"the chat completions API at {host} did not answer within {timeout_s:g} s"
            ) from None
        except aiohttp.ClientError as exc:
            if stream:
                raise _stream_incomplete(
                    ctx, price, payload, f"the connection failed: {type(exc).__name__}"
                ) from None
            raise JobFailed(f"the chat completions API at {host} failed: {type(exc).__name__}") from None
    if response.status_code >= 400:
        raise _provider_error(ctx, price, response, host)
    if stream and not response.headers.get("content-type", "").startswith("application/json"):
        return _streamed_result(payload, ctx, price, response)
    return _completion_result(payload, ctx, price, response, host)


def _completion_result(
    payload: Mapping[str, Any], ctx: JobRunContext, price: ModelPrice, response: GuardedResponse, host: str
) -> dict[str, Any]:
    answer = None if response.truncated else _json_object(response.body)
    choices = answer.get("choices") if answer is not None else None
    usage = token_usage(answer.get("usage")) if answer is not None else None
    if answer is None or not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        if usage is not None:
            _charge(ctx, price, usage)
        else:
            _charge_reservation(ctx, price, payload)
        raise JobFailed(
            f"the chat completions API at {host} answered {response.status_code} without a completion",
            details={"type": "bad_response", "status": response.status_code},
        )
    # Answered without usage, the cost cannot be measured: the worst case, flagged as estimated.
    cost = _charge_reservation(ctx, price, payload) if usage is None else _charge(ctx, price, usage)
    first = choices[0]
    return _stored(
        {
            "model": answer.get("model") or payload["model"],
            "message": first.get("message") or {},
            "finish_reason": first.get("finish_reason"),
            "usage": None if usage is None else usage.as_dict(),
            "cost_micros": cost,
        }
    )


def _streamed_result(
    payload: Mapping[str, Any], ctx: JobRunContext, price: ModelPrice, response: GuardedResponse
) -> dict[str, Any]:
    if response.truncated:
        raise _stream_incomplete(ctx, price, payload, f"longer than {MAX_STREAM_BYTES} bytes")
    stream = ChatStream.parse(response.body)
    if stream.usage is None:
        why = "the stream was not valid" if stream.broken else ("no usage" if stream.done else "no [DONE]")
        raise _stream_incomplete(ctx, price, payload, why)
    cost = _charge(ctx, price, stream.usage)
    return _stored(
        {
            "model": stream.model or payload["model"],
            "message": stream.message(),
            "finish_reason": stream.finish_reason,
            "usage": stream.usage.as_dict(),
            "cost_micros": cost,
        }
    )


def llm_chat_workflow(prices: Mapping[str, ModelPrice]) -> Workflow:
    """`llm.chat`, estimating with `prices` (the settings' table: levqor/costs/prices.py)."""
    return Workflow(
        name="llm.chat",
        description=(
            "One chat completion from the configured OpenAI-compatible API (LEVQOR_LLM_BASE_URL), "
            "streamed or not; returns the message, finish reason, token usage and cost. The estimate "
            "is the worst case: the prompt's UTF-8 bytes (a token is at least one byte) plus a fixed "
            f"overhead per message at the input price, and max_tokens (default {DEFAULT_MAX_TOKENS}) "
            "at the output price."
        ),
        payload_schema=llm_chat_schema(prices),
        timeout_s=MAX_LLM_TIMEOUT_S + 30,
        cost_model=ChatCompletionCost(prices),
        handler=llm_chat,
    )
