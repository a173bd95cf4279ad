"""Answering a request that is refused (401, 429) before it reaches a route.

REST callers get the contract's error body (CONTRACT.md §4); GraphQL callers get a GraphQL response
with the error's `extensions.code`, since that is what their clients read (CONTRACT.md §3).
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.responses import JSONResponse
from starlette.types import Scope, Send

from levqor.errors import LevqorError
from levqor.http.errors import error_response, no_request_body, request_id_of

GRAPHQL_PATH = "/graphql"


def is_graphql(scope: Scope, graphql_path: str = GRAPHQL_PATH) -> bool:
    return str(scope.get("path", "")).rstrip("/") == graphql_path


async def send_refusal(
    scope: Scope,
    send: Send,
    exc: LevqorError,
    headers: Iterable[tuple[str, str]] = (),
    *,
    graphql_path: str = GRAPHQL_PATH,
) -> None:
    if scope["type"] == "websocket":
        # Closing before the handshake is accepted makes the server answer 403 (ASGI spec).
        await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:120]})
        return
    request_id = request_id_of(scope)
    if is_graphql(scope, graphql_path):
        extensions: dict[str, object] = {"code": exc.graphql_code}
        if request_id:
            extensions["request_id"] = request_id
        # Refused before execution, so no `data` entry (GraphQL spec, "Response Format").
        body = {"errors": [{"message": exc.message, "extensions": extensions}]}
        response = JSONResponse(body, status_code=exc.status, headers=dict(headers))
    else:
        response = error_response(
            exc.status,
            exc.code,
            exc.message,
            request_id=request_id,
            details=exc.details,
            headers=dict(headers),
        )
    await response(scope, no_request_body, send)
