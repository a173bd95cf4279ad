"""Mounting the Strawberry schema at /graphql, with the same resolver context as REST."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL

from levqor.http.context import context_for
from levqor.resolvers.context import Context
from levqor.resolvers.health import PublicMetricsCache
from levqor.schema import schema


@dataclass
class GraphQLContext:
    request: Request | WebSocket
    response: Response | None
    levqor: Context
    public_metrics: PublicMetricsCache


class LevqorGraphQL(GraphQL[GraphQLContext, None]):
    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> GraphQLContext:
        return GraphQLContext(
            request=request,
            response=response if isinstance(response, Response) else None,
            levqor=context_for(request),
            public_metrics=request.app.state.public_metrics,
        )


def graphql_app() -> Any:
    # GET runs queries only; a mutation over GET answers 405 (GraphQL-over-HTTP, "GET").
    return LevqorGraphQL(schema, graphql_ide="graphiql", allow_queries_via_get=True)
