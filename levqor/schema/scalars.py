"""`Micros`: money as integer USD micro-dollars, the one representation on every surface."""

from __future__ import annotations

from typing import Any, NewType

import strawberry
from strawberry.types.scalar import ScalarDefinition

# The largest amount an exact JSON number carries (2^53 - 1): past nine billion USD.
MAX_SAFE_MICROS = 2**53 - 1

Micros = NewType("Micros", int)


def _parse_micros(value: Any) -> Micros:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("Micros must be a whole number of USD micro-dollars, as a JSON integer")
    if not 0 <= value <= MAX_SAFE_MICROS:
        raise ValueError(f"Micros must be between 0 and {MAX_SAFE_MICROS}")
    return Micros(value)


MICROS: ScalarDefinition = strawberry.scalar(
    name="Micros",
    description=(
        "USD micro-dollars (1 USD = 1,000,000) as a JSON integer, as the REST API's `*_micros` fields. "
        "Not an Int: GraphQL's Int stops at 2^31 - 1, about 2,147 USD."
    ),
    serialize=int,
    parse_value=_parse_micros,
)

# The schema's `scalar_map`.
SCALARS: dict[object, ScalarDefinition] = {Micros: MICROS}


def micros(value: int | None) -> Micros | None:
    """A stored amount as the scalar (None stays None)."""
    return None if value is None else Micros(value)
