"""Response bodies of the REST layer. They serialise the responses and document them in OpenAPI.

Seed routes keep the seed's shapes and unix-second timestamps; the newer routes use ISO-8601 UTC.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from levqor.callbacks.attempts import DeliveryRecord
from levqor.db.models import CallbackAttempt, DeliveryStatus, Job, JobEvent, User
from levqor.http.errors import HTTP_ERROR_CODES
from levqor.resolvers.job_reads import JobStatusView
from levqor.resolvers.job_updates import JobUpdate
from levqor.resolvers.usage import job_tokens


def unix_s(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


# The REST body's `error` codes (CONTRACT.md §4), one per status the server answers with.
ERROR_CODES = frozenset(HTTP_ERROR_CODES.values())


class ErrorBody(BaseModel):
    """An error (CONTRACT.md §4)."""

    error: str
    message: str
    details: list[dict[str, Any]] | None = None
    request_id: str | None = None


class BudgetRefusalDetail(BaseModel):
    """The budget that refused a job, and what remains of it (micro-USD)."""

    field: str
    code: str
    message: str
    budget_id: str
    subject: str
    subject_id: str
    period: str
    limit_micros: int
    remaining_micros: int
    estimate_micros: int
    resets_at: str | None


class BudgetExceededBody(BaseModel):
    """Budget exceeded: the error body, its `details[0]` naming the budget."""

    error: str
    message: str
    details: list[BudgetRefusalDetail]
    request_id: str | None = None


class ServiceInfo(BaseModel):
    ok: bool
    service: str
    version: str


class HealthBody(BaseModel):
    ok: bool
    ts: int


class OpsHealthBody(HealthBody):
    """The seed's ops health plus a database round-trip, the queue depth and the live workers."""

    db: bool
    queue_depth: int | None
    workers: int | None


class PublicMetricsBody(BaseModel):
    uptime_rolling_7d: float
    jobs_today: int
    audit_coverage: float
    last_updated: int


class JobAccepted(BaseModel):
    job_id: str
    status: str

    @classmethod
    def from_row(cls, job: Job) -> JobAccepted:
        return cls(job_id=str(job.id), status=job.status)


class JobStatusBody(BaseModel):
    """GET /api/v1/status/<job_id> (seed), plus attempts and the run's start and finish."""

    job_id: str
    status: str
    created_at: int
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    attempts: int
    started_at: int | None
    finished_at: int | None

    @classmethod
    def from_row(cls, job: Job | JobStatusView) -> JobStatusBody:
        return cls(
            job_id=str(job.id),
            status=job.status,
            created_at=int(job.created_at.timestamp()),
            result=job.result,
            error=job.error,
            attempts=job.attempts,
            started_at=unix_s(job.started_at),
            finished_at=unix_s(job.finished_at),
        )


class JobEventBody(BaseModel):
    at: datetime
    type: str
    from_status: str | None
    to_status: str
    attempt: int
    worker_id: str | None
    detail: dict[str, Any] | None

    @classmethod
    def from_row(cls, event: JobEvent) -> JobEventBody:
        return cls(
            at=event.at,
            type=event.type,
            from_status=event.from_status,
            to_status=event.to_status,
            attempt=event.attempt,
            worker_id=event.worker_id,
            detail=event.detail,
        )


class TokenUsageBody(BaseModel):
    """The tokens a job's attempts reported, summed; `total_tokens` is prompt + completion (cached
    tokens are part of the prompt, reasoning tokens part of the completion)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    total_tokens: int

    @classmethod
    def from_job(cls, job: Job) -> TokenUsageBody | None:
        tokens = job_tokens(job)
        if tokens is None:
            return None
        return cls(
            prompt_tokens=tokens.prompt_tokens,
            completion_tokens=tokens.completion_tokens,
            cached_tokens=tokens.cached_tokens,
            reasoning_tokens=tokens.reasoning_tokens,
            total_tokens=tokens.total_tokens,
        )


class JobBody(BaseModel):
    """A whole job (GET /api/v1/jobs and /api/v1/jobs/<id>), timestamps in ISO-8601 UTC. Money is
    integer USD micro-dollars (1 USD = 1000000), as on GraphQL's `Micros` fields."""

    id: str
    workflow: str
    status: str
    priority: str
    payload: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    callback_url: str | None
    user_id: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    run_at: datetime
    attempts: int
    max_attempts: int
    timeout_s: int | None
    cost_estimate_micros: int | None = Field(description="USD micro-dollars, from the workflow's cost model.")
    cost_actual_micros: int | None = Field(
        description="USD micro-dollars, the sum of what its attempts reported (null until one does)."
    )
    cost_estimated: bool = Field(
        description="True when some of the actual cost is itself an estimate (a run that stopped "
        "before it could report its usage)."
    )
    reserved_micros: int | None = Field(
        description="What its budgets hold for it until it finishes (null: no budget applied at intake); "
        "at its terminal state the hold is replaced by the actual cost."
    )
    defer_reason: str | None = Field(
        description="Why a queued job waits past its submission (`budget_policy: defer`): the budget "
        "and its reset, which is its `run_at`."
    )
    tokens: TokenUsageBody | None = Field(description="Tokens reported by its attempts; null: none reported.")
    cancel_requested: bool  # a running job's cancellation is on its way to the worker
    progress: dict[str, Any] | None  # the last progress its worker reported
    run_id: str | None = Field(default=None, description="The run this job is a step of (null: none).")
    step_key: str | None = Field(default=None, description="The step's key in its run.")

    @classmethod
    def from_row(cls, job: Job) -> JobBody:
        return cls(
            id=str(job.id),
            workflow=job.workflow,
            status=job.status,
            priority=job.job_priority.value,
            payload=job.payload,
            result=job.result,
            error=job.error,
            callback_url=job.callback_url,
            user_id=str(job.user_id) if job.user_id else None,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            run_at=job.run_at,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            timeout_s=job.timeout_s,
            cost_estimate_micros=job.cost_estimate_micros,
            cost_actual_micros=job.cost_actual_micros,
            cost_estimated=job.cost_estimated,
            reserved_micros=job.reserved_micros,
            defer_reason=job.defer_reason,
            tokens=TokenUsageBody.from_job(job),
            cancel_requested=job.cancel_requested,
            progress=job.progress,
            run_id=None if job.run_id is None else str(job.run_id),
            step_key=job.step_key,
        )


class JobDetailBody(JobBody):
    """A job with its event log and its callback deliveries."""

    events: list[JobEventBody]
    deliveries: list[DeliveryBody]

    @classmethod
    def from_rows(cls, job: Job, events: list[JobEvent], deliveries: list[DeliveryRecord]) -> JobDetailBody:
        base = JobBody.from_row(job).model_dump()
        return cls(
            **base,
            events=[JobEventBody.from_row(event) for event in events],
            deliveries=[DeliveryBody.from_record(record) for record in deliveries],
        )


class JobUpdateBody(BaseModel):
    """One update of GET /api/v1/jobs/<id>/events/stream, the `data` of an event whose `id` is the
    job event's: a state change or a progress report, with the job's status and last progress."""

    job_id: str
    status: str
    progress: dict[str, Any] | None
    event: JobEventBody

    @classmethod
    def from_update(cls, update: JobUpdate) -> JobUpdateBody:
        return cls(
            job_id=str(update.job_id),
            status=update.status.value,
            progress=update.progress,
            event=JobEventBody.from_row(update.event),
        )


class JobList(BaseModel):
    jobs: list[JobBody]
    next_cursor: str | None


class UserBody(BaseModel):
    """The seed's user object; timestamps in unix seconds like the other seed routes."""

    id: str
    email: str
    name: str
    locale: str
    currency: str
    meta: dict[str, Any]
    created_at: int
    updated_at: int

    @classmethod
    def from_row(cls, user: User) -> UserBody:
        return cls(
            id=str(user.id),
            email=user.email,
            name=user.name,
            locale=user.locale,
            currency=user.currency,
            meta=user.meta,
            created_at=int(user.created_at.timestamp()),
            updated_at=int(user.updated_at.timestamp()),
        )


class UserCreated(BaseModel):
    created: bool
    user: UserBody


class UserUpdated(BaseModel):
    updated: bool
    user: UserBody


class OkBody(BaseModel):
    ok: bool


class DeliveryAttemptBody(BaseModel):
    """One POST of a callback: what came back (`status_code`), or why nothing did (`error`).
    `finished_at` null: the sender stopped before it could record the attempt."""

    attempt: int
    started_at: datetime
    finished_at: datetime | None
    status_code: int | None
    latency_ms: int | None
    response_excerpt: str | None
    error: str | None

    @classmethod
    def from_row(cls, row: CallbackAttempt) -> DeliveryAttemptBody:
        return cls(
            attempt=row.attempt,
            started_at=row.started_at,
            finished_at=row.finished_at,
            status_code=row.status_code,
            latency_ms=row.latency_ms,
            response_excerpt=row.response_excerpt,
            error=row.error,
        )


class DeliveryBody(BaseModel):
    """A callback of a job (CONTRACT.md §8): `pending` until delivered or given up (`failed`)."""

    id: str
    event_type: str
    webhook_id: str
    url: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    failed_reason: str | None
    resent_from: str | None
    attempt_log: list[DeliveryAttemptBody]

    @classmethod
    def from_record(cls, record: DeliveryRecord) -> DeliveryBody:
        row = record.delivery
        return cls(
            id=str(row.id),
            event_type=row.event_type,
            webhook_id=row.webhook_id,
            url=row.url,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at if row.status == DeliveryStatus.PENDING.value else None,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            failed_reason=row.failed_reason,
            resent_from=None if row.resent_from is None else str(row.resent_from),
            attempt_log=[DeliveryAttemptBody.from_row(attempt) for attempt in record.attempt_log],
        )
