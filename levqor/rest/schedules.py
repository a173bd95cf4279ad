"""REST adapters for schedules (CONTRACT.md §7): POST/GET /api/v1/schedules, GET/PATCH/DELETE
/api/v1/schedules/<id>, POST /api/v1/schedules/<id>/run. Timestamps in ISO-8601 UTC."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from levqor.db.models import ScheduleFire
from levqor.http.context import context_for
from levqor.resolvers import schedules
from levqor.resolvers.context import Scope
from levqor.resolvers.schedules import ScheduleView
from levqor.rest.body import read_json
from levqor.rest.routing import ApiPath, ApiRoute, Operation, api_paths, json_response
from levqor.rest.shapes import ErrorBody


class FireErrorBody(BaseModel):
    """Why intake stored no job for a fire: the error code and message intake answered with."""

    error: str
    message: str


class ScheduleFireBody(BaseModel):
    """One fire of a schedule: the job it submitted, or why there is none."""

    fire_time: datetime = Field(description="The tick it fired for (for `manual`, when it was asked).")
    kind: str = Field(description="`tick`, `missed` (one `run_once` fire for missed ticks) or `manual`.")
    ticks: int = Field(
        description="The ticks it stands for: 1, the missed ticks of `missed`, 0 for `manual`."
    )
    job_id: str | None
    error: FireErrorBody | None
    fired_at: datetime

    @classmethod
    def from_row(cls, fire: ScheduleFire) -> ScheduleFireBody:
        return cls(
            fire_time=fire.fire_time,
            kind=fire.kind,
            ticks=fire.ticks,
            job_id=None if fire.job_id is None else str(fire.job_id),
            error=None if fire.error is None else FireErrorBody.model_validate(fire.error),
            fired_at=fire.fired_at,
        )


class ScheduleBody(BaseModel):
    """A schedule with its next fire times and its latest fires (newest first)."""

    id: str
    name: str
    cron: str | None
    every_s: int | None
    timezone: str
    job: dict[str, Any] = Field(description="The intake body each fire submits.")
    on_missed: str = Field(description="`skip` or `run_once`.")
    enabled: bool
    next_fire_at: datetime | None = Field(description="null while paused.")
    next_fire_times: list[datetime] = Field(description="The next ticks, soonest first; none while paused.")
    fires: list[ScheduleFireBody]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_view(cls, view: ScheduleView) -> ScheduleBody:
        schedule = view.schedule
        return cls(
            id=str(schedule.id),
            name=schedule.name,
            cron=schedule.cron,
            every_s=schedule.every_s,
            timezone=schedule.timezone,
            job=dict(schedule.job),
            on_missed=schedule.on_missed,
            enabled=schedule.enabled,
            next_fire_at=schedule.next_fire_at if schedule.enabled else None,
            next_fire_times=view.next_fire_times,
            fires=[ScheduleFireBody.from_row(fire) for fire in view.fires],
            created_at=schedule.created_at,
            updated_at=schedule.updated_at,
        )


class ScheduleEnvelope(BaseModel):
    """One schedule."""

    schedule: ScheduleBody


class ScheduleList(BaseModel):
    """A page of schedules, oldest first; `next_cursor` pages on (null on the last page)."""

    schedules: list[ScheduleBody]
    next_cursor: str | None


class ScheduleRun(BaseModel):
    """The fire "run now" made, with its job, and the schedule."""

    fire: ScheduleFireBody
    job_id: str
    schedule: ScheduleBody


async def create(request: Request) -> Response:
    view = await schedules.create_schedule(context_for(request), await read_json(request))
    return json_response(ScheduleEnvelope(schedule=ScheduleBody.from_view(view)), 201)


async def list_page(request: Request) -> Response:
    page = await schedules.list_schedules(context_for(request), dict(request.query_params))
    return json_response(
        ScheduleList(
            schedules=[ScheduleBody.from_view(view) for view in page.schedules], next_cursor=page.next_cursor
        )
    )


async def get_one(request: Request) -> Response:
    view = await schedules.get_schedule(context_for(request), request.path_params["schedule_id"])
    return json_response(ScheduleEnvelope(schedule=ScheduleBody.from_view(view)))


async def update(request: Request) -> Response:
    view = await schedules.update_schedule(
        context_for(request), request.path_params["schedule_id"], await read_json(request)
    )
    return json_response(ScheduleEnvelope(schedule=ScheduleBody.from_view(view)))


async def remove(request: Request) -> Response:
    view = await schedules.delete_schedule(context_for(request), request.path_params["schedule_id"])
    return json_response(ScheduleEnvelope(schedule=ScheduleBody.from_view(view)))


async def run_now(request: Request) -> Response:
    ran = await schedules.run_schedule(context_for(request), request.path_params["schedule_id"])
    assert ran.fire.job_id is not None
    body = ScheduleRun(
        fire=ScheduleFireBody.from_row(ran.fire),
        job_id=str(ran.fire.job_id),
        schedule=ScheduleBody.from_view(ran.view),
    )
    return json_response(body, 202)


def routes() -> list[ApiPath]:
    errors: dict[int, type[BaseModel] | None] = {401: ErrorBody, 403: ErrorBody, 429: ErrorBody}
    body_errors: dict[int, type[BaseModel] | None] = {400: ErrorBody, 413: ErrorBody, 415: ErrorBody}
    path = "/api/v1/schedules/{schedule_id}"
    return api_paths(
        [
            ApiRoute(
                "POST",
                "/api/v1/schedules",
                create,
                Operation(
                    "Create a schedule: a job submitted on a cron expression or every N seconds; "
                    "its job is checked as intake checks one; 409 when another schedule has its name",
                    {201: ScheduleEnvelope, **body_errors, 409: ErrorBody, **errors},
                    "schedules",
                    body=schedules.ScheduleCreateInput,
                    scope=Scope.JOBS_WRITE,
                ),
            ),
            ApiRoute(
                "GET",
                "/api/v1/schedules",
                list_page,
                Operation(
                    "List schedules, oldest first, a page at a time",
                    {200: ScheduleList, 400: ErrorBody, **errors},
                    "schedules",
                    query=schedules.ScheduleListQuery,
                    scope=Scope.JOBS_READ,
                ),
            ),
            ApiRoute(
                "GET",
                path,
                get_one,
                Operation(
                    "A schedule with its next fire times and latest fires",
                    {200: ScheduleEnvelope, 404: ErrorBody, **errors},
                    "schedules",
                    scope=Scope.JOBS_READ,
                ),
            ),
            ApiRoute(
                "PATCH",
                path,
                update,
                Operation(
                    "Change a schedule: `enabled: false` pauses it, `enabled: true` resumes it from "
                    "the next tick (the ticks of the pause never fire); 409 when another schedule "
                    "has the new name",
                    {200: ScheduleEnvelope, 404: ErrorBody, **body_errors, 409: ErrorBody, **errors},
                    "schedules",
                    body=schedules.ScheduleUpdateInput,
                    scope=Scope.JOBS_WRITE,
                ),
            ),
            ApiRoute(
                "DELETE",
                path,
                remove,
                Operation(
                    "Remove a schedule and its fire records (its jobs stay)",
                    {200: ScheduleEnvelope, 404: ErrorBody, **errors},
                    "schedules",
                    scope=Scope.JOBS_WRITE,
                ),
            ),
            ApiRoute(
                "POST",
                f"{path}/run",
                run_now,
                Operation(
                    "Fire a schedule now, enabled or paused; intake's refusal (400, 402) is recorded "
                    "on the fire and answered; 409 when its owner's key can no longer submit",
                    {
                        202: ScheduleRun,
                        400: ErrorBody,
                        402: ErrorBody,
                        404: ErrorBody,
                        409: ErrorBody,
                        **errors,
                    },
                    "schedules",
                    scope=Scope.JOBS_WRITE,
                ),
            ),
        ]
    )
