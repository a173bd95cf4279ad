"""What model tokens cost: a price per model, in USD per 1M tokens (CONTRACT.md §9).

A USD price per 1M tokens is exactly a micro-USD price per token, so a call's cost is the sum of its
tokens times their prices, rounded up to the whole micro-dollar once, at the end. The sums are
`Fraction`s, never floats: the figures charged to a budget are exact.

`DEFAULT_PRICES` are list prices of a few common models behind OpenAI-compatible APIs, as a starting
point only: prices change and each provider sets its own, so operators override and extend them with
`LEVQOR_LLM_PRICES` (JSON, `{"<model>": {"input": 2.5, "cached_input": 1.25, "output": 10}}`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

PRICE_FIELDS = ("input", "cached_input", "output")


class ModelPrice(BaseModel):
    """USD per 1M tokens of prompt (`input`), of prompt read from the provider's cache
    (`cached_input`, the input price when not given) and of completion (`output`)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    input: Decimal = Field(ge=0, allow_inf_nan=False)
    output: Decimal = Field(ge=0, allow_inf_nan=False)
    cached_input: Decimal | None = Field(None, ge=0, allow_inf_nan=False)

    @property
    def cached_input_price(self) -> Decimal:
        return self.input if self.cached_input is None else self.cached_input

    def cost_micros(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> int:
        """USD micro-dollars for these tokens, rounded up; `cached_tokens` are part of `prompt_tokens`."""
        cached = min(max(cached_tokens, 0), prompt_tokens)
        exact = (
            (prompt_tokens - cached) * Fraction(self.input)
            + cached * Fraction(self.cached_input_price)
            + completion_tokens * Fraction(self.output)
        )
        return math.ceil(exact)


# Defaults to be overridden (see the module docstring), USD per 1M tokens.
DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    model: ModelPrice(input=Decimal(inp), cached_input=Decimal(cached), output=Decimal(out))
    for model, (inp, cached, out) in {
        "gpt-4o": ("2.50", "1.25", "10.00"),
        "gpt-4o-mini": ("0.15", "0.075", "0.60"),
        "gpt-4.1": ("2.00", "0.50", "8.00"),
        "gpt-4.1-mini": ("0.40", "0.10", "1.60"),
        "gpt-4.1-nano": ("0.10", "0.025", "0.40"),
        "o3": ("2.00", "0.50", "8.00"),
        "o4-mini": ("1.10", "0.275", "4.40"),
        "gpt-5": ("1.25", "0.125", "10.00"),
        "gpt-5-mini": ("0.25", "0.025", "2.00"),
        "gpt-5-nano": ("0.05", "0.005", "0.40"),
    }.items()
}


def parse_prices(value: Any) -> dict[str, ModelPrice]:
    """`LEVQOR_LLM_PRICES` as a table; raises `ValueError` with a sentence naming what is wrong.

    Takes the JSON text, or an already parsed table: a mapping or (model, price) pairs, as settings
    copied with overrides hold it."""
    if isinstance(value, str):
        try:
            # Decimals straight from the text: 0.15 stays 0.15, not the float nearest to it.
            value = json.loads(value, parse_float=Decimal, parse_constant=_no_constant)
        except ValueError as exc:
            raise ValueError(
                f'must be JSON like {{"<model>": {{"input": 2.5, "output": 10}}}}: {exc}'
            ) from None
    if isinstance(value, (list, tuple)) and all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in value
    ):
        value = dict(value)
    if not isinstance(value, Mapping):
        raise ValueError('must be a JSON object of models, like {"<model>": {"input": 2.5, "output": 10}}')
    table: dict[str, ModelPrice] = {}
    for model, price in value.items():
        if not isinstance(model, str) or not model.strip():
            raise ValueError("has an empty model name")
        if isinstance(price, ModelPrice):
            table[model] = price
            continue
        if not isinstance(price, Mapping):
            raise ValueError(f"has {model!r}: {price!r}, not an object of prices")
        table[model] = _model_price(model, price)
    return table


def _model_price(model: str, price: Mapping[str, Any]) -> ModelPrice:
    unknown = sorted(str(name) for name in price if name not in PRICE_FIELDS)
    if unknown:
        raise ValueError(f"has {model!r} with {', '.join(unknown)}: the prices are {', '.join(PRICE_FIELDS)}")
    for name, amount in price.items():
        if name == "cached_input" and amount is None:  # the input price
            continue
        if isinstance(amount, bool) or not isinstance(amount, (int, Decimal, float)):
            raise ValueError(f"has {model!r} with {name} {amount!r}: a price is a number (USD per 1M tokens)")
    try:
        return ModelPrice.model_validate(dict(price))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "missing":
            raise ValueError(f"has {model!r} without {where} (USD per 1M tokens)") from None
        raise ValueError(f"has {model!r} with {where} {error['input']}: {error['msg'].lower()}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a price")


def price_table(overrides: Mapping[str, ModelPrice]) -> dict[str, ModelPrice]:
    """The built-in defaults, overridden and extended by the configured table."""
    return {**DEFAULT_PRICES, **overrides}
