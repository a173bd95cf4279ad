"""Turning untrusted input into typed input models, with errors that name each failing field."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from levqor.errors import InvalidRequest, NotFound

M = TypeVar("M", bound=BaseModel)


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
    in strings (PostgreSQL's jsonb rejects both), NaN and infinities, and nesting past 64 levels."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest.for_field(
                path or "body", f"is nested deeper than {MAX_JSON_DEPTH} levels", "depth"
            )
        if isinstance(item, str):
            _check_text(item, path)
        elif isinstance(item, float):
            if item != item or item in (float("inf"), float("-inf")):
                raise InvalidRequest.for_field(path or "body", "must be a finite number", "number")
        elif isinstance(item, Mapping):
            for key, child in item.items():
                _check_text(str(key), path)
                stack.append((child, f"{path}.{key}" if path else str(key), depth + 1))
        elif isinstance(item, list | tuple):
            stack.extend(
                (child, f"{path}.{index}" if path else str(index), depth + 1)
                for index, child in enumerate(item)
            )


def _check_text(text: str, path: str) -> None:
    if "\x00" in text:
        raise InvalidRequest.for_field(path or "body", "may not contain the character U+0000", "string")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest.for_field(path or "body", "contains an unpaired surrogate", "string") from None
