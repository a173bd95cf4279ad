"""Input objects built from their GraphQL values with the per-field decisions made once.

For every argument of every request, Strawberry's `convert_argument` walks an input type's fields
anew: it looks up each field's GraphQL name, resolves its type and tests which kind of type it is,
before it finds that most fields are scalars whose value is kept as it is. For `submitJob` that was a
sixth of the mutation's time. Strawberry lets an input type build its own value
(`StrawberryObjectDefinition.from_input`); `LeanInputBuilder` is that hook for Levqor's input types:
it makes the same decisions once per type (on first use, when the schema's scalars are known), keeps
scalar values as they are, and hands every other field (enums, lists, nested inputs, global ids) to
Strawberry's own conversion. The values built are Strawberry's (tests/unit/test_input_values.py
compares them with Strawberry's conversion).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import MISSING
from typing import Any

from strawberry.relay import GlobalID
from strawberry.scalars import is_scalar
from strawberry.types.arguments import InputContext
from strawberry.types.base import StrawberryMaybe, StrawberryOptional, StrawberryType, has_object_definition

# (python name, GraphQL name, the field's type, whether its value is kept as it is)
_Field = tuple[str, str, Any, bool]


class LeanInputBuilder:
    """`from_input` for one input type."""

    def __init__(self) -> None:
        self._fields: list[_Field] | None = None
        self._implicit_none: dict[str, None] = {}

    def __call__(self, type_: type, value: Mapping[str, Any], context: InputContext) -> Any:
        fields = self._fields
        if fields is None:
            fields = self._fields = self._plan(type_, context)
        # As Strawberry: a field without a default is None unless the value names it.
        kwargs: dict[str, Any] = dict(self._implicit_none)
        for python_name, graphql_name, field_type, kept in fields:
            if graphql_name in value:
                item = value[graphql_name]
                kwargs[python_name] = item if kept else context.convert(item, field_type, graphql_name)
        return type_(**kwargs)

    def _plan(self, type_: type, context: InputContext) -> list[_Field]:
        definition = type_.__strawberry_definition__  # type: ignore[attr-defined]
        fields: list[_Field] = []
        for field in definition.fields:
            field_type = field.resolve_type(type_definition=definition)
            graphql_name = context.config.name_converter.from_field(field)
            fields.append((field.python_name, graphql_name, field_type, _kept(field_type, context)))
            if field.default_value is MISSING and field.default_factory is MISSING:
                self._implicit_none[field.python_name] = None
        return fields


def _kept(field_type: StrawberryType | type, context: InputContext) -> bool:
    """Whether Strawberry keeps a value of this type as it is: a scalar, or an optional one (None and
    UNSET stay as they are too). Global ids are parsed and `Maybe` values wrapped, so they are not."""
    if isinstance(field_type, StrawberryMaybe):
        return False
    if isinstance(field_type, StrawberryOptional):
        field_type = field_type.of_type
    return field_type is not GlobalID and is_scalar(field_type, context.scalar_registry)


def build_inputs_leanly(input_types: Iterable[type]) -> None:
    """Give each input type that builds its value the ordinary way a `LeanInputBuilder`. Not to types
    with `Maybe` fields: Strawberry checks their nulls in validation only for types without a
    `from_input`."""
    for input_type in input_types:
        if not has_object_definition(input_type):
            continue
        definition = input_type.__strawberry_definition__
        if not definition.is_input or definition.from_input is not None:
            continue
        if any(
            isinstance(field.resolve_type(type_definition=definition), StrawberryMaybe)
            for field in definition.fields
        ):
            continue
        definition.from_input = LeanInputBuilder()
