"""Schedules (CONTRACT.md §7): create, list, get, change (pause and resume too), delete and "run now".

A schedule is a job template (the intake body without `run_at`) and a cadence: a five-field cron
expression in an IANA time zone, or every `every_s` seconds. Its job is checked as intake checks one
when it is set (workflow, payload, callback URL, user) and again at every fire, which goes through
intake (levqor/resolvers/schedule_fires.py). Managing needs `jobs:write`, reading `jobs:read`.

Pausing clears `next_fire_at`; resuming sets it to the first tick after the resume, so the ticks of
a pause never fire, whatever `on_missed` says: a pause is deliberate, `on_missed` is for the time no
scheduler ran. "Run now" fires at once whether the schedule is enabled or paused.

A name is how a schedule is addressed from configuration ("the nightly-report schedule"), so it is
unique across the deployment, as every key that can read schedules sees all of them (issue 13):
taking a name another schedule has is a conflict. The listing pages by id, keyset: ids are UUIDv7,
so id order is creation order.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from levqor.db.models import FireKind, MissedFire, Schedule, ScheduleFire, User
from levqor.db.types import utcnow
from levqor.errors import Conflict, FieldCode, Forbidden, InvalidRequest, LevqorError, NotFound, Unauthorized
from levqor.resolvers.context import Context, Scope
from levqor.resolvers.jobs import DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, JobTemplateInput, prepare_submit
from levqor.resolvers.schedule_fires import (
    FireOutcome,
    PlannedFire,
    Submission,
    cadence_of,
    prepare_fire,
    record_fire,
)
from levqor.resolvers.validation import (
    QUERY_INTEGER,
    WHOLE_NUMBER,
    omittable_not_null,
    parse_id,
    parse_input,
)
from levqor.scheduling.cadence import CRON_PATTERN, MAX_EVERY_S, check_cron, interval_anchor, time_zones, zone

NEXT_FIRE_TIMES = 5  # the upcoming ticks a schedule shows
RECENT_FIRES = 10  # the fires a schedule shows, newest first
# A cursor is the unpadded url-safe base64 of the 16 bytes of the last id a page showed: 22
# characters, the last one holding 2 bits and 4 zero bits. Any string of this pattern is a place
# in id order, so the pattern OpenAPI shows is exactly what is taken.
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{21}[AQgw]$"


def _time_zone(name: str) -> str:
    zone(name)  # ValueError naming an unknown zone
    return name


ScheduleName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
CronExpression = Annotated[str, StringConstraints(pattern=CRON_PATTERN), AfterValidator(check_cron)]
TimeZoneName = Annotated[
    str, AfterValidator(_time_zone), Field(json_schema_extra={"enum": list(time_zones())})
]
EverySeconds = Annotated[int, Field(ge=1, le=MAX_EVERY_S), WHOLE_NUMBER]
OnMissed = Annotated[MissedFire, Field(strict=False)]


def _no_nulls(model: BaseModel, names: tuple[str, ...]) -> None:
    for name in names:
        if name in model.model_fields_set and getattr(model, name) is None:
            raise ValueError(f"{name} may be left out, but not null")


class ScheduleCreateInput(BaseModel):
    """A new schedule: `cron` (with `timezone`) or `every_s`, exactly one."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra=omittable_not_null(
            "cron", "every_s", oneOf=[{"required": ["cron"]}, {"required": ["every_s"]}]
        ),
    )

    name: ScheduleName
    cron: CronExpression | None = Field(
        None, description="Five fields: minute hour day-of-month month day-of-week, in `timezone`."
    )
    every_s: EverySeconds | None = Field(None, description="Seconds between fires, from the creation.")
    timezone: TimeZoneName = Field("UTC", description="The IANA zone `cron` is read in.")
    job: JobTemplateInput
    on_missed: OnMissed = Field(
        MissedFire.SKIP,
        description="Ticks missed while no scheduler ran: `skip` them, or `run_once` for all of them.",
    )
    enabled: bool = True

    @model_validator(mode="after")
    def _one_cadence(self) -> ScheduleCreateInput:
        _no_nulls(self, ("cron", "every_s"))
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("give exactly one of cron and every_s")
        return self


class ScheduleUpdateInput(BaseModel):
    """The fields to change; `cron` replaces an interval and `every_s` a cron expression."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra=omittable_not_null(
            "name",
            "cron",
            "every_s",
            "timezone",
            "job",
            "on_missed",
            "enabled",
            **{"not": {"required": ["cron", "every_s"]}},
        ),
    )

    name: ScheduleName | None = None
    cron: CronExpression | None = None
    every_s: EverySeconds | None = None
    timezone: TimeZoneName | None = None
    job: JobTemplateInput | None = None
    on_missed: OnMissed | None = None
    enabled: bool | None = None

    @model_validator(mode="after")
    def _one_cadence(self) -> ScheduleUpdateInput:
        _no_nulls(self, tuple(type(self).model_fields))
        if self.cron is not None and self.every_s is not None:
            raise ValueError("give at most one of cron and every_s")
        return self


class ScheduleListQuery(BaseModel):
    """A page of the listing: at most `limit` schedules after `cursor` (GET /api/v1/jobs's bounds)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    limit: Annotated[int, Field(ge=1, le=MAX_LIST_LIMIT), QUERY_INTEGER] = DEFAULT_LIST_LIMIT
    cursor: Annotated[str, StringConstraints(pattern=CURSOR_PATTERN)] | None = Field(
        None, description="The `next_cursor` of the page before."
    )


@dataclass(frozen=True, slots=True)
class ScheduleView:
    """A schedule with its next ticks and its latest fires."""

    schedule: Schedule
    next_fire_times: list[datetime]
    fires: list[ScheduleFire]


@dataclass(frozen=True, slots=True)
class SchedulePage:
    schedules: list[ScheduleView]
    next_cursor: str | None  # None on the last page


@dataclass(frozen=True, slots=True)
class RunResult:
    fire: ScheduleFire
    view: ScheduleView
    refusal: LevqorError | None = None


def _view(session: Session, schedule: Schedule, fires: int = RECENT_FIRES) -> ScheduleView:
    upcoming: list[datetime] = []
    if schedule.enabled and schedule.next_fire_at is not None:
        cadence = cadence_of(schedule)
        upcoming = [schedule.next_fire_at, *cadence.upcoming(schedule.next_fire_at, NEXT_FIRE_TIMES - 1)]
    recent = session.exec(
        select(ScheduleFire)
        .where(ScheduleFire.schedule_id == schedule.id)
        .order_by(col(ScheduleFire.fire_time).desc(), col(ScheduleFire.id).desc())
        .limit(fires)
    )
    return ScheduleView(schedule=schedule, next_fire_times=upcoming, fires=list(recent))


def _get(session: Session, key: uuid.UUID) -> Schedule:
    schedule = session.get(Schedule, key)
    if schedule is None:
        raise NotFound(f"no schedule with id '{key}'")
    return schedule


async def _check_job(ctx: Context, job: JobTemplateInput) -> dict[str, Any]:
    """The job as intake would check it now (as the caller); the body to store."""
    body = job.model_dump(mode="json", exclude_defaults=True)  # one form, whichever surface sent it
    await prepare_submit(ctx, body)
    return body


def _check_user(session: Session, body: dict[str, Any]) -> None:
    user_id = body.get("user_id")
    if user_id is not None and session.get(User, uuid.UUID(user_id)) is None:
        raise InvalidRequest.for_field("job.user_id", f"no user with id '{user_id}'", FieldCode.NOT_FOUND)


def _check_name_free(session: Session, name: str, schedule_id: uuid.UUID | None = None) -> None:
    holder = _holder_of(session, name)
    if holder is not None and holder != schedule_id:
        raise _name_taken(name, holder)


def _holder_of(session: Session, name: str) -> uuid.UUID | None:
    return session.exec(select(Schedule.id).where(Schedule.name == name)).first()


def _name_taken(name: str, holder: uuid.UUID | None) -> Conflict:
    which = f" (id {holder})" if holder is not None else ""
    return Conflict(f"a schedule named '{name}' already exists{which}; choose another name")


async def _write_named(
    ctx: Context, run: Callable[[Session], ScheduleView], name: str | None
) -> ScheduleView:
    """`run` in a write transaction; a `name` that another request took since `run` checked it
    (the unique index, ux_schedules_name) is the same conflict as one taken before."""
    try:
        return await ctx.db.write(run)
    except IntegrityError as exc:
        if name is None:
            raise
        holder = await ctx.db.read(lambda session: _holder_of(session, name))
        raise _name_taken(name, holder) from exc


def _schedule_next(schedule: Schedule, now: datetime) -> None:
    schedule.next_fire_at = cadence_of(schedule).next_after(now) if schedule.enabled else None


async def create_schedule(ctx: Context, data: Any) -> ScheduleView:
    ctx.principal.require(Scope.JOBS_WRITE)
    fields = parse_input(ScheduleCreateInput, data)
    body = await _check_job(ctx, fields.job)

    def run(session: Session) -> ScheduleView:
        _check_user(session, body)
        _check_name_free(session, fields.name)
        now = utcnow()
        schedule = Schedule(
            name=fields.name,
            cron=fields.cron,
            every_s=fields.every_s,
            timezone=fields.timezone,
            anchor_at=interval_anchor(now),
            job=body,
            on_missed=fields.on_missed.value,
            enabled=fields.enabled,
            owner=ctx.principal.id,
            created_at=now,
            updated_at=now,
        )
        _schedule_next(schedule, now)
        session.add(schedule)
        session.flush()
        return _view(session, schedule)

    return await _write_named(ctx, run, fields.name)


def cursor_of(schedule: Schedule) -> str:
    """The cursor that pages past `schedule`."""
    return base64.urlsafe_b64encode(schedule.id.bytes).decode().rstrip("=")


def _decode_cursor(cursor: str) -> uuid.UUID:
    # The pattern has been checked: 22 characters of the alphabet always decode to 16 bytes.
    return uuid.UUID(bytes=base64.urlsafe_b64decode(cursor + "=="))


async def list_schedules(ctx: Context, data: Any | None = None) -> SchedulePage:
    """A page of schedules, oldest first (by id, keyset), each with its latest fires."""
    ctx.principal.require(Scope.JOBS_READ)
    query = parse_input(ScheduleListQuery, {} if data is None else data)
    after = _decode_cursor(query.cursor) if query.cursor else None

    def run(session: Session) -> SchedulePage:
        statement = select(Schedule)
        if after is not None:
            statement = statement.where(col(Schedule.id) > after)
        rows = list(session.exec(statement.order_by(col(Schedule.id)).limit(query.limit + 1)))
        more = len(rows) > query.limit
        rows = rows[: query.limit]
        return SchedulePage(
            schedules=[_view(session, schedule) for schedule in rows],
            next_cursor=cursor_of(rows[-1]) if more else None,
        )

    return await ctx.db.read(run)


async def get_schedule(ctx: Context, schedule_id: str | uuid.UUID) -> ScheduleView:
    ctx.principal.require(Scope.JOBS_READ)
    key = parse_id(schedule_id, kind="schedule")
    return await ctx.db.read(lambda session: _view(session, _get(session, key)))


async def update_schedule(ctx: Context, schedule_id: str | uuid.UUID, data: Any) -> ScheduleView:
    """Change some fields. A new job makes the caller the schedule's owner (its fires submit as the
    caller); a new cadence, or a resume, sets the next fire to the first tick from now. A name
    another schedule has is a conflict."""
    ctx.principal.require(Scope.JOBS_WRITE)
    key = parse_id(schedule_id, kind="schedule")
    fields = parse_input(ScheduleUpdateInput, data)
    body = await _check_job(ctx, fields.job) if fields.job is not None else None

    def run(session: Session) -> ScheduleView:
        schedule = _get(session, key)
        now = utcnow()
        replan = False
        if fields.name is not None and fields.name != schedule.name:
            _check_name_free(session, fields.name, key)
            schedule.name = fields.name
        if fields.cron is not None:
            schedule.cron, schedule.every_s, replan = fields.cron, None, True
        if fields.every_s is not None:
            schedule.cron, schedule.every_s, replan = None, fields.every_s, True
            schedule.anchor_at = interval_anchor(now)
        if fields.timezone is not None:
            replan = replan or (schedule.timezone != fields.timezone and schedule.cron is not None)
            schedule.timezone = fields.timezone
        if body is not None:
            _check_user(session, body)
            schedule.job = body
            schedule.owner = ctx.principal.id
        if fields.on_missed is not None:
            schedule.on_missed = fields.on_missed.value
        if fields.enabled is not None and fields.enabled != schedule.enabled:
            schedule.enabled, replan = fields.enabled, True
        if replan:
            _schedule_next(schedule, now)
        schedule.updated_at = now
        session.add(schedule)
        session.flush()
        return _view(session, schedule)

    return await _write_named(ctx, run, fields.name)


async def delete_schedule(ctx: Context, schedule_id: str | uuid.UUID) -> ScheduleView:
    """Remove a schedule and its fire records (the jobs it submitted stay); the answer is the
    schedule as it was."""
    ctx.principal.require(Scope.JOBS_WRITE)
    key = parse_id(schedule_id, kind="schedule")

    def run(session: Session) -> ScheduleView:
        schedule = _get(session, key)
        view = _view(session, schedule)
        session.execute(delete(ScheduleFire).where(col(ScheduleFire.schedule_id) == key))
        session.delete(schedule)
        return view

    return await ctx.db.write(run)


async def run_schedule(ctx: Context, schedule_id: str | uuid.UUID) -> RunResult:
    """Fire now, as the schedule's owner, whether it is enabled or paused; its ticks are unchanged.
    A refusal by intake is recorded on the fire and answered as intake answers it; an owner whose
    key can no longer submit is a conflict (the caller's own key is fine)."""
    ctx.principal.require(Scope.JOBS_WRITE)
    key = parse_id(schedule_id, kind="schedule")
    while True:
        schedule = await ctx.db.read(lambda session: _get(session, key))
        submission: Submission = await prepare_fire(ctx.db, ctx.settings, schedule, ctx.resolver)

        def run(
            session: Session, seen: Schedule = schedule, ready: Submission = submission
        ) -> RunResult | None:
            row = _get(session, key)
            if row.updated_at != seen.updated_at:
                return None  # changed since its job was checked: check the new one
            outcome: FireOutcome | None = None
            while outcome is None:  # a "run now" at the very instant of another fire takes the next
                outcome = record_fire(session, row, PlannedFire(utcnow(), FireKind.MANUAL, 0), ready)
            return RunResult(fire=outcome.fire, view=_view(session, row), refusal=outcome.refusal)

        result = await ctx.db.write(run)
        if result is not None:
            break
    if isinstance(result.refusal, Unauthorized | Forbidden):
        raise Conflict(f"this schedule cannot fire: {result.refusal.message}")
    if result.refusal is not None:
        raise result.refusal
    return result
