"""The dashboard's overview: jobs by state (each a link to the filtered list), throughput and failures
over the window as an SVG chart, the queue's depth and oldest wait, pickup latency, and the live
workers with the jobs they hold, all from the overview resolver (`get_overview`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from levqor.dashboard.charts import throughput_chart
from levqor.dashboard.pages import dashboard_page, page_context, render
from levqor.resolvers.overview import get_overview

WINDOWS_S = (("15 minutes", 900), ("1 hour", 3600), ("6 hours", 6 * 3600), ("24 hours", 24 * 3600))
BUCKETS = 60


@dashboard_page
async def overview(request: Request) -> Response:
    window = request.query_params.get("window_s", "3600")
    figures = await get_overview(page_context(request), {"window_s": window, "buckets": str(BUCKETS)})
    return render(
        request,
        "overview.html",
        section="overview",
        overview=figures,
        chart=throughput_chart(figures.buckets),
        windows=WINDOWS_S,
    )


def routes() -> list[BaseRoute]:
    return [Route("/", overview, methods=["GET"])]
