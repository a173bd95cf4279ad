"""`Encoder` (levqor/json_encoding.py) writes what `json.dumps` writes with the same options."""

from __future__ import annotations

import json
from typing import Any

import pytest

from levqor.json_encoding import Encoder

VALUES: list[Any] = [
    {"data": {"submitJob": {"job": {"id": "1", "status": "QUEUED"}, "userErrors": []}}},
    {"text": 'ünïcode "quoted" \\ \n\t\x00 \ud800 ✓', "n": [1, -2.5, 1e100, 2**70, True, False, None]},
    {"nan": float("nan"), "inf": float("-inf"), 3: "int key", None: "none key", "empty": [{}, []]},
    ["a list", ("a", "tuple")],
    "a bare string",
]
OPTIONS: list[dict[str, Any]] = [
    {},
    {"separators": (",", ":")},
    {"separators": (",", ":"), "ensure_ascii": False},
]


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("value", VALUES)
def test_the_text_is_json_dumps_text(value: Any, options: dict[str, Any]) -> None:
    assert Encoder(**options)(value) == json.dumps(value, **options)


def test_what_json_dumps_refuses_is_refused_alike() -> None:
    looped: dict[str, Any] = {}
    looped["self"] = looped
    with pytest.raises(ValueError, match="Circular reference"):
        Encoder()(looped)
    with pytest.raises(TypeError, match="not JSON serializable"):
        Encoder()({"object": object()})
    assert Encoder(default=str)({"object": ValueError("x")}) == json.dumps(
        {"object": ValueError("x")}, default=str
    )
