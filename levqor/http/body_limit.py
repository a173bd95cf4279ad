"""413 for a request body over `LEVQOR_MAX_BODY_BYTES`, before it is held in memory.

A body with Content-Length is judged by it before a byte is read (the server delivers exactly that
many bytes); a chunked body is counted as it arrives and refused once it passes the limit.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from levqor.http.errors import error_response, no_request_body, request_id_of


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None:
            if not declared.isdigit():
                await self._refuse(scope, send, 400, "invalid_request", "Content-Length is not a number")
            elif int(declared) > self.max_bytes:
                await self._refuse(scope, send, 413, "payload_too_large", self._too_large())
            else:
                await self.app(scope, receive, send)
            return
        if chunked:
            await self._counted(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _counted(self, scope: Scope, receive: Receive, send: Send) -> None:
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
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            # The route may have wrapped our exception in its own: what counts is that the body
            # was too large.
            if not too_large or response_started:
                raise
            await self._refuse(scope, send, 413, "payload_too_large", self._too_large())

    def _too_large(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes"

    async def _refuse(self, scope: Scope, send: Send, status: int, code: str, message: str) -> None:
        response = error_response(status, code, message, request_id=request_id_of(scope))
        await response(scope, no_request_body, send)


class BodyTooLarge(Exception):
    """Raised into the route from `receive` once a chunked body passes the limit."""
