"""GraphQL for the overview: the `overview` query, a thin adapter over `levqor.resolvers.overview`
like GET /api/v1/overview."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from levqor.db.models import JobStatus
from levqor.resolvers import overview


@strawberry.type(name="JobCounts", description="How many jobs are in each state now.")
class JobCountsType:
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


@strawberry.type(name="ThroughputBucket", description="The jobs that finished in [start, end), by outcome.")
class ThroughputBucketType:
    start: datetime
    end: datetime
    succeeded: int
    failed: int
    cancelled: int


@strawberry.type(name="HeldJob", description="A running job a worker holds.")
class HeldJobType:
    id: strawberry.ID
    workflow: str
    attempt: int
    started_at: datetime | None = strawberry.field(description="When the job first started.")
    lease_expires_at: datetime | None
    progress: JSON | None = strawberry.field(description="The last progress its worker reported.")


@strawberry.type(name="LiveWorker", description="A worker seen recently, with the jobs it holds.")
class LiveWorkerType:
    id: str
    workflows: list[str]
    started_at: datetime
    last_seen_at: datetime
    jobs: list[HeldJobType]

    @classmethod
    def from_worker(cls, worker: overview.LiveWorker) -> LiveWorkerType:
        return cls(
            id=worker.id,
            workflows=worker.workflows,
            started_at=worker.started_at,
            last_seen_at=worker.last_seen_at,
            jobs=[
                HeldJobType(
                    id=strawberry.ID(str(job.id)),
                    workflow=job.workflow,
                    attempt=job.attempt,
                    started_at=job.started_at,
                    lease_expires_at=job.lease_expires_at,
                    progress=JSON(job.progress) if job.progress is not None else None,
                )
                for job in worker.jobs
            ],
        )


@strawberry.type(
    name="Overview",
    description="Jobs by state, the queue, pickup latency and throughput over the window, and the "
    "live workers.",
)
class OverviewType:
    generated_at: datetime
    window_s: int
    counts: JobCountsType
    queue_depth: int = strawberry.field(
        description="Queued jobs that are due now and wait on no parent step."
    )
    scheduled: int = strawberry.field(description="Queued jobs whose runAt is still to come.")
    oldest_queued_age_s: float | None = strawberry.field(
        description="How long the longest-waiting due queued job has been due, in seconds (null: none)."
    )
    pickup_p50_ms: float | None = strawberry.field(
        description="Median of first start minus due time, over the jobs first started in the window."
    )
    pickup_p95_ms: float | None = strawberry.field(description="95th percentile of the same.")
    buckets: list[ThroughputBucketType] = strawberry.field(
        description="The window in equal slices, oldest first."
    )
    workers: list[LiveWorkerType] = strawberry.field(
        description="Live workers, the most recently seen first."
    )

    @classmethod
    def from_overview(cls, view: overview.Overview) -> OverviewType:
        return cls(
            generated_at=view.generated_at,
            window_s=view.window_s,
            counts=JobCountsType(**{status.value: view.counts.get(status, 0) for status in JobStatus}),
            queue_depth=view.queue_depth,
            scheduled=view.scheduled,
            oldest_queued_age_s=view.oldest_queued_age_s,
            pickup_p50_ms=view.pickup_p50_ms,
            pickup_p95_ms=view.pickup_p95_ms,
            buckets=[
                ThroughputBucketType(
                    start=b.start, end=b.end, succeeded=b.succeeded, failed=b.failed, cancelled=b.cancelled
                )
                for b in view.buckets
            ],
            workers=[LiveWorkerType.from_worker(worker) for worker in view.workers],
        )


@strawberry.type
class OverviewQuery:
    @strawberry.field(
        description="The overview, as GET /api/v1/overview (needs `jobs:read`): `windowS` 60 to 604800 "
        "seconds (3600 by default) cut into `buckets` 1 to 120 slices (60 by default)."
    )
    async def overview(
        self, info: Info[Any, None], window_s: int | None = None, buckets: int | None = None
    ) -> OverviewType:
        query = {
            name: value for name, value in (("window_s", window_s), ("buckets", buckets)) if value is not None
        }
        return OverviewType.from_overview(await overview.get_overview(info.context.levqor, query))
