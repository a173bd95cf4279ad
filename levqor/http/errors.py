"""The contract's REST error body (CONTRACT.md §4), built in one place."""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from levqor.errors import LevqorError

logger = logging.getLogger(__name__)

_HTTP_CODES = {
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
}


def json_bytes(body: dict[str, Any]) -> bytes:
    """A body as every JSON answer is encoded (as Starlette's `JSONResponse` does): compact, UTF-8."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def request_id_of(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_body(
    code: str, message: str, *, request_id: str | None, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"error": code, "message": message}
    if details:
        body["details"] = details
    if request_id:
        body["request_id"] = request_id
    return body


def levqor_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LevqorError)
    body = error_body(exc.code, exc.message, request_id=request_id_of(request), details=exc.details)
    return JSONResponse(body, status_code=exc.status, headers=exc.http_headers() or None)


def http_error_response(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (no route, wrong method) in the contract's shape."""
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "invalid_request")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    body = error_body(code, message, request_id=request_id_of(request))
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    LevqorError: levqor_error_response,
    HTTPException: http_error_response,
}
