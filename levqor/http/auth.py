"""API keys at the gateway: every HTTP request and WebSocket handshake gets a principal, or a 401.

It only decides who is calling. What a caller may do is decided by the resolvers
(`ctx.principal.require(...)`), so REST and GraphQL cannot disagree. A key that is wrong, expired or
revoked is refused on every route, even a public one (CONTRACT.md §5), so a client learns at once
that its key is bad.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.types import Scope, Send

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


async def identify(scope: Scope, send: Send, authenticator: Authenticator) -> bool:
    """Put the caller on `scope["state"]["principal"]` (and its `key_id` for the access log); answer
    401 and return False when the key is refused."""
    try:
        principal = await authenticator.authenticate(presented_key(scope))
    except Unauthorized as exc:
        await send_refusal(scope, send, exc, exc.http_headers().items())
        return False
    state: MutableMapping[str, Any] = scope.setdefault("state", {})
    state["principal"] = principal
    state["key_id"] = principal.key_id
    return True
