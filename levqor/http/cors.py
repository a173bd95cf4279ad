"""CORS (CONTRACT.md §4): Starlette's middleware with the contract's methods and headers.

The origins come from `LEVQOR_CORS_ORIGINS`. A preflight that asks for something not allowed (origin,
method or header) gets 403 with the contract's error body instead of Starlette's plain-text 400, and a
refused origin never gets an allow-origin header.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp

from levqor.config import Settings
from levqor.http.errors import error_response

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
)
CORS_MAX_AGE_S = 600


class LevqorCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, for requests with an `Origin` only: the gateway answers the others
    itself (all the middleware would do for them is add `Origin` to `Vary`)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        # Starlette says which parts were refused ("Disallowed CORS origin, headers"); keep that text.
        message = bytes(response.body).decode()
        headers = {
            name: value
            for name, value in response.headers.items()
            if name.lower() not in {"content-type", "content-length"}
        }
        return error_response(403, "forbidden", message, request_id=None, headers=headers)


def cors_layer(app: ASGIApp, settings: Settings) -> LevqorCORSMiddleware:
    return LevqorCORSMiddleware(
        app,
        allow_origins=list(settings.cors_origins),
        allow_methods=list(CORS_METHODS),
        allow_headers=list(CORS_HEADERS),
        expose_headers=list(CORS_EXPOSED_HEADERS),
        max_age=CORS_MAX_AGE_S,
    )
