"""GraphQL for schedules (CONTRACT.md §7): the `schedules` and `schedule` queries and the
`createSchedule` / `updateSchedule` / `deleteSchedule` / `runSchedule` mutations, thin adapters over
`levqor.resolvers.schedules` like the REST routes under /api/v1/schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from levqor.db.models import FireKind, MissedFire, ScheduleFire
from levqor.resolvers import schedules
from levqor.resolvers.jobs import DEFAULT_LIST_LIMIT
from levqor.resolvers.schedules import ScheduleView
from levqor.schema.errors import with_user_errors
from levqor.schema.inputs import BudgetPolicy, BudgetPolicyEnum, as_data
from levqor.schema.types import PageInfo, PriorityEnum, UserError

MissedFireEnum = strawberry.enum(
    MissedFire,
    name="MissedFire",
    description="Ticks missed while no scheduler ran: SKIP them, or RUN_ONCE for all of them.",
)
FireKindEnum = strawberry.enum(
    FireKind,
    name="FireKind",
    description="TICK: a tick in its time; MISSED: one RUN_ONCE fire for missed ticks; MANUAL: run now.",
)


@strawberry.type(name="ScheduleFire", description="One fire of a schedule: its job, or why there is none.")
class ScheduleFireType:
    fire_time: datetime
    kind: FireKindEnum  # type: ignore[valid-type]
    ticks: int = strawberry.field(description="The ticks it stands for: 1, the missed ticks, 0 for MANUAL.")
    job_id: strawberry.ID | None
    error: JSON | None = strawberry.field(description="Intake's refusal: `{error, message}`.")
    fired_at: datetime

    @classmethod
    def from_row(cls, fire: ScheduleFire) -> ScheduleFireType:
        return cls(
            fire_time=fire.fire_time,
            kind=FireKind(fire.kind),
            ticks=fire.ticks,
            job_id=None if fire.job_id is None else strawberry.ID(str(fire.job_id)),
            error=None if fire.error is None else JSON(dict(fire.error)),
            fired_at=fire.fired_at,
        )


@strawberry.type(name="Schedule", description="A job submitted on a cron expression or every N seconds.")
class ScheduleType:
    id: strawberry.ID
    name: str
    cron: str | None
    every_s: int | None
    timezone: str
    job: JSON = strawberry.field(description="The intake body each fire submits (REST field names).")
    on_missed: MissedFireEnum  # type: ignore[valid-type]
    enabled: bool
    next_fire_at: datetime | None = strawberry.field(description="null while paused.")
    next_fire_times: list[datetime] = strawberry.field(description="The next ticks; none while paused.")
    fires: list[ScheduleFireType] = strawberry.field(description="The latest fires, newest first.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_view(cls, view: ScheduleView) -> ScheduleType:
        schedule = view.schedule
        return cls(
            id=strawberry.ID(str(schedule.id)),
            name=schedule.name,
            cron=schedule.cron,
            every_s=schedule.every_s,
            timezone=schedule.timezone,
            job=JSON(dict(schedule.job)),
            on_missed=MissedFire(schedule.on_missed),
            enabled=schedule.enabled,
            next_fire_at=schedule.next_fire_at if schedule.enabled else None,
            next_fire_times=view.next_fire_times,
            fires=[ScheduleFireType.from_row(fire) for fire in view.fires],
            created_at=schedule.created_at,
            updated_at=schedule.updated_at,
        )


@strawberry.type(name="ScheduleEdge")
class ScheduleEdge:
    node: ScheduleType
    cursor: str


@strawberry.type(
    name="ScheduleConnection", description="A page of schedules, oldest first (Relay connection)."
)
class ScheduleConnection:
    edges: list[ScheduleEdge]
    page_info: PageInfo


@strawberry.input(name="ScheduledJobInput", description="The intake body without runAt.")
class ScheduledJobInput:
    workflow: str
    payload: JSON
    callback_url: str | None = strawberry.UNSET
    priority: PriorityEnum | None = strawberry.UNSET  # type: ignore[valid-type]
    user_id: strawberry.ID | None = strawberry.UNSET
    max_attempts: int | None = strawberry.UNSET
    timeout_s: int | None = strawberry.UNSET
    budget_policy: BudgetPolicyEnum = BudgetPolicy.REJECT  # type: ignore[valid-type]


@strawberry.input(name="CreateScheduleInput", description="Exactly one of cron and everyS.")
class CreateScheduleInput:
    name: str
    job: ScheduledJobInput
    cron: str | None = strawberry.UNSET
    every_s: int | None = strawberry.UNSET
    timezone: str | None = strawberry.UNSET
    on_missed: MissedFireEnum | None = strawberry.UNSET  # type: ignore[valid-type]
    enabled: bool | None = strawberry.UNSET


@strawberry.input(
    name="UpdateScheduleInput",
    description="The fields to change; enabled false pauses, true resumes from the next tick.",
)
class UpdateScheduleInput:
    name: str | None = strawberry.UNSET
    job: ScheduledJobInput | None = strawberry.UNSET
    cron: str | None = strawberry.UNSET
    every_s: int | None = strawberry.UNSET
    timezone: str | None = strawberry.UNSET
    on_missed: MissedFireEnum | None = strawberry.UNSET  # type: ignore[valid-type]
    enabled: bool | None = strawberry.UNSET


@strawberry.type
class SchedulePayload:
    schedule: ScheduleType | None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class RunSchedulePayload:
    fire: ScheduleFireType | None
    job_id: strawberry.ID | None
    schedule: ScheduleType | None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class ScheduleQuery:
    @strawberry.field(description="Schedules, oldest first, paginated (needs `jobs:read`).")
    async def schedules(
        self, info: Info[Any, None], first: int = DEFAULT_LIST_LIMIT, after: str | None = None
    ) -> ScheduleConnection:
        query: dict[str, Any] = {"limit": first}
        if after is not None:
            query["cursor"] = after
        page = await schedules.list_schedules(info.context.levqor, query)
        edges = [
            ScheduleEdge(node=ScheduleType.from_view(view), cursor=schedules.cursor_of(view.schedule))
            for view in page.schedules
        ]
        return ScheduleConnection(
            edges=edges,
            page_info=PageInfo(has_next_page=page.next_cursor is not None, end_cursor=page.next_cursor),
        )

    @strawberry.field(description="One schedule by id (needs `jobs:read`).")
    async def schedule(self, info: Info[Any, None], id: strawberry.ID) -> ScheduleType | None:
        return ScheduleType.from_view(await schedules.get_schedule(info.context.levqor, id))


@strawberry.type
class ScheduleMutation:
    @strawberry.mutation(description="Create a schedule (needs `jobs:write`), as POST /api/v1/schedules.")
    async def create_schedule(self, info: Info[Any, None], input: CreateScheduleInput) -> SchedulePayload:
        async def call() -> SchedulePayload:
            view = await schedules.create_schedule(info.context.levqor, as_data(input))
            return SchedulePayload(schedule=ScheduleType.from_view(view))

        return await with_user_errors(call, lambda errors: SchedulePayload(schedule=None, user_errors=errors))

    @strawberry.mutation(description="Change, pause or resume a schedule (needs `jobs:write`).")
    async def update_schedule(
        self, info: Info[Any, None], id: strawberry.ID, input: UpdateScheduleInput
    ) -> SchedulePayload:
        async def call() -> SchedulePayload:
            view = await schedules.update_schedule(info.context.levqor, id, as_data(input))
            return SchedulePayload(schedule=ScheduleType.from_view(view))

        return await with_user_errors(call, lambda errors: SchedulePayload(schedule=None, user_errors=errors))

    @strawberry.mutation(description="Remove a schedule and its fire records (needs `jobs:write`).")
    async def delete_schedule(self, info: Info[Any, None], id: strawberry.ID) -> SchedulePayload:
        async def call() -> SchedulePayload:
            view = await schedules.delete_schedule(info.context.levqor, id)
            return SchedulePayload(schedule=ScheduleType.from_view(view))

        return await with_user_errors(call, lambda errors: SchedulePayload(schedule=None, user_errors=errors))

    @strawberry.mutation(
        description="Fire a schedule now, enabled or paused (needs `jobs:write`), as POST "
        "/api/v1/schedules/<id>/run; intake's refusal is a user error, and recorded on the fire."
    )
    async def run_schedule(self, info: Info[Any, None], id: strawberry.ID) -> RunSchedulePayload:
        async def call() -> RunSchedulePayload:
            ran = await schedules.run_schedule(info.context.levqor, id)
            return RunSchedulePayload(
                fire=ScheduleFireType.from_row(ran.fire),
                job_id=strawberry.ID(str(ran.fire.job_id)),
                schedule=ScheduleType.from_view(ran.view),
            )

        return await with_user_errors(
            call, lambda errors: RunSchedulePayload(fire=None, job_id=None, schedule=None, user_errors=errors)
        )
