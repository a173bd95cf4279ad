"""GraphQL for runs (CONTRACT.md §7): the `run` query and the `submitRun` / `cancelRun` mutations,
thin adapters over `levqor.resolvers.runs` like the REST routes under /api/v1/runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from levqor.db.models import Job, ParentFailure, RunEvent, RunStatus
from levqor.resolvers import runs
from levqor.resolvers.runs import RunView
from levqor.schema.delivery_types import DeliveryType
from levqor.schema.errors import with_user_errors
from levqor.schema.inputs import as_data
from levqor.schema.scalars import Micros, optional_micros
from levqor.schema.types import JobType, PriorityEnum, UserError

RunStatusEnum = strawberry.enum(RunStatus, name="RunStatus", description="Where a run is in its life.")
ParentFailureEnum = strawberry.enum(
    ParentFailure,
    name="ParentFailure",
    description="What a step does when a parent fails or is cancelled: CANCEL it too, or RUN anyway.",
)


@strawberry.type(name="RunDependency", description="An edge: the step waits for the step `key`.")
class RunDependencyType:
    key: str
    on_failure: ParentFailureEnum  # type: ignore[valid-type]


@strawberry.type(name="RunStep", description="One step of a run: its key, its job and its parents.")
class RunStepType:
    key: str
    job: JobType
    depends_on: list[RunDependencyType]
    waiting_on: int = strawberry.field(description="How many of its parents it still waits for.")

    @classmethod
    def from_step(cls, view: RunView, job: Job) -> RunStepType:
        return cls(
            key=job.step_key or "",
            job=JobType.from_row(job),
            depends_on=[
                RunDependencyType(key=key, on_failure=ParentFailure(rule))
                for key, rule in view.depends_on(job.id)
            ],
            waiting_on=job.waiting_on,
        )


@strawberry.type(name="RunEvent", description="A change of a run's own state.")
class RunEventType:
    at: datetime
    type: str
    from_status: str | None
    to_status: str
    detail: JSON | None

    @classmethod
    def from_row(cls, event: RunEvent) -> RunEventType:
        return cls(
            at=event.at,
            type=event.type,
            from_status=event.from_status,
            to_status=event.to_status,
            detail=None if event.detail is None else JSON(event.detail),
        )


@strawberry.type(name="RunStepCounts", description="How many steps are in each job state.")
class RunStepCountsType:
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


@strawberry.type(name="Run", description="A graph of jobs submitted together (CONTRACT.md §7).")
class RunType:
    id: strawberry.ID
    status: RunStatusEnum  # type: ignore[valid-type]
    cancel_requested: bool
    callback_url: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    steps_total: int
    counts: RunStepCountsType
    cost_estimate_micros: Micros | None = strawberry.field(description="The sum of the steps' estimates.")
    cost_actual_micros: Micros | None = strawberry.field(description="The sum of what the steps cost.")
    reserved_micros: Micros | None = strawberry.field(
        description="What the budgets hold for the steps not finished (null: no budget applies)."
    )
    jobs: list[JobType] = strawberry.field(description="Its steps' jobs, parents before children.")
    steps: list[RunStepType] = strawberry.field(description="Its steps, parents before children.")
    events: list[RunEventType]
    deliveries: list[DeliveryType] = strawberry.field(description="Its callback, when it has finished.")

    @classmethod
    def from_view(cls, view: RunView) -> RunType:
        run = view.run
        return cls(
            id=strawberry.ID(str(run.id)),
            status=view.status,
            cancel_requested=run.cancel_requested,
            callback_url=run.callback_url,
            created_at=run.created_at,
            updated_at=run.updated_at,
            finished_at=run.finished_at,
            steps_total=run.steps_total,
            counts=RunStepCountsType(**view.counts),
            cost_estimate_micros=optional_micros(view.cost_estimate_micros),
            cost_actual_micros=optional_micros(view.cost_actual_micros),
            reserved_micros=optional_micros(view.reserved_micros),
            jobs=[JobType.from_row(step) for step in view.steps],
            steps=[RunStepType.from_step(view, step) for step in view.steps],
            events=[RunEventType.from_row(event) for event in view.events],
            deliveries=[DeliveryType.from_record(record) for record in view.deliveries],
        )


@strawberry.input(name="RunDependencyInput")
class RunDependencyInput:
    key: str
    on_failure: ParentFailureEnum = ParentFailure.CANCEL  # type: ignore[valid-type]


@strawberry.input(name="RunStepInput", description="A step: an intake body, its key and its parents.")
class RunStepInput:
    key: str
    workflow: str
    payload: JSON
    depends_on: list[RunDependencyInput] | None = strawberry.UNSET
    callback_url: str | None = strawberry.UNSET
    priority: PriorityEnum | None = strawberry.UNSET  # type: ignore[valid-type]
    user_id: strawberry.ID | None = strawberry.UNSET
    run_at: datetime | None = strawberry.UNSET
    max_attempts: int | None = strawberry.UNSET
    timeout_s: int | None = strawberry.UNSET


@strawberry.input(name="SubmitRunInput")
class SubmitRunInput:
    steps: list[RunStepInput]
    callback_url: str | None = strawberry.UNSET


@strawberry.type
class SubmitRunPayload:
    run: RunType | None
    replayed: bool = strawberry.field(
        default=False, description="True when an idempotency key returned the run of an earlier request."
    )
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class CancelRunPayload:
    run: RunType | None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class RunQuery:
    @strawberry.field(description="One run by id (needs `jobs:read`).")
    async def run(self, info: Info[Any, None], id: strawberry.ID) -> RunType | None:
        return RunType.from_view(await runs.get_run(info.context.levqor, id))


@strawberry.type
class RunMutation:
    @strawberry.mutation(
        description="Submit a run (needs `jobs:write`), as POST /api/v1/runs: stored and reserved whole, "
        "or refused whole."
    )
    async def submit_run(
        self, info: Info[Any, None], input: SubmitRunInput, idempotency_key: str | None = None
    ) -> SubmitRunPayload:
        async def call() -> SubmitRunPayload:
            ctx = info.context.levqor
            submitted = await runs.submit_run(ctx, as_data(input), idempotency_key=idempotency_key)
            view = await runs.submitted_view(ctx, submitted)
            return SubmitRunPayload(run=RunType.from_view(view), replayed=not submitted.created)

        return await with_user_errors(call, lambda errors: SubmitRunPayload(run=None, user_errors=errors))

    @strawberry.mutation(description="Cancel what has not finished of a run (needs `jobs:write`).")
    async def cancel_run(self, info: Info[Any, None], id: strawberry.ID) -> CancelRunPayload:
        async def call() -> CancelRunPayload:
            return CancelRunPayload(run=RunType.from_view(await runs.cancel_run(info.context.levqor, id)))

        return await with_user_errors(call, lambda errors: CancelRunPayload(run=None, user_errors=errors))
