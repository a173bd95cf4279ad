"""The dashboard's overview: the queue's health at a glance."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from levqor.dashboard.pages import dashboard_page, page_context, render
from levqor.resolvers.health import ops_health


@dashboard_page
async def overview(request: Request) -> Response:
    health = await ops_health(page_context(request))
    return render(request, "overview.html", section="overview", health=health)


def routes() -> list[BaseRoute]:
    return [Route("/", overview, methods=["GET"])]
