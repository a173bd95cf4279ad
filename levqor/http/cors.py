"""CORS (CONTRACT.md §4): Starlette's `CORSMiddleware` with the contract's origins, methods and headers.

Starlette answers a preflight that asks for something not allowed (origin, method or header) with a
plain-text 400; Levqor answers it with 403 and the contract's error body (with the request id), and a
refused origin never gets an allow-origin header.
"""

from __future__ import annotations

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from levqor.config import Settings
from levqor.http.errors import error_response, request_id_of

CORS_METHODS = ("GET", "POST", "OPTIONS", "PATCH", "PUT", "DELETE")
CORS_HEADERS = ("Content-Type", "Authorization", "X-Api-Key", "Idempotency-Key")
# Response headers a browser script may read besides the safelisted ones.
CORS_EXPOSED_HEADERS = (
    "X-Request-Id",
    "Retry-After",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Idempotent-Replayed",
    "Location",
)
CORS_MAX_AGE_S = 600
# Starlette's preflight refusal carries these; the error body brings its own.
_BODY_HEADERS = frozenset({"content-type", "content-length"})


class CorsMiddleware:
    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(settings.cors_origins),
            allow_methods=list(CORS_METHODS),
            allow_headers=list(CORS_HEADERS),
            expose_headers=list(CORS_EXPOSED_HEADERS),
            max_age=CORS_MAX_AGE_S,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_preflight(scope):
            await self.cors(scope, receive, send)
            return
        refused: Message | None = None

        async def send_refusal_as_403(message: Message) -> None:
            # Starlette answers every preflight itself: anything but 200 is its refusal.
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] != 200:
                refused = message
                return
            if refused is None:
                await send(message)
                return
            if message.get("more_body", False):
                return  # the refusal's text is one message; nothing else is kept
            headers = {
                name: value
                for name, value in MutableHeaders(scope=refused).items()
                if name.lower() not in _BODY_HEADERS
            }
            text = bytes(message.get("body", b"")).decode("utf-8", "replace")
            response = error_response(
                403, "forbidden", text, request_id=request_id_of(scope), headers=headers
            )
            await response(scope, receive, send)

        await self.cors(scope, receive, send_refusal_as_403)


def _is_preflight(scope: Scope) -> bool:
    if scope["method"] != "OPTIONS":
        return False
    headers = Headers(scope=scope)
    return "origin" in headers and "access-control-request-method" in headers
