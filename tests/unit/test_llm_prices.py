"""Model prices, the cost of reported usage and the worst-case estimate of `llm.chat` (no services)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from levqor.config import ConfigError, Settings
from levqor.costs.prices import DEFAULT_PRICES, ModelPrice
from levqor.errors import InvalidRequest
from levqor.workflows import TokenUsage, registry_for
from levqor.workflows.llm_chat import MESSAGE_OVERHEAD_TOKENS, REPLY_OVERHEAD_TOKENS, prompt_token_bound
from levqor.workflows.llm_stream import ChatStream

PRICES = '{"m": {"input": 0.1, "cached_input": 0.05, "output": 0.3}, "gpt-4o": {"input": 3, "output": 12}}'


def estimate(payload: dict[str, object], prices: str = PRICES) -> int | None:
    flow = registry_for(Settings.from_mapping({"LEVQOR_LLM_PRICES": prices})).get("llm.chat")
    return flow.estimate_cost(payload)


def test_a_cost_is_exact_and_rounded_up_once_to_the_micro_dollar() -> None:
    price = ModelPrice(input=Decimal("0.1"), cached_input=Decimal("0.05"), output=Decimal("0.3"))
    # 7 * 0.1 + 3 * 0.05 + 10 * 0.3 = 0.7 + 0.15 + 3 = 3.85: in floats 0.1 * 7 is 0.7000000000000001.
    assert price.cost_micros(10, 10, cached_tokens=3) == 4
    assert price.cost_micros(10, 0) == 1  # exactly 1.0, not rounded past it
    assert price.cost_micros(0, 0) == 0
    assert price.cost_micros(1, 0) == 1  # 0.1 of a micro-dollar is charged as one
    assert price.cost_micros(1_000_000, 1_000_000) == 400_000  # USD per 1M tokens: 0.1 + 0.3 USD


def test_cached_input_is_priced_as_input_unless_given() -> None:
    price = ModelPrice(input=Decimal(2), output=Decimal(8))
    assert price.cached_input_price == Decimal(2)
    assert price.cost_micros(100, 0, cached_tokens=40) == 200


def test_the_configured_prices_override_and_extend_the_defaults() -> None:
    table = Settings.from_mapping({"LEVQOR_LLM_PRICES": PRICES}).llm_price_table
    assert table["m"].cached_input == Decimal("0.05")
    assert table["gpt-4o"] == ModelPrice(input=Decimal(3), output=Decimal(12))
    assert table["gpt-4o-mini"] == DEFAULT_PRICES["gpt-4o-mini"]
    assert Settings().llm_price_table == dict(DEFAULT_PRICES)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{not json", "LEVQOR_LLM_PRICES must be JSON"),
        ('["m"]', "must be a JSON object of models"),
        ('{"m": 2}', "has 'm': 2, not an object of prices"),
        ('{"m": {"input": 1}}', "has 'm' without output"),
        ('{"m": {"input": -1, "output": 1}}', "has 'm' with input -1"),
        ('{"m": {"input": "1", "output": 1}}', "a price is a number"),
        ('{"m": {"input": 1, "output": 1, "cache": 1}}', "the prices are input, cached_input, output"),
        ('{"m": {"input": Infinity, "output": 1}}', "Infinity is not a price"),
        ('{"": {"input": 1, "output": 1}}', "an empty model name"),
    ],
)
def test_bad_prices_refuse_to_start(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_mapping({"LEVQOR_LLM_PRICES": value})


def test_prompt_tokens_are_bounded_by_utf8_bytes_plus_an_overhead_per_message() -> None:
    text = "héllo, wörld ☀ 日本"  # 17 characters, 25 bytes
    assert (len(text), len(text.encode())) == (17, 25)
    payload = {
        "messages": [
            {"role": "system", "content": text},
            {"role": "user", "content": [{"type": "text", "text": text}, {"type": "text", "text": "ab"}]},
        ]
    }
    assert prompt_token_bound(payload) == REPLY_OVERHEAD_TOKENS + 2 * MESSAGE_OVERHEAD_TOKENS + 25 + 25 + 2


def test_the_estimate_is_the_prompt_bound_at_input_plus_max_tokens_at_output_rounded_up() -> None:
    messages = [{"role": "user", "content": "x" * 5}]
    assert REPLY_OVERHEAD_TOKENS + MESSAGE_OVERHEAD_TOKENS + 5 == 37
    # No cached input is assumed: every prompt token at the input price. 37 * 0.1 + 7 * 0.3 = 5.8.
    assert estimate({"model": "m", "messages": messages, "max_tokens": 7}) == 6
    # max_tokens defaults to 1024: 3.7 + 1024 * 0.3 = 310.9.
    assert estimate({"model": "m", "messages": messages}) == 311


def test_an_unknown_model_is_refused_by_the_estimate() -> None:
    with pytest.raises(InvalidRequest) as caught:
        estimate({"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
    assert caught.value.details[0]["field"] == "payload.model"
    assert "'nope'" in caught.value.message
    assert "LEVQOR_LLM_PRICES" in caught.value.message


def test_a_stream_is_assembled_and_an_event_cut_before_its_end_is_not_read() -> None:
    body = (
        b'data: {"model": "m1", "choices": [{"delta": {"role": "assistant", "content": "a"}}]}\r\n\r\n'
        b": a comment\n\n"
        b'data: {"choices": [{"delta": {"content": "b"}, "finish_reason": "length"}]}\n\n'
        b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, '
        b'"prompt_tokens_details": {"cached_tokens": 1}, "completion_tokens_details": null}}\n\n'
    )
    stream = ChatStream.parse(body + b"data: [DONE]\n\n")
    assert stream.message() == {"role": "assistant", "content": "ab"}
    assert (stream.model, stream.finish_reason, stream.done) == ("m1", "length", True)
    assert stream.usage == TokenUsage(prompt_tokens=3, completion_tokens=2, cached_tokens=1)
    cut = ChatStream.parse(
        body[: body.index(b'data: {"choices": []')] + b'data: {"choices": [], "usage": {"prom'
    )
    assert (cut.usage, cut.done, cut.broken) == (None, False, False)
