"""Levqor's input types build their values with `LeanInputBuilder` (levqor/schema/input_values.py):
for every input type of the schema and a spread of values, what it builds must equal what
Strawberry's own conversion builds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from graphql import GraphQLInputObjectType, coerce_input_value
from strawberry.types.arguments import convert_argument
from strawberry.types.base import StrawberryObjectDefinition
from strawberry.types.unset import UNSET

from levqor.schema import schema
from levqor.schema.input_values import LeanInputBuilder

CONVERTER = schema.schema_converter
INPUTS: dict[str, StrawberryObjectDefinition] = {
    graphql_type.definition.name: graphql_type.definition
    for graphql_type in CONVERTER.type_map.values()
    if isinstance(graphql_type.definition, StrawberryObjectDefinition) and graphql_type.definition.is_input
}

# Raw values per input type, as a client sends them; graphql-core coerces them first, as it does for
# variables. Each type gets: the least it takes, every field set, and nulls where nulls are allowed.
VALUES: dict[str, list[dict[str, Any]]] = {
    "SubmitJobInput": [
        {"workflow": "echo", "payload": {"n": 1}},
        {
            "workflow": "sleep",
            "payload": {"seconds": 0.5, "nested": [1, None, {"ü": "✓"}]},
            "callbackUrl": "https://example.com/hook",
            "priority": "HIGH",
            "userId": "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "runAt": "2030-01-02T03:04:05+00:00",
            "maxAttempts": 5,
            "timeoutS": 30,
        },
        {"workflow": "echo", "payload": {}, "callbackUrl": None, "priority": None, "runAt": None},
    ],
    "JobFilter": [{}, {"status": "SUCCEEDED", "workflow": "echo"}, {"status": None, "workflow": None}],
    "UpsertUserInput": [
        {"email": "a@example.com", "name": "A"},
        {"email": "a@example.com", "name": "A", "locale": "en-GB", "currency": "GBP", "meta": {"k": [1]}},
        {"email": "a@example.com", "name": "A", "locale": None, "currency": None, "meta": None},
    ],
    "UpdateUserInput": [{}, {"name": "B", "locale": "fr", "currency": "EUR", "meta": {}}, {"meta": None}],
    "ClaimJobsInput": [
        {"workerId": "w1", "workflows": []},
        {"workerId": "w1", "workflows": ["echo", "sleep"], "maxJobs": 5, "waitS": 1.5, "leaseS": 30},
        {"workerId": "w1", "workflows": ["echo"], "maxJobs": None, "waitS": None, "leaseS": None},
    ],
    "HeartbeatJobInput": [
        {"workerId": "w1", "attempt": 1},
        {"workerId": "w1", "attempt": 2, "progress": {"done": 0.5}, "leaseS": 60},
    ],
    "CompleteJobRunInput": [
        {"workerId": "w1", "attempt": 1, "result": {"ok": True}},
        {"workerId": "w1", "attempt": 1, "result": [1, 2], "cost": "0.0123"},
        {"workerId": "w1", "attempt": 1, "result": "done", "cost": None},
    ],
    "FailJobRunInput": [
        {"workerId": "w1", "attempt": 1, "error": "boom"},
        {"workerId": "w1", "attempt": 3, "error": {"message": "x"}, "retryable": False, "retryAfterS": 2.5},
    ],
    "CreateApiKeyInput": [
        {"name": "ops", "scopes": ["admin"]},
        {"name": "ops", "scopes": ["jobs:read", "jobs:write"], "expiresAt": "2031-05-06T07:08:09Z"},
        {"name": "ops", "scopes": [], "expiresAt": None},
    ],
}


@contextmanager
def strawberrys_own_conversion(definition: StrawberryObjectDefinition) -> Iterator[None]:
    builder = definition.from_input
    definition.from_input = None
    try:
        yield
    finally:
        definition.from_input = builder


def test_every_input_type_builds_leanly_and_is_covered_here() -> None:
    assert all(isinstance(definition.from_input, LeanInputBuilder) for definition in INPUTS.values())
    # A new input type needs values here, or it would go unchecked.
    assert set(INPUTS) == set(VALUES)


def _sample_values() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, values in VALUES.items():
        for value in values:
            yield name, value


@pytest.mark.parametrize(("name", "raw"), list(_sample_values()))
def test_the_lean_value_is_strawberrys_value(name: str, raw: dict[str, Any]) -> None:
    definition = INPUTS[name]
    graphql_type = CONVERTER.type_map[name].implementation
    assert isinstance(graphql_type, GraphQLInputObjectType)
    coerced = coerce_input_value(raw, graphql_type)
    assert isinstance(coerced, dict), f"not a valid {name}: {raw}"

    lean = convert_argument(coerced, definition.origin, CONVERTER.scalar_registry, schema.config)
    with strawberrys_own_conversion(definition):
        own = convert_argument(coerced, definition.origin, CONVERTER.scalar_registry, schema.config)

    assert type(lean) is type(own) is definition.origin
    assert vars(lean) == vars(own)
    # Fields the client left out stay unset, not None, so the resolvers can tell them apart.
    for field in definition.fields:
        graphql_name = schema.config.name_converter.from_field(field)
        if graphql_name not in raw and field.default_value is UNSET:
            assert getattr(lean, field.python_name) is UNSET
