"""Who may come in: the caller's API key and its rate limits, for every HTTP request and WebSocket
handshake, before any route runs.

This layer only decides who is calling and whether they are within their allowance. What a caller
may do is decided by the resolvers (`ctx.principal.require(...)`), so REST and GraphQL cannot
disagree. A key that is wrong, expired or revoked is refused on every route, even a public one
(CONTRACT.md §5), so a client learns at once that its key is bad. For the order of the checks and
whom each limit counts, see `levqor.http.ratelimit`.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from levqor.dashboard.session import SessionCodec, session_principal
from levqor.errors import Unauthorized
from levqor.http.ratelimit import Allowance, RateLimiter, is_unlimited, is_worker_api, refusal
from levqor.http.refusal import send_refusal
from levqor.resolvers.auth import Authenticator
from levqor.resolvers.context import Principal

_BEARER = "bearer "
DASHBOARD_PREFIX = "/dashboard/"


def presented_key(scope: Scope) -> str | None:
    """The key in `X-Api-Key`, else in `Authorization: Bearer`; None when the caller sent neither."""
    authorization = None
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            return str(value.decode("latin-1")).strip()
        if name == b"authorization":
            authorization = str(value.decode("latin-1"))
    if authorization is not None and authorization[: len(_BEARER)].lower() == _BEARER:
        return authorization[len(_BEARER) :].strip()
    return None


class AccessMiddleware:
    """Leaves the caller (`principal`, `key_id`), its address (`client_ip`) and its allowance
    (`rate_limit`) on `scope["state"]`, or answers 401 or 429 itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in {"http", "websocket"}:
            await self.app(scope, receive, send)
            return
        app_state = scope["app"].state
        limiter: RateLimiter = app_state.rate_limiter
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        client_ip = state["client_ip"] = limiter.client_address.of(scope)
        key = presented_key(scope)
        if key is not None:
            verdict = await limiter.may_present_key(client_ip)
            if not verdict.allowed:
                await send_refusal(scope, send, refusal(verdict), verdict.headers())
                return
        authenticator: Authenticator = app_state.authenticator
        by_session = None
        if key is None and scope["type"] == "http" and scope["path"].startswith(DASHBOARD_PREFIX):
            # The dashboard's pages are signed in by a session cookie instead of a key header.
            codec: SessionCodec = app_state.dashboard_sessions
            by_session = await session_principal(scope, codec, authenticator)
        try:
            principal = by_session or await authenticator.authenticate(key)
        except Unauthorized as exc:
            await limiter.key_refused(client_ip)
            await send_refusal(scope, send, exc, exc.http_headers().items())
            return
        state["principal"] = principal
        state["key_id"] = principal.key_id
        if scope["type"] == "websocket":
            # GraphQL charges each operation on the socket; the handshake itself is free.
            state["rate_limit"] = Allowance(limiter, client_ip, request_counted=False, principal=principal)
            await self.app(scope, receive, send)
            return
        if is_unlimited(scope["path"]):
            await self.app(scope, receive, send)
            return
        await self._limited(scope, receive, send, limiter, client_ip, principal)

    async def _limited(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        limiter: RateLimiter,
        client_ip: str,
        principal: Principal,
    ) -> None:
        worker_api = is_worker_api(scope["path"])
        verdict = await limiter.hit(client_ip, principal=principal, worker_api=worker_api)
        if not verdict.allowed:
            await send_refusal(scope, send, refusal(verdict), verdict.headers())
            return
        # The request context puts the allowance's latest verdict in the answer's headers.
        scope["state"]["rate_limit"] = Allowance(
            limiter, client_ip, request_counted=True, principal=principal, verdict=verdict
        )
        await self.app(scope, receive, send)
