"""Building the resolver `Context` from an HTTP connection (shared by REST and GraphQL)."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

from levqor.resolvers.context import ANONYMOUS, Context

# Where the lifespan leaves the process's part of every context (database, settings, wake-up,
# batches) on the app, built once instead of gathered from `app.state` on each request.
SERVICES_ATTRIBUTE = "resolver_services"


def context_for(connection: HTTPConnection) -> Context:
    scope = connection.scope
    # The request gateway sets the caller on every request; without it, the caller is nobody.
    state: dict[str, Any] = scope.get("state") or {}
    principal = state.get("principal", ANONYMOUS)
    request_id = state.get("request_id")
    app = scope["app"]
    services: Context | None = getattr(app, SERVICES_ATTRIBUTE, None)
    if services is not None:
        return services.for_caller(principal, request_id)
    app_state = app.state
    return Context(
        db=app_state.db,
        settings=app_state.settings,
        principal=principal,
        request_id=request_id,
        wakeup=getattr(app_state, "wakeup", None),
        batches=getattr(app_state, "batches", None),
    )
