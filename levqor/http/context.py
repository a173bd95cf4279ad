"""Building the resolver `Context` from an HTTP connection (shared by REST and GraphQL)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from levqor.resolvers.context import DEV_PRINCIPAL, Context


def context_for(connection: HTTPConnection) -> Context:
    app_state = connection.app.state
    state = connection.state
    return Context(
        db=app_state.db,
        settings=app_state.settings,
        principal=getattr(state, "principal", DEV_PRINCIPAL),
        request_id=getattr(state, "request_id", None),
    )
