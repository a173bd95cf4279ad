"""The request gateway: the one ASGI layer between the server and the routes (issue 2).

For each HTTP request, in one call and one `send` wrapper: a request id, the security headers, the
access log line and the request metrics; CORS (Starlette's middleware, for requests with an
`Origin`); the rate limit, the API key and the body limit; then the route, called straight from a
table (`levqor.http.dispatch`), or by Starlette for what the table does not take. An unexpected
exception becomes `internal_error` with the request id, inside CORS so that a browser page can read
it and quote the id.

One layer, because each layer that wraps `send` costs every response message a coroutine call: the
six layers this replaces, with Starlette's error middleware and router, were ~40 % of the server time
of a status GET.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from starlette.routing import Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from levqor.config import Settings
from levqor.http.auth import identify
from levqor.http.cors import cors_layer
from levqor.http.dispatch import RouteTable, dispatch
from levqor.http.metrics import HttpMetrics, route_template
from levqor.http.middleware import (
    REQUEST_ID_RAW,
    SECURITY_HEADERS_RAW,
    ChunkedBodyLimit,
    RequestHeads,
    answer_internal_error,
    declared_length_refusal,
    key_id_of,
    log_error_after_start,
    read_request_heads,
    refuse_body,
)
from levqor.http.ratelimit import Allowance, RateLimiter, is_unlimited, is_worker_api, refusal
from levqor.http.ratelimit_counters import RATE_LIMIT_HEADERS_RAW
from levqor.http.refusal import send_refusal
from levqor.logs import log_access

# Where the gateway leaves a request's `Exchange` in its scope, for the steps CORS calls back into.
EXCHANGE_KEY = "levqor.exchange"
RawHeaders = Sequence[tuple[bytes, bytes]]
# The response headers the gateway sets or merges; a route that sets none of them (most) gets ours
# appended without a merge.
_OURS = frozenset(
    {*RATE_LIMIT_HEADERS_RAW, REQUEST_ID_RAW, b"vary", *(name for name, _value in SECURITY_HEADERS_RAW)}
)
_VARY_ORIGIN = ((b"vary", b"Origin"),)


def new_request_id() -> str:
    """128 random bits in hex, like `uuid.uuid4().hex`. An id only has to be unique, not secret, so it
    comes from the process's own generator (reseeded in each forked worker), not from a system call
    per request that also hands the GIL to other threads."""
    return f"{random.getrandbits(128):032x}"


class Exchange:
    """One HTTP request as the gateway follows it: its id, its allowance and its answer's status."""

    __slots__ = (
        "allowance",
        "downstream",
        "gateway",
        "heads",
        "observed",
        "request_id",
        "request_id_raw",
        "response_started",
        "scope",
        "started",
        "status",
    )

    def __init__(
        self, gateway: Gateway, scope: Scope, send: Send, heads: RequestHeads, started: float
    ) -> None:
        self.gateway = gateway
        self.scope = scope
        self.downstream = send
        self.heads = heads
        self.started = started
        self.request_id: str = heads.request_id or new_request_id()
        self.request_id_raw = self.request_id.encode("latin-1")
        self.status = 500  # what the client gets when the app fails before answering
        self.response_started = False
        self.observed = False
        self.allowance: Allowance | None = None  # set once the request has paid its rate limit

    async def send(self, message: Message) -> None:
        message_type = message["type"]
        if message_type == "http.response.start":
            self.response_started = True
            self.status = message["status"]
            message["headers"] = self._final_headers(message.get("headers", ()))
        elif message_type == "http.response.body" and not message.get("more_body", False):
            # Counted before the last byte leaves: a client that has its answer finds it counted.
            self.observe()
        await self.downstream(message)

    def _final_headers(self, headers: RawHeaders) -> list[tuple[bytes, bytes]]:
        """The rate-limit headers of the latest verdict (a GraphQL document may have charged more
        since the start; they replace any the route set), `Origin` added to `Vary` unless CORS saw
        the request, the security headers unless the route set its own, and the request id, once."""
        allowance = self.allowance
        limit_headers = (
            allowance.verdict.raw_headers() if allowance is not None and allowance.verdict is not None else []
        )
        for name, _value in headers:
            if name in _OURS:
                break
        else:
            # The common case, the route set none of the headers above: they are all added, in order.
            vary_origin = _VARY_ORIGIN if not self.heads.has_origin else ()
            return [
                *headers,
                *limit_headers,
                *vary_origin,
                *SECURITY_HEADERS_RAW,
                (REQUEST_ID_RAW, self.request_id_raw),
            ]
        replaced = {name for name, _value in limit_headers}
        replaced.add(REQUEST_ID_RAW)
        add_vary = not self.heads.has_origin
        final: list[tuple[bytes, bytes]] = []
        vary: list[bytes] = []
        for pair in headers:
            name = pair[0]
            if name in replaced:
                continue
            if add_vary and name == b"vary":
                vary.append(pair[1])
                continue
            final.append(pair)
        present = {pair[0] for pair in final}
        final.extend(limit_headers)
        if add_vary:
            # Without `Origin` it is no CORS request, but caches must keep answers to browsers apart.
            final.append((b"vary", b", ".join([*vary, b"Origin"])))
        final.extend(pair for pair in SECURITY_HEADERS_RAW if pair[0] not in present)
        final.append((REQUEST_ID_RAW, self.request_id_raw))
        return final

    def observe(self) -> None:
        """Count the request in the metrics, by route template, once."""
        self.observed = True
        metrics = self.gateway.metrics
        if metrics is not None:
            scope = self.scope
            route = route_template(scope, self.gateway.router.routes)
            metrics.observe(scope["method"], route, self.status, time.perf_counter() - self.started)

    def log(self, state: MutableMapping[str, Any]) -> None:
        scope = self.scope
        client = scope.get("client")
        log_access(
            {
                "method": scope.get("method"),
                "path": scope.get("path"),
                "status": self.status,
                "duration_ms": round((time.perf_counter() - self.started) * 1000, 2),
                "client_ip": state.get("client_ip") or (client[0] if client else None),
                "user_agent": self.heads.user_agent,
                "request_id": self.request_id,
                "key_id": key_id_of(state),
            }
        )


class Gateway:
    """The app's whole middleware stack: `app` is Starlette's exception handling and router, for
    what the route table does not take, and for WebSocket and lifespan scopes."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        router: Router,
        settings: Settings,
        metrics: HttpMetrics | None,
        exception_handlers: Mapping[Any, Any],
    ) -> None:
        self.app = app
        self.router = router
        self.metrics = metrics
        self.exception_handlers = exception_handlers
        self.max_body_bytes = settings.max_body_bytes
        self.table = RouteTable(router.routes)
        self.cors = cors_layer(self._guarded, settings)
        self.chunked_body_limit = ChunkedBodyLimit(self._route, settings.max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self._handshake(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        exchange = Exchange(self, scope, send, read_request_heads(scope), time.perf_counter())
        scope[EXCHANGE_KEY] = exchange
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        state["request_id"] = exchange.request_id
        try:
            if exchange.heads.has_origin:
                await self.cors(scope, receive, exchange.send)
            else:
                await self._guarded(scope, receive, exchange.send)
        except Exception:
            if exchange.response_started:
                raise  # logged below CORS; the server can only cut the connection
            await answer_internal_error(scope, exchange.send, exchange.request_id)
        finally:
            if not exchange.observed:
                exchange.observe()
            exchange.log(state)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Everything inside CORS, with the last-resort 500 there so CORS headers reach it."""
        exchange: Exchange = scope[EXCHANGE_KEY]
        try:
            await self._admit(scope, receive, send, exchange)
        except Exception:
            if exchange.response_started:
                log_error_after_start(scope, exchange.request_id)
                raise
            await answer_internal_error(scope, send, exchange.request_id)

    async def _admit(self, scope: Scope, receive: Receive, send: Send, exchange: Exchange) -> None:
        """The rate limit, then the key (so a flood of guessed keys never reaches the database), then
        the body limit, then the route."""
        app_state = scope["app"].state
        limiter: RateLimiter = app_state.rate_limiter
        state = scope["state"]
        client_ip = state["client_ip"] = limiter.client_address.of(scope)
        path = scope["path"]
        if not is_unlimited(path):
            allowance = Allowance(limiter, client_ip, request_counted=True)
            verdict = allowance.verdict = await limiter.hit(client_ip, worker_api=is_worker_api(path))
            if not verdict.allowed:
                await send_refusal(scope, send, refusal(verdict), verdict.headers())
                return
            state["rate_limit"] = exchange.allowance = allowance
        if not await identify(scope, send, app_state.authenticator):
            return
        heads = exchange.heads
        if heads.content_length is not None:
            refused = declared_length_refusal(heads.content_length, self.max_body_bytes)
            if refused is not None:
                await refuse_body(scope, send, *refused)
                return
        if heads.chunked:
            await self.chunked_body_limit(scope, receive, send)
        else:
            # The server delivers exactly Content-Length bytes, or none without it (HTTP/1.1
            # framing), so there is nothing left to count.
            await self._route(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.table.find(scope)
        if found is None:
            await self.app(scope, receive, send)
            return
        target, path_params = found
        exchange: Exchange = scope[EXCHANGE_KEY]
        await dispatch(
            target, path_params, self.router, self.exception_handlers, exchange, scope, receive, send
        )

    async def _handshake(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A WebSocket handshake: an id, the client address, an allowance that GraphQL charges per
        operation (the handshake itself is free), and the key."""
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        state["request_id"] = read_request_heads(scope).request_id or new_request_id()
        app_state = scope["app"].state
        limiter: RateLimiter = app_state.rate_limiter
        client_ip = state["client_ip"] = limiter.client_address.of(scope)
        state["rate_limit"] = Allowance(limiter, client_ip, request_counted=False)
        if await identify(scope, send, app_state.authenticator):
            await self.app(scope, receive, send)
