"""One error hierarchy for the service layer, mapped to HTTP and GraphQL in one place each.

Resolvers raise these; `levqor.http.errors` turns them into the contract's REST error body and
`levqor.schema.errors` into GraphQL errors with `extensions.code`.
"""

from __future__ import annotations

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


class InvalidRequest(LevqorError):
    """The request is malformed or a field fails validation; `details` name each failing field."""

    @classmethod
    def for_field(cls, field: str, message: str, code: str = "invalid") -> InvalidRequest:
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
