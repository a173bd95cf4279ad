"""REST adapter for the workflow list (GET /api/v1/workflows)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from levqor.http.context import context_for
from levqor.resolvers.workflows import list_workflows
from levqor.rest.routing import ApiPath, ApiRoute, Operation, api_paths, json_response
from levqor.rest.shapes import ErrorBody
from levqor.workflows import Workflow


class WorkflowBody(BaseModel):
    name: str
    description: str
    payload_schema: dict[str, Any]
    result_schema: dict[str, Any] | None  # None: any JSON object is a result
    result_invalid_retryable: bool  # whether a result that misfits result_schema is retried
    timeout_s: int
    max_attempts: int
    remote_only: bool  # served only by remote workers through the worker API
    cost_model: str | None  # the cost model's name; None when the workflow has no estimate

    @classmethod
    def from_workflow(cls, flow: Workflow) -> WorkflowBody:
        return cls(
            name=flow.name,
            description=flow.description,
            payload_schema=flow.payload_schema,
            result_schema=flow.result_schema,
            result_invalid_retryable=flow.result_invalid_retryable,
            timeout_s=flow.timeout_s,
            max_attempts=flow.max_attempts,
            remote_only=flow.remote_only,
            cost_model=flow.cost_model_name,
        )


class WorkflowList(BaseModel):
    workflows: list[WorkflowBody]


async def workflows(request: Request) -> Response:
    found = await list_workflows(context_for(request))
    return json_response(WorkflowList(workflows=[WorkflowBody.from_workflow(flow) for flow in found]))


def routes() -> list[ApiPath]:
    return api_paths(
        [
            ApiRoute(
                "GET",
                "/api/v1/workflows",
                workflows,
                Operation(
                    "The registered workflows, with their payload and result JSON Schemas",
                    {200: WorkflowList, 401: ErrorBody, 429: ErrorBody},
                    "workflows",
                ),
            )
        ]
    )
