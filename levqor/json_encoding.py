"""`json.dumps` with its encoder built once.

`json.dumps(value)` with any option but the defaults builds a `JSONEncoder`, and every `encode` call
builds the C encoder anew; on a line or answer per request that is a measurable share of the work.
`Encoder` builds the C encoder once with the same options and gives the same text. It skips the
check for circular references: a value that contains itself fails with a RecursionError, and the
encoder then lets `json.JSONEncoder` report it as `json.dumps` would (a ValueError).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import (  # type: ignore[attr-defined]
    c_make_encoder,
    encode_basestring,
    encode_basestring_ascii,
)
from typing import Any


class Encoder:
    """`json.dumps(value, separators=..., ensure_ascii=..., default=...)` as a callable."""

    def __init__(
        self,
        *,
        separators: tuple[str, str] = (", ", ": "),
        ensure_ascii: bool = True,
        default: Callable[[Any], Any] | None = None,
    ) -> None:
        item_separator, key_separator = separators
        self._fallback = json.JSONEncoder(separators=separators, ensure_ascii=ensure_ascii, default=default)
        self._c = (
            c_make_encoder(
                None,  # no circular-reference check (see the module's docstring)
                self._fallback.default,
                encode_basestring_ascii if ensure_ascii else encode_basestring,
                None,  # no indent
                key_separator,
                item_separator,
                False,  # sort_keys
                False,  # skipkeys
                True,  # allow_nan
            )
            if c_make_encoder is not None
            else None
        )

    def __call__(self, value: Any) -> str:
        if self._c is not None:
            try:
                return "".join(self._c(value, 0))
            except RecursionError:
                pass
        return self._fallback.encode(value)
