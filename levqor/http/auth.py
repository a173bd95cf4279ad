"""The API-key middleware: every HTTP request and WebSocket handshake gets a principal, or a 401.

It only decides who is calling. What a caller may do is decided by the resolvers
(`ctx.principal.require(...)`), so REST and GraphQL cannot disagree. A key that is wrong, expired or
revoked is refused on every route, even a public one (CONTRACT.md §5), so a client learns at once
that its key is bad.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from levqor.errors import Unauthorized
from levqor.http.refusal import send_refusal
from levqor.resolvers.auth import Authenticator

_BEARER = "bearer "


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


class ApiKeyMiddleware:
    """Puts the caller on `scope["state"]["principal"]` (and its `key_id` for the access log)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        authenticator: Authenticator = scope["app"].state.authenticator
        try:
            principal = await authenticator.authenticate(presented_key(scope))
        except Unauthorized as exc:
            await send_refusal(scope, send, exc, [("WWW-Authenticate", 'Bearer realm="levqor"')])
            return
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        state["principal"] = principal
        state["key_id"] = principal.key_id
        await self.app(scope, receive, send)
