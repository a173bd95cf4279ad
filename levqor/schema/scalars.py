"""Integer scalars wider than GraphQL's `Int`, which is 32-bit (GraphQL spec §3.5.1) and ends at
about 2147 USD in micro-dollars."""

from __future__ import annotations

from typing import Any, NewType

import strawberry
from strawberry.types.scalar import ScalarDefinition

# The largest integer every JSON reader keeps exactly (an IEEE 754 double's 53-bit mantissa).
MAX_SAFE_INTEGER = 2**53 - 1


def _whole_number(name: str, what: str) -> Any:
    def parse(value: Any) -> int:
        # `bool` is an `int` in Python; JSON's true is not a number.
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be {what} as a JSON integer, not {_kind(value)}")
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError(f"{name} must be between -{MAX_SAFE_INTEGER} and {MAX_SAFE_INTEGER}")
        return value

    return parse


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a number with a fraction or exponent" if not value.is_integer() else "a float"
    if isinstance(value, str):
        return "a string"
    return "null" if value is None else f"a JSON {type(value).__name__}"


def _serialize(value: Any) -> int:
    return int(value)


# The Python types of the fields; `SCALARS` maps each to its GraphQL scalar (the schema's
# `StrawberryConfig.scalar_map`).
Micros = NewType("Micros", int)
Long = NewType("Long", int)


def optional_micros(value: int | None) -> Micros | None:
    return None if value is None else Micros(value)


SCALARS: dict[object, ScalarDefinition] = {
    Micros: strawberry.scalar(
        name="Micros",
        description="An amount of USD in micro-dollars (1 USD = 1000000), as a JSON integer: the same "
        "number REST's `..._micros` fields carry. GraphQL's Int is 32-bit and ends near 2147 USD, so "
        "money has its own scalar, exact up to 2^53 - 1. Only integers are accepted: a boolean, a "
        "float (even 1.0) or a string is refused.",
        serialize=_serialize,
        parse_value=_whole_number("Micros", "a whole number of USD micro-dollars"),
    ),
    Long: strawberry.scalar(
        name="Long",
        description="A count (of tokens) as a JSON integer, past GraphQL Int's 32 bits: exact up to "
        "2^53 - 1. Only integers are accepted.",
        serialize=_serialize,
        parse_value=_whole_number("Long", "a whole number"),
    ),
}
