"""Building the resolver `Context` from an HTTP connection (shared by REST and GraphQL)."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from levqor.resolvers.context import ANONYMOUS, Context


def context_for(connection: HTTPConnection) -> Context:
    app_state = connection.app.state
    state = connection.state
    return Context(
        db=app_state.db,
        settings=app_state.settings,
        # The request gateway sets it on every request; without it, the caller is nobody.
        principal=getattr(state, "principal", ANONYMOUS),
        request_id=getattr(state, "request_id", None),
        wakeup=getattr(app_state, "wakeup", None),
        batches=getattr(app_state, "batches", None),
    )
