"""REST adapters for runs (CONTRACT.md §7): POST /api/v1/runs, GET /api/v1/runs/<id>, POST
/api/v1/runs/<id>/cancel. Timestamps in ISO-8601 UTC; money in USD micro-dollars."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from levqor.db.models import Job, RunEvent
from levqor.http.context import context_for
from levqor.resolvers import runs
from levqor.resolvers.context import Scope
from levqor.resolvers.runs import RunSubmitted, RunView
from levqor.rest.body import read_json
from levqor.rest.jobs import IDEMPOTENCY_PARAM
from levqor.rest.routing import ApiPath, ApiRoute, Operation, api_paths, json_response
from levqor.rest.shapes import BudgetExceededBody, DeliveryBody, ErrorBody

RUN_PATH = "/api/v1/runs/{run_id}"


class RunAccepted(BaseModel):
    """The run was stored whole: each step's job, by key."""

    run_id: str
    status: str
    jobs: dict[str, str] = Field(description="Each step's job id, by the step's key.")

    @classmethod
    def from_submitted(cls, submitted: RunSubmitted) -> RunAccepted:
        return cls(
            run_id=str(submitted.run.id),
            status=submitted.run.status,
            jobs={key: str(job_id) for key, job_id in submitted.jobs.items()},
        )


class DependencyBody(BaseModel):
    key: str
    on_failure: str = Field(description="`cancel` or `run`: what this step does if the parent fails.")


class RunStepBody(BaseModel):
    """One step: its job's state and outcome (the whole job is at /api/v1/jobs/<job_id>)."""

    key: str
    job_id: str
    workflow: str
    status: str
    depends_on: list[DependencyBody]
    waiting_on: int = Field(description="How many of its parents it still waits for.")
    attempts: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    started_at: datetime | None
    finished_at: datetime | None
    cost_estimate_micros: int | None
    cost_actual_micros: int | None

    @classmethod
    def from_step(cls, view: RunView, job: Job) -> RunStepBody:
        return cls(
            key=job.step_key or "",
            job_id=str(job.id),
            workflow=job.workflow,
            status=job.status,
            depends_on=[DependencyBody(key=key, on_failure=rule) for key, rule in view.depends_on(job.id)],
            waiting_on=job.waiting_on,
            attempts=job.attempts,
            result=job.result,
            error=job.error,
            started_at=job.started_at,
            finished_at=job.finished_at,
            cost_estimate_micros=job.cost_estimate_micros,
            cost_actual_micros=job.cost_actual_micros,
        )


class RunEventBody(BaseModel):
    at: datetime
    type: str
    from_status: str | None
    to_status: str
    detail: dict[str, Any] | None

    @classmethod
    def from_row(cls, event: RunEvent) -> RunEventBody:
        return cls(
            at=event.at,
            type=event.type,
            from_status=event.from_status,
            to_status=event.to_status,
            detail=event.detail,
        )


class RunBody(BaseModel):
    """A run: its state, its figures summed over its steps, each step, its events and callback."""

    run_id: str
    status: str
    cancel_requested: bool
    callback_url: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    steps_total: int
    counts: dict[str, int] = Field(description="How many steps are in each job state.")
    cost_estimate_micros: int | None = Field(description="The sum of the steps' estimates.")
    cost_actual_micros: int | None = Field(
        description="The sum of what the steps cost (null: none reported)."
    )
    reserved_micros: int | None = Field(
        description="What the budgets hold for the steps not finished (null: no budget applies)."
    )
    jobs: dict[str, str] = Field(description="Each step's job id, by key.")
    steps: list[RunStepBody] = Field(description="Parents before children, in the order they were stored.")
    events: list[RunEventBody]
    deliveries: list[DeliveryBody]

    @classmethod
    def from_view(cls, view: RunView) -> RunBody:
        run = view.run
        return cls(
            run_id=str(run.id),
            status=view.status.value,
            cancel_requested=run.cancel_requested,
            callback_url=run.callback_url,
            created_at=run.created_at,
            updated_at=run.updated_at,
            finished_at=run.finished_at,
            steps_total=run.steps_total,
            counts=view.counts,
            cost_estimate_micros=view.cost_estimate_micros,
            cost_actual_micros=view.cost_actual_micros,
            reserved_micros=view.reserved_micros,
            jobs={step.step_key or "": str(step.id) for step in view.steps},
            steps=[RunStepBody.from_step(view, step) for step in view.steps],
            events=[RunEventBody.from_row(event) for event in view.events],
            deliveries=[DeliveryBody.from_record(record) for record in view.deliveries],
        )


async def submit(request: Request) -> Response:
    submitted = await runs.submit_run(
        context_for(request),
        await read_json(request),
        idempotency_key=request.headers.get(IDEMPOTENCY_PARAM.name),
    )
    headers = {"Location": RUN_PATH.format(run_id=submitted.run.id)}
    if not submitted.created:
        headers["Idempotent-Replayed"] = "true"
    return json_response(RunAccepted.from_submitted(submitted), 202, headers)


async def get_one(request: Request) -> Response:
    view = await runs.get_run(context_for(request), request.path_params["run_id"])
    return json_response(RunBody.from_view(view))


async def cancel(request: Request) -> Response:
    view = await runs.cancel_run(context_for(request), request.path_params["run_id"])
    return json_response(RunBody.from_view(view))


def routes() -> list[ApiPath]:
    errors: dict[int, type[BaseModel] | None] = {401: ErrorBody, 403: ErrorBody, 429: ErrorBody}
    return api_paths(
        [
            ApiRoute(
                "POST",
                "/api/v1/runs",
                submit,
                Operation(
                    "Submit a run: steps (intake bodies with a key and the keys they depend on) stored "
                    "and reserved whole, or refused whole naming the step, key or cycle at fault",
                    {
                        202: RunAccepted,
                        400: ErrorBody,
                        402: BudgetExceededBody,
                        409: ErrorBody,
                        413: ErrorBody,
                        415: ErrorBody,
                        **errors,
                    },
                    "runs",
                    body=runs.RunSubmitInput,
                    scope=Scope.JOBS_WRITE,
                    headers=(IDEMPOTENCY_PARAM,),
                    response_headers={
                        202: {
                            "Location": "The run's route, /api/v1/runs/<run_id>",
                            "Idempotent-Replayed": "`true` when an Idempotency-Key returned an earlier run",
                        }
                    },
                ),
            ),
            ApiRoute(
                "GET",
                RUN_PATH,
                get_one,
                Operation(
                    "A run with its steps, events and callback deliveries",
                    {200: RunBody, 404: ErrorBody, **errors},
                    "runs",
                    scope=Scope.JOBS_READ,
                ),
            ),
            ApiRoute(
                "POST",
                f"{RUN_PATH}/cancel",
                cancel,
                Operation(
                    "Cancel a run: its queued steps at once, its running ones at their next heartbeat; "
                    "409 when it has finished",
                    {200: RunBody, 404: ErrorBody, 409: ErrorBody, **errors},
                    "runs",
                    scope=Scope.JOBS_WRITE,
                ),
            ),
        ]
    )
