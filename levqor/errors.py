"""One error hierarchy for the service layer, mapped to HTTP and GraphQL in one place each.

Resolvers raise these; `levqor.http.errors` turns them into the contract's REST error body and
`levqor.schema.errors` into GraphQL errors with `extensions.code`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, ClassVar


class LevqorError(Exception):
    """An expected failure a client can act on."""

    code: ClassVar[str] = "invalid_request"
    graphql_code: ClassVar[str] = "BAD_USER_INPUT"
    status: ClassVar[int] = 400

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []

    def http_headers(self) -> dict[str, str]:
        """The response headers HTTP asks for with this status."""
        return {}


class FieldCode(enum.StrEnum):
    """Why one field was refused: `details[].code` on REST and `userErrors[].code` on GraphQL.

    One closed set for both surfaces, whichever validator refused the field (pydantic for the
    request models, jsonschema for workflow payloads, the resolvers' own rules)."""

    INVALID = "invalid"  # a value the field's own rule refuses (an expired date, a bad cursor)
    REQUIRED = "required"
    TYPE = "type"  # the wrong JSON type, null included where null is not allowed
    ENUM = "enum"  # not one of the listed values (scopes, priorities, states, workflow names)
    FORMAT = "format"  # not an email, URL, UUID or date-time
    PATTERN = "pattern"
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    OUT_OF_RANGE = "out_of_range"
    EXTRA_FORBIDDEN = "extra_forbidden"
    TOO_DEEP = "too_deep"
    NOT_FOUND = "not_found"  # an id that names nothing (a job's `user_id`)

    @classmethod
    def of(cls, raw: object) -> FieldCode:
        """The code for a validator's own name of an error; `invalid` for a name it does not know."""
        if isinstance(raw, FieldCode):
            return raw
        name = str(raw).removeprefix("schema.")
        try:
            return cls(name)
        except ValueError:
            return _FIELD_CODE_ALIASES.get(name, cls.INVALID)


# Pydantic's error types and jsonschema's validator names, by the code they mean.
_FIELD_CODE_ALIASES: Mapping[str, FieldCode] = {
    **dict.fromkeys(("missing", "missing_argument"), FieldCode.REQUIRED),
    **dict.fromkeys(
        (
            "string_type",
            "int_type",
            "int_parsing",
            "int_from_float",
            "float_type",
            "float_parsing",
            "bool_type",
            "bool_parsing",
            "dict_type",
            "list_type",
            "model_type",
            "model_attributes_type",
            "decimal_type",
            "decimal_parsing",
            "uuid_type",
            "datetime_type",
            "url_type",
            "none_required",
            "null",
            "number",
            "is_instance_of",
            "finite_number",
        ),
        FieldCode.TYPE,
    ),
    **dict.fromkeys(("literal_error", "const", "unknown_workflow"), FieldCode.ENUM),
    **dict.fromkeys(
        (
            "uuid_parsing",
            "uuid_version",
            "url_parsing",
            "url_scheme",
            "url_too_long",
            "url_syntax_violation",
            "datetime_parsing",
            "datetime_from_date_parsing",
            "datetime_object_invalid",
            "date_parsing",
            "value_error_email",
        ),
        FieldCode.FORMAT,
    ),
    "string_pattern_mismatch": FieldCode.PATTERN,
    **dict.fromkeys(("string_too_short", "minLength", "minItems", "minProperties"), FieldCode.TOO_SHORT),
    **dict.fromkeys(("string_too_long", "maxLength", "maxItems", "maxProperties"), FieldCode.TOO_LONG),
    **dict.fromkeys(
        (
            "greater_than",
            "greater_than_equal",
            "less_than",
            "less_than_equal",
            "multiple_of",
            "decimal_max_digits",
            "decimal_max_places",
            "decimal_whole_digits",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "multipleOf",
        ),
        FieldCode.OUT_OF_RANGE,
    ),
    "too_short": FieldCode.TOO_SHORT,
    "too_long": FieldCode.TOO_LONG,
    **dict.fromkeys(
        ("additionalProperties", "unevaluatedProperties", "additionalItems"), FieldCode.EXTRA_FORBIDDEN
    ),
    "depth": FieldCode.TOO_DEEP,
    "required": FieldCode.REQUIRED,
    "type": FieldCode.TYPE,
}


class InvalidRequest(LevqorError):
    """The request is malformed or a field fails validation; `details` name each failing field,
    each with a `FieldCode` whatever validator named it."""

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(
            message,
            details=[{**detail, "code": FieldCode.of(detail.get("code")).value} for detail in details or []],
        )

    @classmethod
    def for_field(cls, field: str, message: str, code: FieldCode | str = FieldCode.INVALID) -> InvalidRequest:
        return cls(f"{field}: {message}", details=[{"field": field, "message": message, "code": code}])


class Unauthorized(LevqorError):
    code = "unauthorized"
    graphql_code = "UNAUTHENTICATED"
    status = 401
    # RFC 9110 §11.6.1: a 401 names the scheme that would get the caller in.
    CHALLENGE: ClassVar[str] = 'Bearer realm="levqor"'

    def http_headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.CHALLENGE}


class Forbidden(LevqorError):
    code = "forbidden"
    graphql_code = "FORBIDDEN"
    status = 403


class NotFound(LevqorError):
    code = "not_found"
    graphql_code = "NOT_FOUND"
    status = 404


class MethodNotAllowed(LevqorError):
    code = "method_not_allowed"
    graphql_code = "BAD_USER_INPUT"
    status = 405


class Conflict(LevqorError):
    code = "conflict"
    graphql_code = "CONFLICT"
    status = 409


class BudgetExceeded(LevqorError):
    code = "budget_exceeded"
    graphql_code = "BUDGET_EXCEEDED"
    status = 402


class PayloadTooLarge(LevqorError):
    code = "payload_too_large"
    status = 413


class UnsupportedMediaType(LevqorError):
    code = "unsupported_media_type"
    status = 415


class RateLimited(LevqorError):
    code = "rate_limited"
    graphql_code = "RATE_LIMITED"
    status = 429

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def http_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}
