"""GraphQL twins of the job verbs and the workflow list: `cancelJob`, `retryJob`, `workflows`."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from levqor.resolvers import job_control
from levqor.resolvers.workflows import list_workflows
from levqor.schema.errors import with_user_errors
from levqor.schema.types import JobType, UserError
from levqor.workflows import Workflow


@strawberry.type(
    name="Workflow", description="A registered workflow, the payloads it accepts and the results it gives."
)
class WorkflowType:
    name: str
    description: str
    payload_schema: JSON = strawberry.field(description="The payload's JSON Schema (Draft 2020-12).")
    result_schema: JSON | None = strawberry.field(
        description="The result's JSON Schema (Draft 2020-12); null when any JSON object is a result."
    )
    result_invalid_retryable: bool = strawberry.field(
        description="Whether an attempt whose result misfits `resultSchema` is retried."
    )
    timeout_s: int
    max_attempts: int
    remote_only: bool = strawberry.field(description="Served only by remote workers (worker API).")
    cost_model: str | None = strawberry.field(description="The cost model's name, if it has one.")

    @classmethod
    def from_workflow(cls, flow: Workflow) -> WorkflowType:
        return cls(
            name=flow.name,
            description=flow.description,
            payload_schema=JSON(flow.payload_schema),
            result_schema=None if flow.result_schema is None else JSON(flow.result_schema),
            result_invalid_retryable=flow.result_invalid_retryable,
            timeout_s=flow.timeout_s,
            max_attempts=flow.max_attempts,
            remote_only=flow.remote_only,
            cost_model=flow.cost_model_name,
        )


@strawberry.type
class JobControlPayload:
    job: JobType | None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class WorkflowQuery:
    @strawberry.field(description="The registered workflows, as GET /api/v1/workflows.")
    async def workflows(self, info: Info[Any, None]) -> list[WorkflowType]:
        return [WorkflowType.from_workflow(flow) for flow in await list_workflows(info.context.levqor)]


@strawberry.type
class JobControlMutation:
    @strawberry.mutation(
        description="Cancel a job (needs `jobs:write`): queued at once, running at its next heartbeat."
    )
    async def cancel_job(self, info: Info[Any, None], id: strawberry.ID) -> JobControlPayload:
        async def call() -> JobControlPayload:
            job = await job_control.cancel_job(info.context.levqor, id)
            return JobControlPayload(job=JobType.from_row(job))

        return await with_user_errors(call, lambda errors: JobControlPayload(job=None, user_errors=errors))

    @strawberry.mutation(description="Run a failed or cancelled job again (needs `jobs:write`).")
    async def retry_job(self, info: Info[Any, None], id: strawberry.ID) -> JobControlPayload:
        async def call() -> JobControlPayload:
            job = await job_control.retry_job(info.context.levqor, id)
            return JobControlPayload(job=JobType.from_row(job))

        return await with_user_errors(call, lambda errors: JobControlPayload(job=None, user_errors=errors))
