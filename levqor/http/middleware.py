"""Shared ASGI middleware: request ids, security headers, access logs, body limits, the last-resort 500.

Pure ASGI classes (no `BaseHTTPMiddleware`), as Starlette recommends for anything on the hot path.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import MutableMapping
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from levqor.http.errors import error_body

logger = logging.getLogger("levqor.access")
error_logger = logging.getLogger("levqor.errors")

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Permissions-Policy", "geolocation=(), microphone=()"),
)
REQUEST_ID_HEADER = "X-Request-Id"
_MAX_CLIENT_REQUEST_ID = 128


def _client_request_id(scope: Scope) -> str | None:
    """Keep a caller's own request id when it is short and plain, so traces join up."""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if 0 < len(text) <= _MAX_CLIENT_REQUEST_ID and text.isascii() and text.isprintable():
                return text
    return None


class RequestContextMiddleware:
    """Gives every request an id, every response the security headers and the id, every request one
    log line, and turns an unexpected exception into `internal_error` with the request id (the
    traceback goes to the log, never to the client)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = _client_request_id(scope) or uuid.uuid4().hex
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.setdefault(name, value)
                headers[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if response_started:
                # Logged by `InternalErrorMiddleware` (or by the server); it can only cut the connection.
                raise
            status = 500
            await answer_internal_error(scope, send_with_headers, request_id)
        finally:
            client = scope.get("client")
            logger.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "client_ip": state.get("client_ip") or (client[0] if client else None),
                    "user_agent": _header(scope, b"user-agent"),
                    "request_id": request_id,
                    "key_id": _key_id(state),
                },
            )


class InternalErrorMiddleware:
    """The global error handler, inside CORS so that a browser can read the 500 and its request id.

    `RequestContextMiddleware` catches too, for failures in the layers outside this one."""

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
            request_id = scope.get("state", {}).get("request_id")
            if response_started:
                error_logger.exception(
                    "unhandled error after the response started",
                    extra={"request_id": request_id, "path": scope.get("path")},
                )
                raise
            await answer_internal_error(scope, send, request_id)


async def answer_internal_error(scope: Scope, send: Send, request_id: str | None) -> None:
    """Log the exception being handled with its traceback; answer `internal_error` and the id only."""
    error_logger.exception(
        "unhandled error",
        extra={"request_id": request_id, "method": scope.get("method"), "path": scope.get("path")},
    )
    body = error_body("internal_error", "internal server error", request_id=request_id)
    await _send_json(send, 500, body)


def _key_id(state: MutableMapping[str, Any]) -> str | None:
    """The id of the caller's API key (never the key): set by the auth middleware."""
    principal = state.get("principal")
    key_id = getattr(principal, "key_id", None) or state.get("key_id")
    return None if key_id is None else str(key_id)


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`, decided from Content-Length before reading, or while reading
    a chunked body, so an oversized upload is never held in memory whole."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value.decode("latin-1")
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None:
            if not declared.isdigit():
                await self._reject(scope, send, 400, "invalid_request", "Content-Length is not a number")
                return
            if int(declared) > self.max_bytes:
                await self._reject_too_large(scope, send)
                return
        if not chunked:
            # The server delivers exactly Content-Length bytes, or none without it (HTTP/1.1 framing),
            # so there is nothing left to count: skip the receive and send wrappers below.
            await self.app(scope, receive, send)
            return

        seen = 0
        too_large = False
        response_started = False

        async def limited_receive() -> Message:
            nonlocal seen, too_large
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if response_started:
                raise
            await self._reject_too_large(scope, send)
        except Exception:
            if too_large and not response_started:
                await self._reject_too_large(scope, send)
                return
            raise

    async def _reject_too_large(self, scope: Scope, send: Send) -> None:
        message = f"the request body is larger than {self.max_bytes} bytes"
        await self._reject(scope, send, 413, "payload_too_large", message)

    async def _reject(self, scope: Scope, send: Send, status: int, code: str, message: str) -> None:
        request_id = scope.get("state", {}).get("request_id")
        await _send_json(send, status, error_body(code, message, request_id=request_id))


class _BodyTooLarge(Exception):
    pass


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
