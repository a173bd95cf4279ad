"""GraphQL twins of the remote worker routes: `claimJobs`, `heartbeatJob`, `completeJobRun`,
`failJobRun`, over the same resolvers (levqor.resolvers.workers)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from levqor.queue import ClaimedJob
from levqor.resolvers import workers
from levqor.schema.errors import with_user_errors
from levqor.schema.inputs import as_data
from levqor.schema.scalars import Long, Micros, optional_micros
from levqor.schema.types import JobType, UserError


@strawberry.input(name="ClaimJobsInput")
class ClaimJobsInput:
    worker_id: str
    workflows: list[str]
    max_jobs: int | None = strawberry.field(default=strawberry.UNSET, description="1 to 100 (default 1).")
    wait_s: float | None = strawberry.field(
        default=strawberry.UNSET, description="Seconds to wait for a job when none is ready, 0 to 30."
    )
    lease_s: int | None = strawberry.UNSET


@strawberry.input(name="TokenUsageInput", description="The tokens an attempt used.")
class TokenUsageInput:
    prompt_tokens: Long | None = strawberry.UNSET
    completion_tokens: Long | None = strawberry.UNSET
    cached_tokens: Long | None = strawberry.field(
        default=strawberry.UNSET, description="The part of promptTokens read from a prompt cache."
    )
    reasoning_tokens: Long | None = strawberry.field(
        default=strawberry.UNSET, description="The part of completionTokens spent reasoning."
    )


_COST_MICROS = "What the attempt cost so far, in USD micro-dollars."
_COST_ESTIMATED = "Some of the cost is an estimate (the real figure never came)."


@strawberry.input(name="HeartbeatJobInput")
class HeartbeatJobInput:
    worker_id: str
    attempt: int
    progress: JSON | None = strawberry.UNSET
    lease_s: int | None = strawberry.UNSET
    cost_micros: Micros | None = strawberry.field(
        default=strawberry.UNSET,
        description=f"{_COST_MICROS} Past the job's budget hold the job is stopped: cancelRequested.",
    )
    usage: TokenUsageInput | None = strawberry.UNSET
    cost_estimated: bool | None = strawberry.field(default=strawberry.UNSET, description=_COST_ESTIMATED)


@strawberry.input(name="CompleteJobRunInput")
class CompleteJobRunInput:
    worker_id: str
    attempt: int
    result: JSON
    cost_micros: Micros | None = strawberry.field(default=strawberry.UNSET, description=_COST_MICROS)
    usage: TokenUsageInput | None = strawberry.UNSET
    cost_estimated: bool | None = strawberry.field(default=strawberry.UNSET, description=_COST_ESTIMATED)
    cost: Decimal | None = strawberry.field(
        default=strawberry.UNSET,
        description="USD the run cost.",
        deprecation_reason="Use costMicros: money is integer micro-dollars on every surface.",
    )


@strawberry.input(name="FailJobRunInput")
class FailJobRunInput:
    worker_id: str
    attempt: int
    error: JSON = strawberry.field(description="An object, or a message string.")
    retryable: bool | None = strawberry.UNSET
    retry_after_s: float | None = strawberry.UNSET
    cost_micros: Micros | None = strawberry.field(default=strawberry.UNSET, description=_COST_MICROS)
    usage: TokenUsageInput | None = strawberry.UNSET
    cost_estimated: bool | None = strawberry.field(default=strawberry.UNSET, description=_COST_ESTIMATED)


@strawberry.type(name="ClaimedJob", description="A job held by a worker for one attempt.")
class ClaimedJobType:
    id: strawberry.ID
    attempt: int
    workflow: str
    payload: JSON
    lease_expires_at: datetime
    lease_s: int
    timeout_s: int | None
    cost_estimate_micros: Micros | None = strawberry.field(
        description="The job's estimate, USD micro-dollars."
    )
    reserved_micros: Micros | None = strawberry.field(
        description="What the job's budgets hold for it (null: no budget applies)."
    )
    spent_before_micros: Micros = strawberry.field(description="What the job's earlier attempts cost.")
    run_id: strawberry.ID | None = strawberry.field(default=None, description="The run, for a step of one.")
    step_key: str | None = strawberry.field(default=None, description="The step's key in its run.")
    parents: JSON | None = strawberry.field(
        default=None, description="A step's parents by key: `{job_id, status, result, error}` each."
    )

    @classmethod
    def from_claim(cls, job: ClaimedJob, lease_s: int) -> ClaimedJobType:
        return cls(
            id=strawberry.ID(str(job.id)),
            attempt=job.attempt,
            workflow=job.workflow,
            payload=JSON(job.payload),
            lease_expires_at=job.lease_expires_at,
            lease_s=lease_s,
            timeout_s=job.timeout_s,
            cost_estimate_micros=optional_micros(job.cost_estimate_micros),
            reserved_micros=optional_micros(job.reserved_micros),
            spent_before_micros=Micros(job.spent_before_micros),
            run_id=None if job.run_id is None else strawberry.ID(str(job.run_id)),
            step_key=job.step_key,
            parents=None if job.parents is None else JSON(job.parents),
        )


@strawberry.type
class ClaimJobsPayload:
    jobs: list[ClaimedJobType] = strawberry.field(description="Empty when none came within waitS.")
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class HeartbeatJobPayload:
    lease_expires_at: datetime | None
    cancel_requested: bool | None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class JobRunPayload:
    job: JobType | None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class WorkerMutation:
    """Merged into `Mutation`. A `CONFLICT` user error on the fenced verbs means the lease is lost."""

    @strawberry.mutation(
        description="Claim jobs for a worker (needs `worker`), as POST /api/v1/workers/claim."
    )
    async def claim_jobs(self, info: Info[Any, None], input: ClaimJobsInput) -> ClaimJobsPayload:
        async def call() -> ClaimJobsPayload:
            claim = await workers.claim_jobs(info.context.levqor, as_data(input))
            return ClaimJobsPayload(
                jobs=[ClaimedJobType.from_claim(job, claim.lease_s) for job in claim.jobs]
            )

        return await with_user_errors(call, lambda errors: ClaimJobsPayload(jobs=[], user_errors=errors))

    @strawberry.mutation(description="Extend the lease of a running attempt (needs `worker`).")
    async def heartbeat_job(
        self, info: Info[Any, None], id: strawberry.ID, input: HeartbeatJobInput
    ) -> HeartbeatJobPayload:
        async def call() -> HeartbeatJobPayload:
            beat = await workers.heartbeat_job(info.context.levqor, id, as_data(input))
            return HeartbeatJobPayload(
                lease_expires_at=beat.lease_expires_at, cancel_requested=beat.cancel_requested
            )

        return await with_user_errors(
            call,
            lambda errors: HeartbeatJobPayload(
                lease_expires_at=None, cancel_requested=None, user_errors=errors
            ),
        )

    @strawberry.mutation(description="Finish an attempt with its result (needs `worker`).")
    async def complete_job_run(
        self, info: Info[Any, None], id: strawberry.ID, input: CompleteJobRunInput
    ) -> JobRunPayload:
        async def call() -> JobRunPayload:
            job = await workers.complete_job_run(info.context.levqor, id, as_data(input))
            return JobRunPayload(job=JobType.from_row(job))

        return await with_user_errors(call, lambda errors: JobRunPayload(job=None, user_errors=errors))

    @strawberry.mutation(
        description="Fail an attempt; retried with backoff while it may be (needs `worker`)."
    )
    async def fail_job_run(
        self, info: Info[Any, None], id: strawberry.ID, input: FailJobRunInput
    ) -> JobRunPayload:
        async def call() -> JobRunPayload:
            job = await workers.fail_job_run(info.context.levqor, id, as_data(input))
            return JobRunPayload(job=JobType.from_row(job))

        return await with_user_errors(call, lambda errors: JobRunPayload(job=None, user_errors=errors))
