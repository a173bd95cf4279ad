"""The dashboard's schedules: a read-only page of them with their next ticks and latest fires (issue
13, item 5), from the same resolver as GET /api/v1/schedules."""

from __future__ import annotations

from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from levqor.dashboard.pages import PREFIX, dashboard_page, page_context, render
from levqor.resolvers.schedules import list_schedules


@dashboard_page
async def schedules_page(request: Request) -> Response:
    query = {
        name: value for name in ("cursor", "limit") if (value := request.query_params.get(name, "").strip())
    }
    page = await list_schedules(page_context(request), query)
    next_url = None
    if page.next_cursor is not None:
        next_url = f"{PREFIX}/schedules?{urlencode({**query, 'cursor': page.next_cursor})}"
    return render(request, "schedules.html", section="schedules", page=page, next_url=next_url)


def routes() -> list[BaseRoute]:
    return [Route("/schedules", schedules_page, methods=["GET"])]
