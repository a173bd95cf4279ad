"""What the client raises when the API answers with an error: one class per thing a caller acts on.

The server's error body is `{"error","message",("details"),("request_id")}` (CONTRACT.md §4); each
exception keeps all of it, so a log line can name the request the server logged.
"""

from __future__ import annotations

from typing import Any


class LevqorClientError(Exception):
    """The root of everything this client raises on purpose."""


class ApiError(LevqorClientError):
    """The API answered with an error status."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        details: list[dict[str, Any]] | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.request_id = request_id


class BadRequest(ApiError):
    """400: the request failed validation; `details` name each failing field."""


class Unauthorized(ApiError):
    """401: no valid API key."""


class Forbidden(ApiError):
    """403: the key lacks the scope the operation needs."""


class NotFound(ApiError):
    """404: no such job (or route)."""


class Conflict(ApiError):
    """409: the job's state does not allow the operation."""


class LeaseLost(Conflict):
    """409 on heartbeat, complete or fail: this worker's attempt no longer owns the job (its lease
    expired and the job was taken back, or it was finished elsewhere). Do not retry; drop the job."""


class BudgetExceeded(ApiError):
    """402: the caller's budget does not cover the job."""


class RateLimited(ApiError):
    """429: slow down; `retry_after_s` says for how long."""

    def __init__(self, *args: Any, retry_after_s: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after_s = retry_after_s


class ServerError(ApiError):
    """5xx: the server failed; the request may be retried."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: Unauthorized,
    402: BudgetExceeded,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    429: RateLimited,
}


def error_for(status: int, body: Any, headers: dict[str, str], *, lease_fenced: bool = False) -> ApiError:
    """The exception for an error response. `lease_fenced` marks the worker calls whose 409 means
    the lease is lost."""
    if not isinstance(body, dict):
        body = {}
    code = str(body.get("error") or "http_error")
    message = str(body.get("message") or f"HTTP {status}")
    details = body.get("details") if isinstance(body.get("details"), list) else None
    request_id = body.get("request_id") or headers.get("x-request-id")
    cls: type[ApiError]
    if status == 409 and lease_fenced:
        cls = LeaseLost
    elif status >= 500:
        cls = ServerError
    else:
        cls = _BY_STATUS.get(status, ApiError)
    if cls is RateLimited:
        retry_after = headers.get("retry-after")
        return RateLimited(
            status,
            code,
            message,
            details=details,
            request_id=request_id,
            retry_after_s=float(retry_after) if retry_after and retry_after.isdigit() else None,
        )
    return cls(status, code, message, details=details, request_id=request_id)
