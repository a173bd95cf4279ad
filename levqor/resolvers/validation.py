"""Turning untrusted input into typed input models, with errors that name each failing field."""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, StringConstraints, ValidationError
from pydantic_core import PydanticCustomError

from levqor.errors import InvalidRequest, NotFound

M = TypeVar("M", bound=BaseModel)


WORKFLOW_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"
WorkflowName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=WORKFLOW_NAME_PATTERN)]


def keyed_by_workflow(schema: dict[str, Any]) -> None:
    """The JSON Schema of a `dict[WorkflowName, V]`, as it is checked: every name must match (not
    only names that happen to match get their values checked, which is what pydantic writes)."""
    ((pattern, value),) = schema.pop("patternProperties").items()
    schema["propertyNames"] = {**schema.get("propertyNames", {}), "pattern": pattern}
    schema["additionalProperties"] = value


def _whole_number(value: Any) -> Any:
    # JSON has one number type: 3.0 is the integer 3, as JSON Schema's `integer` says.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_QUERY_DIGITS = re.compile(r"-?[0-9]{1,20}")


def _query_integer(value: Any) -> Any:
    # A query string is text; only plain decimal digits are the `integer` OpenAPI documents
    # (pydantic's lax parse would take `+1`, `1_0`, ` 10` and `10.0` too).
    if isinstance(value, str):
        if _QUERY_DIGITS.fullmatch(value) is None:
            raise PydanticCustomError("int_parsing", "Input should be a valid integer")
        return int(value)
    return value


def omittable_not_null(*names: str, **extra: Any) -> Callable[[dict[str, Any]], None]:
    """A model's `json_schema_extra` for fields that may be left out but not sent as null (the
    resolver refuses null): their schema loses its null alternative. `extra` adds keywords."""

    def edit(schema: dict[str, Any]) -> None:
        for name in names:
            prop = schema.get("properties", {}).get(name)
            if prop is None or "anyOf" not in prop:
                continue
            kept = [item for item in prop.pop("anyOf") if item != {"type": "null"}]
            prop.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
            if prop.get("default", ...) is None:
                del prop["default"]
        schema.update(extra)

    return edit


ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _iso_datetime(value: Any) -> Any:
    # Text must be ISO-8601 (`2026-12-07T10:00:00`, an offset or `Z` optional): not the Unix time
    # or the other forms pydantic's lax parse would take.
    if isinstance(value, str) and ISO_DATETIME.match(value) is None:
        raise ValueError("must be an ISO-8601 date and time, e.g. 2026-12-07T10:00:00Z")
    return value


def _in_utc(value: datetime) -> datetime:
    # ISO-8601 without an offset is taken as UTC, as intake's `run_at` is.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is past the last representable day
        raise ValueError("must fall between the years 1 and 9999 in UTC") from None


# An instant given as ISO-8601 text (a query parameter or a JSON string), as an aware UTC datetime.
IsoDateTime = Annotated[
    datetime, BeforeValidator(_iso_datetime), Field(strict=False), AfterValidator(_in_utc)
]

# After the constraints in `Annotated[int, Field(ge=1), WHOLE_NUMBER]`, so JSON Schema keeps them.
# An integer in a JSON body: 3 or 3.0, never true or "3".
WHOLE_NUMBER = BeforeValidator(_whole_number)
# An integer in a query string: its decimal digits.
QUERY_INTEGER = BeforeValidator(_query_integer)


def parse_input(model: type[M], data: Any) -> M:
    """Validate `data` (a decoded JSON object) against `model`; raise `InvalidRequest` otherwise."""
    if not isinstance(data, Mapping):
        raise InvalidRequest("the request body must be a JSON object")
    check_json_value(data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [
            {
                "field": ".".join(str(part) for part in error["loc"]) or None,
                "message": error["msg"],
                "code": error["type"],
            }
            for error in exc.errors(include_url=False, include_context=False, include_input=False)
        ]
        first = details[0]
        where = f"{first['field']}: " if first["field"] else ""
        raise InvalidRequest(f"{where}{first['message']}", details=details) from None


def parse_id(raw: str | uuid.UUID, *, kind: str) -> uuid.UUID:
    """An id from a path or argument; one that is not a UUID names nothing, so it is not found."""
    if isinstance(raw, uuid.UUID):
        return raw
    try:
        return uuid.UUID(raw)
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"no {kind} with id {str(raw)[:64]!r}") from None


MAX_JSON_DEPTH = 64


def check_json_value(value: Any) -> None:
    """Refuse what JSON columns cannot store faithfully on every dialect: U+0000 and lone surrogates
    in strings (PostgreSQL's jsonb rejects both), NaN and infinities, and nesting past 64 levels.

    Every intake body passes through here, so the walk names a value's path only when it refuses it:
    each stack entry carries its parent's entry and its own key, not a string built in advance."""
    stack: list[tuple[Any, _Trail, int]] = [(value, None, 0)]
    while stack:
        item, trail, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest.for_field(
                _path(trail), f"is nested deeper than {MAX_JSON_DEPTH} levels", "depth"
            )
        if isinstance(item, str):
            _check_text(item, trail)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InvalidRequest.for_field(_path(trail), "must be a finite number", "number")
        elif isinstance(item, dict | Mapping):
            depth += 1
            for key, child in item.items():
                _check_text(str(key), trail)
                stack.append((child, (trail, key), depth))
        elif isinstance(item, list | tuple):
            depth += 1
            stack.extend((child, (trail, index), depth) for index, child in enumerate(item))


# The way from the checked value to an item: (the parent's trail, the item's key or index); None at the top.
_Trail = tuple[Any, Any] | None


def _path(trail: _Trail) -> str:
    """`a.b.0` for a trail; `body` for the value itself."""
    keys: list[Any] = []
    while trail is not None:
        trail, key = trail
        keys.append(key)
    path = ""
    for key in reversed(keys):
        path = f"{path}.{key}" if path else str(key)  # so an empty key at the top adds no dot
    return path or "body"


def _check_text(text: str, trail: _Trail) -> None:
    if "\x00" in text:
        raise InvalidRequest.for_field(_path(trail), "may not contain the character U+0000", "string")
    if text.isascii():
        return  # a surrogate is never ASCII
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest.for_field(_path(trail), "contains an unpaired surrogate", "string") from None
