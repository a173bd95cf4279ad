"""Mounting the Strawberry schema at /graphql, with the same resolver context as REST.

Transport failures (a body that is not JSON, a mutation over GET, another media type) answer with the
contract's error body and status, as the REST routes do; GraphQL errors inside a well-formed request
stay in the GraphQL response.

A plain request (a JSON object of `query`, `variables` and `operationName`, or the same as GET
parameters) for an operation with a compiled plan (`levqor.schema.plans`) is answered by the plan,
without Strawberry's view and `Schema.execute`; everything else, including every request the fast
path has a doubt about, takes the general path, which answers the same bytes more slowly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLRequestData, process_result
from strawberry.schema import Schema
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types import ExecutionResult

from levqor.errors import InvalidRequest, LevqorError, MethodNotAllowed, UnsupportedMediaType
from levqor.http.context import context_for
from levqor.http.errors import error_response, request_id_of
from levqor.json_encoding import Encoder
from levqor.resolvers.context import Context
from levqor.resolvers.health import PublicMetricsCache
from levqor.rest.body import decode_json, is_json
from levqor.schema import schema
from levqor.schema.plans import operation_plan

_TRANSPORT_CODES = {400: "invalid_request", 404: "not_found", 405: "method_not_allowed"}
# The members of a request the fast path reads; a request with others (`extensions`) takes the
# general path.
_PLAIN_REQUEST_KEYS = frozenset({"query", "variables", "operationName"})
_encode_compact = Encoder(separators=(",", ":"))


@dataclass
class GraphQLContext:
    request: Request | WebSocket
    response: Response | None
    levqor: Context
    public_metrics: PublicMetricsCache


class LevqorGraphQL(GraphQL[GraphQLContext, None]):
    # False sends every request down the general path; the differential tests compare the two.
    compiled_plans: ClassVar[bool] = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope, receive=receive)
        try:
            response = await self._run_plan(request)
            if response is None:
                response = await self.run(request)
        except LevqorError as exc:
            response = _error_response(request, exc.status, exc.code, exc.message)
        except HTTPException as exc:
            code = _TRANSPORT_CODES.get(exc.status_code, "invalid_request")
            response = _error_response(request, exc.status_code, code, exc.reason)
        await response(scope, receive, send)

    async def _run_plan(self, request: Request) -> Response | None:
        """The response of the operation's compiled plan; None when the request is not plain or
        the operation has no plan. The body stays cached on the request for the general path."""
        if not self.compiled_plans:
            return None
        request_data = await self._plain_request(request)
        if request_data is None:
            return None
        query, variables, operation_name = request_data
        plan = operation_plan(self.schema, query, operation_name) if isinstance(self.schema, Schema) else None
        # GraphQL-over-HTTP: GET never runs a mutation; the general path answers 405 for it.
        if plan is None or (plan.is_mutation and request.method != "POST"):
            return None
        sub_response = await self.get_sub_response(request)
        context = await self.get_context(request, response=sub_response)
        result = await plan.run(context, query, variables)
        return self.create_response(process_result(result), sub_response)

    async def _plain_request(self, request: Request) -> tuple[str, dict[str, Any] | None, str | None] | None:
        """(query, variables, operationName) of a request the general path would read the same way,
        or None to leave the request to it (and to its error answers)."""
        data: Any
        if request.method == "POST":
            content_type = request.headers.get("content-type", "")
            if content_type.partition(";")[0].strip() != "application/json":
                return None
            try:
                data = self.decode_json(await request.body())
            except LevqorError:
                return None
        elif request.method == "GET":
            data = dict(request.query_params)
            if "variables" in data:
                try:
                    data["variables"] = self.decode_json(data["variables"])
                except LevqorError:
                    return None
        else:
            return None
        if not isinstance(data, dict) or not data.keys() <= _PLAIN_REQUEST_KEYS:
            return None
        query, variables, operation_name = data.get("query"), data.get("variables"), data.get("operationName")
        if not isinstance(query, str) or not isinstance(variables, dict | None):
            return None
        if not isinstance(operation_name, str | None):
            return None
        return query, variables, operation_name

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> GraphQLContext:
        return GraphQLContext(
            request=request,
            response=response if isinstance(response, Response) else None,
            levqor=context_for(request),
            public_metrics=request.app.state.public_metrics,
        )

    def encode_json(self, data: object) -> str:
        # Strawberry's own `json.dumps(data, separators=(",", ":"))`, with the encoder built once.
        return _encode_compact(data)

    def decode_json(self, data: str | bytes) -> object:
        # The same strict reading as REST bodies: no NaN, no 4300-digit integers, no deep nesting.
        value = decode_json(data)
        # A request body (or GET `variables`) is an object, or a list that the batch check refuses;
        # Strawberry would fail on a bare string or number with a 500.
        if not isinstance(value, dict | list):
            raise InvalidRequest("a GraphQL request must be a JSON object")
        return value

    async def parse_http_body(self, request: AsyncHTTPRequestAdapter) -> Any:
        if request.method == "POST" and not is_json(request.content_type or ""):
            raise UnsupportedMediaType("send GraphQL requests as application/json")
        return await super().parse_http_body(request)

    async def execute_single(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        sub_response: Response,
        context: GraphQLContext,
        root_value: None,
        request_data: GraphQLRequestData,
    ) -> ExecutionResult:
        try:
            return await super().execute_single(
                request, request_adapter, sub_response, context, root_value, request_data
            )
        except HTTPException as exc:
            # GraphQL-over-HTTP: a mutation sent with GET is refused with 405 Method Not Allowed.
            if request_adapter.method == "GET" and isinstance(exc.__cause__, InvalidOperationTypeError):
                raise MethodNotAllowed(f"{exc.reason}: send them with POST") from exc
            raise


def _error_response(request: Request, status: int, code: str, message: str) -> Response:
    headers = {"Allow": "GET, POST"} if status == 405 else None
    return error_response(status, code, message, request_id=request_id_of(request), headers=headers)


def graphql_app() -> Any:
    # GET runs queries only; a mutation over GET answers 405 (GraphQL-over-HTTP, "GET").
    return LevqorGraphQL(schema, graphql_ide="graphiql", allow_queries_via_get=True)
