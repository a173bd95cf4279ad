"""The contract's REST error body (CONTRACT.md §4): every REST error answer is built by `error_response`.

Routes raise `LevqorError`s (mapped by the exception handlers below); middleware that refuses a request
before it reaches a route (limits, keys, body size, CORS, the last-resort 500) answers with
`error_response(...)` itself, since a Starlette `Response` is an ASGI app.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Scope

from levqor.errors import LevqorError

logger = logging.getLogger(__name__)

HTTP_ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    402: "budget_exceeded",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    431: "invalid_request",
    500: "internal_error",
}


def request_id_of(connection: HTTPConnection | Scope) -> str | None:
    """The id the request-context middleware gave this request (or WebSocket)."""
    scope = connection.scope if isinstance(connection, HTTPConnection) else connection
    state: Mapping[str, Any] = scope.get("state") or {}
    request_id = state.get("request_id")
    return request_id if isinstance(request_id, str) else None


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    request_id: str | None,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """`{"error", "message", ("details"), ("request_id")}` with `status`: the one REST error body."""
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(body, status_code=status, headers=dict(headers) if headers else None)


async def no_request_body() -> Message:
    """`receive` for an answer sent before (or instead of) reading the request: a Response never
    reads one, but its call takes it."""
    return {"type": "http.request", "body": b"", "more_body": False}


def levqor_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LevqorError)
    return error_response(
        exc.status,
        exc.code,
        exc.message,
        request_id=request_id_of(request),
        details=exc.details,
        headers=exc.http_headers() or None,
    )


def http_error_response(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no route, wrong method) in the contract's shape."""
    assert isinstance(exc, HTTPException)
    code = HTTP_ERROR_CODES.get(exc.status_code, "invalid_request")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(
        exc.status_code, code, message, request_id=request_id_of(request), headers=exc.headers
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    LevqorError: levqor_error_response,
    HTTPException: http_error_response,
}
