"""Mounting the Strawberry schema at /graphql, with the same resolver context as REST.

Transport failures (a body that is not JSON, a mutation over GET, another media type) answer with the
contract's error body and status, as the REST routes do; GraphQL errors inside a well-formed request
stay in the GraphQL response. A client that accepts `application/graphql-response+json` gets that media
type, and a request that fails before execution (parse, validation, variables) answers 400 without a
`data` entry (GraphQL over HTTP, "application/graphql-response+json"); `application/json` clients keep
the 200 answers.

WebSockets (`graphql-transport-ws`, for `jobUpdates`): the caller is the upgrade request's key, or the
key in the `connection_init` payload (`{"X-Api-Key": ...}` or `{"Authorization": "Bearer ..."}`), which
wins; a bad one closes the socket with 4403. Browsers may connect from `LEVQOR_CORS_ORIGINS` (and from
this server's own origin, where GraphiQL runs: levqor.http.graphiql); a handshake from any other
`Origin` is refused with 403.
A client without an `Origin` header is not a browser and has no ambient credentials to abuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry import UNSET
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, process_result
from strawberry.schema import BaseSchema
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.unset import UnsetType

from levqor.config import ConfigError, Settings
from levqor.errors import (
    InvalidRequest,
    LevqorError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from levqor.http.access import presented_key
from levqor.http.context import context_for
from levqor.http.errors import error_response, request_id_of
from levqor.http.graphiql import graphiql_response
from levqor.http.ratelimit import Allowance, RateLimiter
from levqor.resolvers.auth import Authenticator
from levqor.resolvers.context import Context
from levqor.resolvers.health import PublicMetricsCache
from levqor.rest.body import decode_json, is_json
from levqor.schema import schema as levqor_schema
from levqor.schema.documents import MAX_DOCUMENT_CHARS

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"
NO_ACK_PAYLOAD: UnsetType = UNSET  # a `connection_ack` without a payload


@dataclass
class GraphQLContext:
    request: Request | WebSocket
    response: Response | None
    levqor: Context
    public_metrics: PublicMetricsCache
    # A WebSocket's `connection_init` payload (Strawberry sets it).
    connection_params: dict[str, object] | None = None


class LevqorGraphQL(GraphQL[GraphQLContext, None]):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            websocket = WebSocket(scope, receive=receive, send=send)
            if await self.pick_websocket_subprotocol(websocket) is None:
                # Closing before accepting refuses the handshake (HTTP 403): only the protocols
                # served (`graphql-transport-ws`) are let in, instead of an accept and a 4406 close.
                await websocket.close(code=1002)
                return
            await self.run(websocket)
            return
        request = Request(scope, receive=receive)
        try:
            response = await self.run(request)
        except LevqorError as exc:
            response = _error_response(request, exc)
        except Exception as exc:
            refusal = _view_refusal(exc, request.method)
            if refusal is None:
                raise
            response = _error_response(request, refusal)
        await response(scope, receive, send)

    async def render_graphql_ide(self, request: Request) -> Response:
        # Levqor's own GraphiQL page, whose assets it serves itself (levqor.http.graphiql).
        return graphiql_response()

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> GraphQLContext:
        return GraphQLContext(
            request=request,
            response=response if isinstance(response, Response) else None,
            levqor=context_for(request),
            public_metrics=request.app.state.public_metrics,
        )

    async def on_ws_connect(self, context: GraphQLContext) -> UnsetType | dict[str, object] | None:
        """A key in the `connection_init` payload becomes the connection's caller. Keys presented
        this way count against the address's refused keys as HTTP ones do (levqor.http.access)."""
        key = connection_key(context.connection_params or {})
        if key is None:
            return NO_ACK_PAYLOAD
        websocket = context.request
        state = websocket.scope.setdefault("state", {})
        limiter: RateLimiter = websocket.app.state.rate_limiter
        authenticator: Authenticator = websocket.app.state.authenticator
        client_ip: str = state.get("client_ip") or limiter.client_address.of(websocket.scope)
        if not (await limiter.may_present_key(client_ip)).allowed:
            raise ConnectionRejectionError({"message": "too many refused API keys from this address"})
        try:
            principal = await authenticator.authenticate(key)
        except Unauthorized as exc:
            await limiter.key_refused(client_ip)
            raise ConnectionRejectionError({"message": exc.message}) from None
        state["principal"] = principal
        state["key_id"] = principal.key_id
        # Mutations over this socket are charged to the key, as over HTTP.
        state["rate_limit"] = Allowance(limiter, client_ip, request_counted=False, principal=principal)
        context.levqor = context.levqor.for_caller(principal, context.levqor.request_id)
        return NO_ACK_PAYLOAD

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        # Carries the media type the answer is sent as to `create_response`, which has no request.
        sub_response = await super().get_sub_response(request)
        sub_response.media_type = response_media_type(request)
        return sub_response

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        response_data = process_result(result)
        if response_media_type(request) == GRAPHQL_RESPONSE_JSON and failed_before_execution(result):
            # A request error has no `data` entry at all, and answers 4xx (`create_response`).
            del response_data["data"]
        return response_data

    def create_response(
        self, response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse], sub_response: Response
    ) -> Response:
        response = super().create_response(response_data, sub_response)
        response.headers["content-type"] = sub_response.media_type or JSON
        # The media type (and, with it, the status of a request error) follows the Accept header.
        response.headers.add_vary_header("Accept")
        if not sub_response.status_code and isinstance(response_data, dict) and "data" not in response_data:
            response.status_code = request_error_status(response_data)
        return response

    def decode_json(self, data: str | bytes) -> object:
        # The same strict reading as REST bodies: no NaN, no 4300-digit integers, no deep nesting.
        value = decode_json(data)
        # A request body (or GET `variables`) is an object, or a list that the batch check refuses;
        # Strawberry would fail on a bare string or number with a 500.
        if not isinstance(value, dict | list):
            raise InvalidRequest("a GraphQL request must be a JSON object")
        return value

    async def parse_http_body(self, request: Any) -> Any:
        if request.method == "POST" and not is_json(request.content_type or ""):
            raise UnsupportedMediaType("send GraphQL requests as application/json")
        request_data = await super().parse_http_body(request)
        query = getattr(request_data, "query", None)
        if isinstance(query, str) and len(query) > MAX_DOCUMENT_CHARS:
            raise PayloadTooLarge(
                f"the GraphQL document is over {MAX_DOCUMENT_CHARS} characters: "
                "send large values as variables"
            )
        return request_data


def connection_key(params: dict[str, object]) -> str | None:
    """The API key in a `connection_init` payload, read as the same headers over HTTP would be."""
    headers = [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in params.items()
        if isinstance(value, str) and name.lower() in {"x-api-key", "authorization"} and value.isascii()
    ]
    return presented_key({"headers": headers})


def response_media_type(connection: HTTPConnection) -> str:
    """`application/graphql-response+json` when the client accepts it at least as much as
    `application/json` (the spec's preference); `application/json` otherwise, or with no Accept."""
    accepted = _accepted_media_types(connection.headers.get("accept", ""))
    graphql_q = accepted.get(GRAPHQL_RESPONSE_JSON, 0.0)
    if graphql_q > 0 and graphql_q >= accepted.get(JSON, 0.0):
        return GRAPHQL_RESPONSE_JSON
    return JSON


def _accepted_media_types(accept: str) -> dict[str, float]:
    """`{media type: q}` of an Accept header (RFC 9110 §12.5.1); unreadable weights count as 0."""
    accepted: dict[str, float] = {}
    for media_range in accept.split(","):
        media_type, *parameters = (part.strip() for part in media_range.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media_type:
            accepted[media_type.lower()] = quality
    return accepted


def failed_before_execution(result: ExecutionResult) -> bool:
    """No data and only errors without a path: the document did not parse or validate, or the
    variables did not coerce, so nothing ran (GraphQL over HTTP calls these request errors)."""
    errors = result.errors or []
    return result.data is None and bool(errors) and all(error.path is None for error in errors)


def request_error_status(response_data: GraphQLHTTPResponse) -> int:
    """400, unless the failure was the server's own (a masked error raised before execution)."""
    codes = {
        error.get("extensions", {}).get("code")
        for error in response_data.get("errors") or ()
        if isinstance(error, dict)
    }
    return 500 if "INTERNAL_SERVER_ERROR" in codes else 400


def _view_refusal(exc: Exception, method: str) -> LevqorError | None:
    """Strawberry's view refuses what is not a GraphQL request (an unknown operation name, no query,
    a batch) with an exception of `cross_web`, which Strawberry does not re-export: it is known here
    by its `status_code` and `reason`. None for any other exception."""
    status, reason = getattr(exc, "status_code", None), getattr(exc, "reason", None)
    if not isinstance(status, int) or not isinstance(reason, str):
        return None
    # GraphQL-over-HTTP: a mutation sent with GET is refused with 405 Method Not Allowed.
    if method == "GET" and isinstance(exc.__cause__, InvalidOperationTypeError):
        return MethodNotAllowed(f"{reason}: send them with POST")
    if status == 404:
        return NotFound(reason)
    return InvalidRequest(reason)


def _error_response(request: Request, exc: LevqorError) -> Response:
    headers = {"Allow": "GET, POST"} if exc.status == 405 else None
    return error_response(
        exc.status, exc.code, exc.message, request_id=request_id_of(request), headers=headers
    )


def graphql_app(schema: BaseSchema = levqor_schema, *, settings: Settings | None = None) -> LevqorGraphQL:
    """The /graphql endpoint for HTTP and WebSocket. GET runs queries only; a mutation over GET
    answers 405 (GraphQL-over-HTTP, "GET"). WebSockets speak `graphql-transport-ws` only: the legacy
    `graphql-ws` protocol is refused at the handshake; each carries at most
    `LEVQOR_MAX_SUBSCRIPTIONS_PER_CONNECTION` operations at once (Strawberry refuses the next one
    with "Subscription limit reached")."""
    settings = settings or Settings()
    try:
        return LevqorGraphQL(
            schema,
            graphql_ide="graphiql",
            allow_queries_via_get=True,
            subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
            max_subscriptions_per_connection=settings.max_subscriptions_per_connection,
            allowed_origins=settings.cors_origins,
        )
    except ValueError as exc:  # an origin Strawberry cannot read (a path, a trailing slash)
        raise ConfigError(f"LEVQOR_CORS_ORIGINS: {exc}") from None
