"""What the request gateway does besides routing: request ids, security headers, the access log,
the last-resort 500 and the body limits. `levqor.http.gateway` calls these in one layer.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from levqor.http.errors import error_response

error_logger = logging.getLogger("levqor.errors")

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ("Permissions-Policy", "geolocation=(), microphone=()"),
)
REQUEST_ID_HEADER = "X-Request-Id"
_MAX_CLIENT_REQUEST_ID = 128

SECURITY_HEADERS_RAW = tuple(
    (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in SECURITY_HEADERS
)
REQUEST_ID_RAW = REQUEST_ID_HEADER.lower().encode("latin-1")


@dataclass(slots=True)
class RequestHeads:
    """What the gateway reads from the request headers, in one pass over them."""

    request_id: str | None = None  # the caller's own, when it is short and plain, so traces join up
    user_agent: str | None = None
    has_origin: bool = False  # a CORS request: Starlette's CORS middleware answers it
    content_length: str | None = None  # as sent; `declared_length_refusal` judges it
    chunked: bool = False  # a body without Content-Length, counted as it arrives


def read_request_heads(scope: Scope) -> RequestHeads:
    heads = RequestHeads()
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            if heads.request_id is None:
                text: str = value.decode("latin-1")
                if 0 < len(text) <= _MAX_CLIENT_REQUEST_ID and text.isascii() and text.isprintable():
                    heads.request_id = text
        elif name == b"user-agent":
            if heads.user_agent is None:
                heads.user_agent = value.decode("latin-1")
        elif name == b"origin":
            heads.has_origin = True
        elif name == b"content-length":
            heads.content_length = value.decode("latin-1")
        elif name == b"transfer-encoding":
            heads.chunked = True
    return heads


def log_error_after_start(scope: Scope, request_id: str | None) -> None:
    """An exception once the answer has begun: no error body can follow, the connection is cut."""
    error_logger.exception(
        "unhandled error after the response started",
        extra={"request_id": request_id, "path": scope.get("path")},
    )


async def answer_internal_error(scope: Scope, send: Send, request_id: str | None) -> None:
    """Log the exception being handled with its traceback; answer `internal_error` and the id only."""
    error_logger.exception(
        "unhandled error",
        extra={"request_id": request_id, "method": scope.get("method"), "path": scope.get("path")},
    )
    await _send_error(scope, send, 500, "internal_error", "internal server error", request_id)


def key_id_of(state: MutableMapping[str, Any]) -> str | None:
    """The id of the caller's API key (never the key): set by the gateway."""
    principal = state.get("principal")
    key_id = getattr(principal, "key_id", None) or state.get("key_id")
    return None if key_id is None else str(key_id)


def declared_length_refusal(declared: str, max_bytes: int) -> tuple[int, str, str] | None:
    """The status, code and message that refuse a body by its Content-Length; None when it may come."""
    if not declared.isdigit():
        return 400, "invalid_request", "Content-Length is not a number"
    if int(declared) > max_bytes:
        return 413, "payload_too_large", _too_large_message(max_bytes)
    return None


def _too_large_message(max_bytes: int) -> str:
    return f"the request body is larger than {max_bytes} bytes"


async def refuse_body(scope: Scope, send: Send, status: int, code: str, message: str) -> None:
    request_id = scope.get("state", {}).get("request_id")
    await _send_error(scope, send, status, code, message, request_id)


class ChunkedBodyLimit:
    """413 for a chunked body once it passes `max_bytes`, counted while it is read, so an oversized
    upload is never held in memory whole. (A body with Content-Length is judged before it is read,
    by `declared_length_refusal`: the server delivers exactly that many bytes.)"""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
            await self._refuse(scope, send)
        except Exception:
            if too_large and not response_started:
                await self._refuse(scope, send)
                return
            raise

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await refuse_body(scope, send, 413, "payload_too_large", _too_large_message(self.max_bytes))


class _BodyTooLarge(Exception):
    pass


async def _send_error(
    scope: Scope, send: Send, status: int, code: str, message: str, request_id: str | None
) -> None:
    await error_response(status, code, message, request_id=request_id)(scope, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
