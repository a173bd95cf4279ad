"""Answering a request that the gateway refuses (401, 429) before it reaches a route.

REST callers get the contract's error body (CONTRACT.md §4); GraphQL callers get a GraphQL response
with the error's `extensions.code`, since that is what their clients read (CONTRACT.md §3).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import Scope, Send

from levqor.errors import LevqorError
from levqor.http.errors import error_response

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
    request_id = scope.get("state", {}).get("request_id")
    if scope["type"] == "websocket":
        # Closing before the handshake is accepted makes the server answer 403 (ASGI spec).
        await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:120]})
        return
    if is_graphql(scope, graphql_path):
        extensions: dict[str, object] = {"code": exc.graphql_code}
        if request_id:
            extensions["request_id"] = request_id
        # Refused before execution, so no `data` entry (GraphQL spec, "Response Format").
        body: dict[str, object] = {"errors": [{"message": exc.message, "extensions": extensions}]}
    else:
        response = error_response(
            exc.status,
            exc.code,
            exc.message,
            request_id=request_id,
            details=exc.details,
            headers=dict(headers),
        )
        await response(scope, _no_receive, send)
        return
    payload = json.dumps(body, separators=(",", ":")).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers),
    ]
    await send({"type": "http.response.start", "status": exc.status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


async def _no_receive() -> dict[str, str]:
    return {"type": "http.disconnect"}
