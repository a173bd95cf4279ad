"""REST adapter for the overview: GET /api/v1/overview?window_s=&buckets=. Timestamps in ISO-8601 UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from levqor.db.models import JobStatus
from levqor.http.context import context_for
from levqor.resolvers import overview
from levqor.resolvers.context import Scope
from levqor.rest.routing import ApiPath, ApiRoute, Operation, api_paths, json_response
from levqor.rest.shapes import ErrorBody


class JobCountsBody(BaseModel):
    """How many jobs are in each state now."""

    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int

    @classmethod
    def from_counts(cls, counts: dict[JobStatus, int]) -> JobCountsBody:
        return cls(**{status.value: counts.get(status, 0) for status in JobStatus})


class ThroughputBucketBody(BaseModel):
    """The jobs that finished in [start, end), by outcome."""

    start: datetime
    end: datetime
    succeeded: int
    failed: int
    cancelled: int


class HeldJobBody(BaseModel):
    id: str
    workflow: str
    attempt: int
    started_at: datetime | None = Field(description="When the job first started.")
    lease_expires_at: datetime | None
    progress: dict[str, Any] | None = Field(description="The last progress its worker reported.")


class LiveWorkerBody(BaseModel):
    id: str
    workflows: list[str]
    started_at: datetime
    last_seen_at: datetime
    jobs: list[HeldJobBody] = Field(description="The running jobs this worker holds.")

    @classmethod
    def from_worker(cls, worker: overview.LiveWorker) -> LiveWorkerBody:
        return cls(
            id=worker.id,
            workflows=worker.workflows,
            started_at=worker.started_at,
            last_seen_at=worker.last_seen_at,
            jobs=[
                HeldJobBody(
                    id=str(job.id),
                    workflow=job.workflow,
                    attempt=job.attempt,
                    started_at=job.started_at,
                    lease_expires_at=job.lease_expires_at,
                    progress=job.progress,
                )
                for job in worker.jobs
            ],
        )


class OverviewBody(BaseModel):
    """Jobs by state, the queue, pickup latency and throughput over the window, and the live workers."""

    generated_at: datetime
    window_s: int
    counts: JobCountsBody
    queue_depth: int = Field(description="Queued jobs that are due now and wait on no parent step.")
    scheduled: int = Field(description="Queued jobs whose run_at is still to come.")
    oldest_queued_age_s: float | None = Field(
        description="How long the longest-waiting due queued job has been due (null: none)."
    )
    pickup_p50_ms: float | None = Field(
        description="Median of first start minus due time, over the jobs first started in the window."
    )
    pickup_p95_ms: float | None = Field(description="95th percentile of the same.")
    buckets: list[ThroughputBucketBody] = Field(description="The window in equal slices, oldest first.")
    workers: list[LiveWorkerBody] = Field(description="Live workers, the most recently seen first.")

    @classmethod
    def from_overview(cls, view: overview.Overview) -> OverviewBody:
        return cls(
            generated_at=view.generated_at,
            window_s=view.window_s,
            counts=JobCountsBody.from_counts(view.counts),
            queue_depth=view.queue_depth,
            scheduled=view.scheduled,
            oldest_queued_age_s=view.oldest_queued_age_s,
            pickup_p50_ms=view.pickup_p50_ms,
            pickup_p95_ms=view.pickup_p95_ms,
            buckets=[
                ThroughputBucketBody(
                    start=b.start, end=b.end, succeeded=b.succeeded, failed=b.failed, cancelled=b.cancelled
                )
                for b in view.buckets
            ],
            workers=[LiveWorkerBody.from_worker(worker) for worker in view.workers],
        )


async def get_overview(request: Request) -> Response:
    view = await overview.get_overview(context_for(request), dict(request.query_params))
    return json_response(OverviewBody.from_overview(view))


def routes() -> list[ApiPath]:
    return api_paths(
        [
            ApiRoute(
                "GET",
                "/api/v1/overview",
                get_overview,
                Operation(
                    "Jobs by state, the queue, pickup latency, throughput over a window and the live workers",
                    {200: OverviewBody, 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 429: ErrorBody},
                    "jobs",
                    query=overview.OverviewInput,
                    scope=Scope.JOBS_READ,
                ),
            )
        ]
    )
