"""REST adapters for the remote worker API: claim, heartbeat, complete, fail."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from levqor.http.context import context_for
from levqor.queue import ClaimedJob
from levqor.resolvers import workers
from levqor.resolvers.context import Scope
from levqor.rest.body import read_json
from levqor.rest.routing import ApiPath, ApiRoute, Operation, api_paths, json_response
from levqor.rest.shapes import ErrorBody, JobBody


class ClaimedJobBody(BaseModel):
    id: str
    attempt: int
    workflow: str
    payload: dict[str, Any]
    lease_expires_at: datetime
    lease_s: int
    timeout_s: int | None
    # Micro-USD: the job's estimate, what its budgets hold for it (null: no budget) and what earlier
    # attempts cost. Past `reserved_micros - spent_before_micros`, a reported cost stops the job.
    cost_estimate_micros: int | None
    reserved_micros: int | None
    spent_before_micros: int
    # A step of a run (null otherwise): its run, its key, and each parent's outcome by key
    # (`{job_id, status, result, error}`).
    run_id: str | None = None
    step_key: str | None = None
    parents: dict[str, dict[str, Any]] | None = None

    @classmethod
    def from_claim(cls, job: ClaimedJob, lease_s: int) -> ClaimedJobBody:
        return cls(
            id=str(job.id),
            attempt=job.attempt,
            workflow=job.workflow,
            payload=job.payload,
            lease_expires_at=job.lease_expires_at,
            lease_s=lease_s,
            timeout_s=job.timeout_s,
            cost_estimate_micros=job.cost_estimate_micros,
            reserved_micros=job.reserved_micros,
            spent_before_micros=job.spent_before_micros,
            run_id=None if job.run_id is None else str(job.run_id),
            step_key=job.step_key,
            parents=job.parents,
        )


class ClaimBody(BaseModel):
    """Jobs now held by the worker, one attempt each, until their lease expires unless heartbeated."""

    jobs: list[ClaimedJobBody]


class HeartbeatBody(BaseModel):
    """The extended lease, and whether the worker must stop the attempt: its cancellation was
    requested, or the cost it reported passed its job's budget hold (the job has then failed)."""

    lease_expires_at: datetime
    cancel_requested: bool


async def claim(request: Request) -> Response:
    result = await workers.claim_jobs(context_for(request), await read_json(request))
    if not result.jobs:
        return Response(status_code=204)
    body = ClaimBody(jobs=[ClaimedJobBody.from_claim(job, result.lease_s) for job in result.jobs])
    return json_response(body)


async def heartbeat(request: Request) -> Response:
    beat = await workers.heartbeat_job(
        context_for(request), request.path_params["job_id"], await read_json(request)
    )
    return json_response(
        HeartbeatBody(lease_expires_at=beat.lease_expires_at, cancel_requested=beat.cancel_requested)
    )


async def complete(request: Request) -> Response:
    job = await workers.complete_job_run(
        context_for(request), request.path_params["job_id"], await read_json(request)
    )
    return json_response(JobBody.from_row(job))


async def fail(request: Request) -> Response:
    job = await workers.fail_job_run(
        context_for(request), request.path_params["job_id"], await read_json(request)
    )
    return json_response(JobBody.from_row(job))


_ERRORS: dict[int, type[BaseModel] | None] = {
    400: ErrorBody,
    401: ErrorBody,
    403: ErrorBody,
    413: ErrorBody,
    415: ErrorBody,
    429: ErrorBody,
}
# 409: the lease is lost (expired and taken back, or finished elsewhere); the worker must not retry.
_FENCED: dict[int, type[BaseModel] | None] = {404: ErrorBody, 409: ErrorBody, **_ERRORS}


def routes() -> list[ApiPath]:
    return api_paths(
        [
            ApiRoute(
                "POST",
                "/api/v1/workers/claim",
                claim,
                Operation(
                    "Claim jobs for a worker, waiting up to wait_s for one (204 when none came)",
                    {200: ClaimBody, 204: None, **_ERRORS},
                    "workers",
                    body=workers.ClaimInput,
                    scope=Scope.WORKER,
                ),
            ),
            ApiRoute(
                "POST",
                "/api/v1/jobs/{job_id}/heartbeat",
                heartbeat,
                Operation(
                    "Extend the lease of a running attempt",
                    {200: HeartbeatBody, **_FENCED},
                    "workers",
                    body=workers.HeartbeatInput,
                    scope=Scope.WORKER,
                ),
            ),
            ApiRoute(
                "POST",
                "/api/v1/jobs/{job_id}/complete",
                complete,
                Operation(
                    "Finish an attempt with its result",
                    {200: JobBody, **_FENCED},
                    "workers",
                    body=workers.CompleteRunInput,
                    scope=Scope.WORKER,
                ),
            ),
            ApiRoute(
                "POST",
                "/api/v1/jobs/{job_id}/fail",
                fail,
                Operation(
                    "Fail an attempt; it is retried with backoff while attempts remain and it is retryable",
                    {200: JobBody, **_FENCED},
                    "workers",
                    body=workers.FailRunInput,
                    scope=Scope.WORKER,
                ),
            ),
        ]
    )
