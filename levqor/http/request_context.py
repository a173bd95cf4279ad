"""The outermost Levqor middleware: what every request gets, whatever answers it.

A request id (the caller's `X-Request-Id` when it is short and plain, else a new one), the security
headers and the id on every response (CONTRACT.md §4), the rate-limit headers of the request's
allowance (its latest verdict: a GraphQL document may have charged more since it came in), one
access-log line and the request metrics; 431 for a head over `LEVQOR_MAX_HEADER_BYTES` (one that
arrived whole: the HTTP protocol refuses an unfinished one, `levqor.http.server_protocol`); and the
last-resort 500 for an exception no inner layer answered.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import MutableMapping
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from levqor.http.errors import error_response, no_request_body
from levqor.http.metrics import HttpMetrics, route_template
from levqor.logs import log_access

error_logger = logging.getLogger("levqor.errors")

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Permissions-Policy", "geolocation=(), microphone=()"),
)
REQUEST_ID_HEADER = "X-Request-Id"
# A caller's id is echoed in a header and written to logs: only a bounded, inert character set is
# kept (what UUIDs, ULIDs and trace ids use); anything else gets an id of ours.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def new_request_id() -> str:
    return secrets.token_hex(16)


def client_request_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if CLIENT_REQUEST_ID.fullmatch(text) else None
    return None


def assign_request_id(scope: Scope) -> str:
    """The request's id, also left on `scope["state"]` for the layers and routes inside."""
    request_id = client_request_id(scope) or new_request_id()
    state: MutableMapping[str, Any] = scope.setdefault("state", {})
    state["request_id"] = request_id
    return request_id


def head_size(scope: Scope) -> int:
    """The request head's size as sent, near enough: request line and header lines."""
    path = scope.get("raw_path") or scope["path"].encode()
    size = len(path) + len(scope.get("query_string", b"")) + len(scope["method"]) + 12
    for name, value in scope["headers"]:
        size += len(name) + len(value) + 4
    return size


class RequestContextMiddleware:
    def __init__(
        self, app: ASGIApp, *, metrics: HttpMetrics | None = None, max_header_bytes: int | None = None
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            assign_request_id(scope)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = assign_request_id(scope)
        state = scope["state"]
        status = 500  # what the client gets when the app fails before answering
        response_started = False

        async def send_with_context(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
                headers[REQUEST_ID_HEADER] = request_id
                allowance = state.get("rate_limit")
                verdict = getattr(allowance, "verdict", None)
                if verdict is not None:
                    for name, value in verdict.headers():
                        headers[name] = value
            await send(message)

        try:
            if self.max_header_bytes is not None and head_size(scope) > self.max_header_bytes:
                message = f"the request head is larger than {self.max_header_bytes} bytes"
                response = error_response(431, "invalid_request", message, request_id=request_id)
                await response(scope, receive, send_with_context)
            else:
                await self.app(scope, receive, send_with_context)
        except Exception:
            if response_started:
                # No error body can follow a started answer: the server cuts the connection.
                error_logger.exception(
                    "unhandled error after the response started",
                    extra={"request_id": request_id, "path": scope.get("path")},
                )
                raise
            await answer_internal_error(scope, send_with_context)
        finally:
            self._observe(scope, status, started)

    def _observe(self, scope: Scope, status: int, started: float) -> None:
        duration_s = time.perf_counter() - started
        if self.metrics is not None:
            router = scope["app"].router
            self.metrics.observe(scope["method"], route_template(scope, router.routes), status, duration_s)
        state = scope.get("state", {})
        client = scope.get("client")
        log_access(
            {
                "method": scope["method"],
                "path": scope["path"],
                "status": status,
                "duration_ms": round(duration_s * 1000, 2),
                "client_ip": state.get("client_ip") or (client[0] if client else None),
                "user_agent": _header(scope, b"user-agent"),
                "request_id": state.get("request_id"),
                "key_id": state.get("key_id"),
            }
        )


async def answer_internal_error(scope: Scope, send: Send) -> None:
    """Log the exception being handled with its traceback; answer `internal_error` and the id only."""
    request_id = scope.get("state", {}).get("request_id")
    error_logger.exception(
        "unhandled error",
        extra={"request_id": request_id, "method": scope.get("method"), "path": scope.get("path")},
    )
    response = error_response(500, "internal_error", "internal server error", request_id=request_id)
    await response(scope, no_request_body, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


class InternalErrorMiddleware:
    """The 500 for an unexpected exception, answered inside CORS so a browser page can read the
    request id it carries."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            if response_started:
                raise  # logged by the request context, which cuts the connection
            await answer_internal_error(scope, tracking_send)
