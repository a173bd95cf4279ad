"""GraphQL object types, kept apart from the table models and converted by one classmethod each."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from levqor.db.models import Currency, Job, JobEvent, JobStatus, Priority, User
from levqor.resolvers import deliveries as delivery_resolvers
from levqor.resolvers import jobs as job_resolvers
from levqor.resolvers import runs as run_resolvers
from levqor.resolvers.usage import job_tokens
from levqor.schema.delivery_types import DeliveryType
from levqor.schema.scalars import Long, Micros, optional_micros

if TYPE_CHECKING:
    from levqor.schema.runs import RunType

MICROS_PER_USD = Decimal(1_000_000)

JobStatusEnum = strawberry.enum(JobStatus, name="JobStatus", description="Where a job is in its life.")
PriorityEnum = strawberry.enum(Priority, name="Priority", description="High runs before normal before low.")
CurrencyEnum = strawberry.enum(Currency, name="Currency")


def usd(micros: int | None) -> Decimal | None:
    return None if micros is None else Decimal(micros) / MICROS_PER_USD


@strawberry.type(name="UserError", description="An expected failure of a mutation, naming the input field.")
class UserError:
    field: str | None
    message: str
    code: str = strawberry.field(
        description="For a refused field, why, as REST's `details[].code` says it (`type`, `required`, "
        "`enum`, `too_long`, ...); otherwise the error's code (`NOT_FOUND`, `CONFLICT`, ...)."
    )


@strawberry.type(name="JobEvent", description="One state change of a job.")
class JobEventType:
    at: datetime
    type: str
    from_status: JobStatusEnum | None  # type: ignore[valid-type]
    to_status: JobStatusEnum  # type: ignore[valid-type]
    attempt: int
    worker_id: str | None
    detail: JSON | None

    @classmethod
    def from_row(cls, row: JobEvent) -> JobEventType:
        return cls(
            at=row.at,
            type=row.type,
            from_status=JobStatus(row.from_status) if row.from_status else None,
            to_status=JobStatus(row.to_status),
            attempt=row.attempt,
            worker_id=row.worker_id,
            detail=JSON(row.detail) if row.detail is not None else None,
        )


@strawberry.type(
    name="TokenUsage",
    description="The tokens a job's attempts reported, summed. `totalTokens` is prompt + completion "
    "(cached tokens are part of the prompt, reasoning tokens part of the completion).",
)
class TokenUsageType:
    prompt_tokens: Long
    completion_tokens: Long
    cached_tokens: Long
    reasoning_tokens: Long
    total_tokens: Long

    @classmethod
    def from_job(cls, row: Job) -> TokenUsageType | None:
        tokens = job_tokens(row)
        if tokens is None:
            return None
        return cls(
            prompt_tokens=Long(tokens.prompt_tokens),
            completion_tokens=Long(tokens.completion_tokens),
            cached_tokens=Long(tokens.cached_tokens),
            reasoning_tokens=Long(tokens.reasoning_tokens),
            total_tokens=Long(tokens.total_tokens),
        )


MICROS_INSTEAD = "Decimal USD; use `{field}` (integer micro-dollars, as REST's `{rest}`)."


@strawberry.type(name="Job", description="A unit of work: a workflow run on a payload.")
class JobType:
    id: strawberry.ID
    workflow: str
    status: JobStatusEnum  # type: ignore[valid-type]
    priority: PriorityEnum  # type: ignore[valid-type]
    payload: JSON
    result: JSON | None
    error: JSON | None
    callback_url: str | None
    user_id: strawberry.ID | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    run_at: datetime
    attempts: int
    max_attempts: int
    timeout_s: int | None
    cost_estimate: Decimal | None = strawberry.field(
        description="USD, from the workflow's cost model.",
        deprecation_reason=MICROS_INSTEAD.format(field="costEstimateMicros", rest="cost_estimate_micros"),
    )
    cost_actual: Decimal | None = strawberry.field(
        description="USD, as the run reported it.",
        deprecation_reason=MICROS_INSTEAD.format(field="costActualMicros", rest="cost_actual_micros"),
    )
    cost_estimate_micros: Micros | None = strawberry.field(
        default=None, description="USD micro-dollars, from the workflow's cost model."
    )
    cost_actual_micros: Micros | None = strawberry.field(
        default=None,
        description="USD micro-dollars, the sum of what its attempts reported (null until one does).",
    )
    cost_estimated: bool = strawberry.field(
        default=False,
        description="True when some of the actual cost is itself an estimate (a run that stopped "
        "before it could report its usage).",
    )
    reserved_micros: Micros | None = strawberry.field(
        default=None,
        description="What its budgets hold for it until it finishes (null: no budget applied at "
        "intake); at its terminal state the hold is replaced by the actual cost.",
    )
    defer_reason: str | None = strawberry.field(
        default=None,
        description="Why a queued job waits past its submission (`budgetPolicy: DEFER`): the budget "
        "and its reset, which is its `runAt`.",
    )
    tokens: TokenUsageType | None = strawberry.field(
        default=None, description="Tokens reported by its attempts; null: none reported."
    )
    cancel_requested: bool = strawberry.field(
        default=False, description="A running job's cancellation is on its way to the worker."
    )
    progress: JSON | None = strawberry.field(
        default=None,
        description="The last progress its worker reported (null until one does); it stays once the "
        "job has finished, and through a retry until the next report.",
    )
    step_key: str | None = strawberry.field(
        default=None, description="Its key in its run (null: not a step)."
    )
    run_uuid: strawberry.Private[uuid.UUID | None] = None

    @strawberry.field(description="The run this job is a step of (null: none); needs `jobs:read`.")
    async def run(
        self, info: Info[Any, None]
    ) -> Annotated[RunType, strawberry.lazy("levqor.schema.runs")] | None:
        from levqor.schema.runs import RunType

        if self.run_uuid is None:
            return None
        return RunType.from_view(await run_resolvers.get_run(info.context.levqor, self.run_uuid))

    @strawberry.field(description="Every state change, oldest first.")
    async def events(self, info: Info[Any, None]) -> list[JobEventType]:
        rows = await job_resolvers.get_job_events(info.context.levqor, uuid.UUID(self.id))
        return [JobEventType.from_row(row) for row in rows]

    @strawberry.field(description="Its callback deliveries, oldest first, each with every attempt.")
    async def deliveries(self, info: Info[Any, None]) -> list[DeliveryType]:
        records = await delivery_resolvers.get_job_deliveries(info.context.levqor, uuid.UUID(self.id))
        return [DeliveryType.from_record(record) for record in records]

    @classmethod
    def from_row(cls, row: Job) -> JobType:
        return cls(
            id=strawberry.ID(str(row.id)),
            workflow=row.workflow,
            status=row.job_status,
            priority=row.job_priority,
            payload=JSON(row.payload),
            result=JSON(row.result) if row.result is not None else None,
            error=JSON(row.error) if row.error is not None else None,
            callback_url=row.callback_url,
            user_id=strawberry.ID(str(row.user_id)) if row.user_id else None,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            run_at=row.run_at,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            timeout_s=row.timeout_s,
            cost_estimate=usd(row.cost_estimate_micros),
            cost_actual=usd(row.cost_actual_micros),
            cost_estimate_micros=optional_micros(row.cost_estimate_micros),
            cost_actual_micros=optional_micros(row.cost_actual_micros),
            cost_estimated=row.cost_estimated,
            reserved_micros=optional_micros(row.reserved_micros),
            defer_reason=row.defer_reason,
            tokens=TokenUsageType.from_job(row),
            cancel_requested=row.cancel_requested,
            progress=JSON(row.progress) if row.progress is not None else None,
            step_key=row.step_key,
            run_uuid=row.run_id,
        )


@strawberry.type(name="User")
class UserType:
    id: strawberry.ID
    email: str
    name: str
    locale: str
    currency: CurrencyEnum  # type: ignore[valid-type]
    meta: JSON
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: User) -> UserType:
        return cls(
            id=strawberry.ID(str(row.id)),
            email=row.email,
            name=row.name,
            locale=row.locale,
            currency=Currency(row.currency),
            meta=JSON(row.meta),
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


@strawberry.type(name="JobEdge")
class JobEdge:
    node: JobType
    cursor: str


@strawberry.type(name="PageInfo")
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type(name="JobConnection", description="A page of jobs, newest first (Relay connection).")
class JobConnection:
    edges: list[JobEdge]
    page_info: PageInfo


@strawberry.type(name="Health")
class HealthType:
    ok: bool
    ts: int


@strawberry.type(name="PublicMetrics")
class PublicMetricsType:
    uptime_rolling_7d: float
    jobs_today: int
    audit_coverage: float
    last_updated: int
