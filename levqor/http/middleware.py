"""Shared ASGI middleware: request ids, security headers, access logs, body limits, the last-resort 500.

Pure ASGI classes (no `BaseHTTPMiddleware`), as Starlette recommends for anything on the hot path.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import MutableMapping, Sequence
from typing import Any

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from levqor.http.errors import error_body
from levqor.http.metrics import HttpMetrics, route_template

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


_SECURITY_HEADERS_RAW = tuple(
    (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in SECURITY_HEADERS
)
_REQUEST_ID_RAW = REQUEST_ID_HEADER.lower().encode("latin-1")


def _request_headers(scope: Scope) -> tuple[str | None, str | None]:
    """The caller's own request id, kept when it is short and plain so traces join up, and its
    User-Agent, in one pass over the headers."""
    request_id = user_agent = None
    for name, value in scope["headers"]:
        if name == b"x-request-id" and request_id is None:
            text: str = value.decode("latin-1")
            if 0 < len(text) <= _MAX_CLIENT_REQUEST_ID and text.isascii() and text.isprintable():
                request_id = text
        elif name == b"user-agent" and user_agent is None:
            user_agent = value.decode("latin-1")
    return request_id, user_agent


class RequestContextMiddleware:
    """Gives every request an id, every response the security headers and the id, every request one
    log line and its metrics (counted by route template, timed), and turns an unexpected exception
    into `internal_error` with the request id (the traceback goes to the log, never to the client).

    One layer for all of it, outermost, so it sees the final status of every answer: each layer that
    wraps `send` costs every request a coroutine call per message."""

    def __init__(
        self, app: ASGIApp, metrics: HttpMetrics | None = None, routes: Sequence[BaseRoute] = ()
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                scope.setdefault("state", {})["request_id"] = _request_headers(scope)[0] or uuid.uuid4().hex
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        client_request_id, user_agent = _request_headers(scope)
        request_id = client_request_id or uuid.uuid4().hex
        request_id_raw = request_id.encode("latin-1")
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500  # what the client gets when the app fails before answering
        response_started = False
        observed = False

        def observe() -> None:
            nonlocal observed
            observed = True
            if self.metrics is not None:
                duration_s = time.perf_counter() - started
                self.metrics.observe(scope["method"], route_template(scope, self.routes), status, duration_s)

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            message_type = message["type"]
            if message_type == "http.response.start":
                response_started = True
                status = message["status"]
                # The security headers unless the route set its own; the request id always, once.
                headers = [pair for pair in message.get("headers", ()) if pair[0] != _REQUEST_ID_RAW]
                present = {pair[0] for pair in headers}
                headers.extend(pair for pair in _SECURITY_HEADERS_RAW if pair[0] not in present)
                headers.append((_REQUEST_ID_RAW, request_id_raw))
                message["headers"] = headers
            elif message_type == "http.response.body" and not message.get("more_body", False):
                # Counted before the last byte leaves: a client that has its answer finds it counted.
                observe()
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
            if not observed:
                observe()
            client = scope.get("client")
            log_request(
                {
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    "client_ip": state.get("client_ip") or (client[0] if client else None),
                    "user_agent": user_agent,
                    "request_id": request_id,
                    "key_id": _key_id(state),
                }
            )


def log_request(fields: dict[str, Any]) -> None:
    """The access log line: `logger.info(..., extra=fields)` without its look-up of the caller's
    source line (a walk up the stack per request, for a location no one reads)."""
    if logger.isEnabledFor(logging.INFO):
        record = logger.makeRecord(
            logger.name, logging.INFO, "(unknown file)", 0, "request", (), None, "(unknown function)", fields
        )
        logger.handle(record)


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
