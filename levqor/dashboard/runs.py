"""The dashboard's run page: a graph of jobs with its steps, the edges between them and its events
(issue 13, item 5), from the same resolver as GET /api/v1/runs/<id>. Each step links to its job."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from levqor.dashboard.pages import dashboard_page, page_context, render
from levqor.resolvers.runs import get_run


@dashboard_page
async def run_page(request: Request) -> Response:
    view = await get_run(page_context(request), request.path_params["run_id"])
    keys = {step.id: step.step_key or str(step.id) for step in view.steps}
    parents: dict[str, list[str]] = {}
    for edge in view.edges:
        parents.setdefault(keys.get(edge.child_id, str(edge.child_id)), []).append(
            f"{keys.get(edge.parent_id, str(edge.parent_id))} ({edge.on_failure})"
        )
    costs = [step.cost_actual_micros for step in view.steps if step.cost_actual_micros is not None]
    return render(
        request,
        "run.html",
        section="jobs",
        view=view,
        parents=parents,
        total_cost=sum(costs) if costs else None,
        total_estimate=sum(step.cost_estimate_micros or 0 for step in view.steps),
    )


def routes() -> list[BaseRoute]:
    return [Route("/runs/{run_id}", run_page, methods=["GET"])]
