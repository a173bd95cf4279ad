"""Usage: jobs, outcomes, spend, holds and tokens, grouped by day, workflow, key or user.

Read from the jobs themselves (each job counts on the UTC day it was submitted), so it covers jobs
with and without budgets; for jobs under a budget it equals the ledger to the micro-dollar, since a
settlement spends exactly the job's `cost_actual_micros`. A caller sees the jobs its own managed key
submitted; an admin sees all, and may filter by key and user.
"""

from __future__ import annotations

import enum
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from sqlalchemy import ColumnElement, Table, case, func, literal, select
from sqlmodel import Session, SQLModel

from levqor.db.models import TERMINAL_STATUSES, Job, JobStatus
from levqor.db.principals import managed_key_id, managed_principal_id
from levqor.errors import Forbidden, InvalidRequest
from levqor.resolvers.context import Context, Scope

JOBS: Table = SQLModel.metadata.tables[Job.__tablename__]
DEFAULT_DAYS = 30
MAX_DAYS = 366
MAX_GROUPS = 1000


class UsageGroup(enum.StrEnum):
    DAY = "day"
    WORKFLOW = "workflow"
    KEY = "key"
    USER = "user"


ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_day(value: Any) -> Any:
    """A day as text must be `YYYY-MM-DD`: nothing else a date parser would take (digits read as a
    Unix time, week dates, `20261206`)."""
    if isinstance(value, str) and not ISO_DAY.fullmatch(value):
        raise ValueError("must be a day as YYYY-MM-DD")
    return value


Day = Annotated[date, BeforeValidator(_iso_day), Field(strict=False)]


class UsageInput(BaseModel):
    """`from` and `to` are UTC days, both included: by default the 30 days to today, or to `to`;
    `from` alone runs to today. The range spans at most 366 days."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    from_: Annotated[Day | None, Field(alias="from")] = None
    to: Day | None = None
    group_by: Annotated[UsageGroup, Field(strict=False)] = UsageGroup.DAY
    key_id: Annotated[uuid.UUID | None, Field(strict=False)] = None
    user_id: Annotated[uuid.UUID | None, Field(strict=False)] = None

    def days(self, today: date) -> tuple[date, date]:
        """The range asked for, its defaults filled in; refused if it runs backwards or spans more
        than MAX_DAYS."""
        end = self.to or today
        start = self.from_ or end - timedelta(days=DEFAULT_DAYS - 1)
        if start > end:
            raise InvalidRequest.for_field("from", f"{start} is after the range's end, {end}")
        if (end - start).days >= MAX_DAYS:
            raise InvalidRequest.for_field(
                "from", f"{start} to {end} spans {(end - start).days + 1} days; the most is {MAX_DAYS}"
            )
        return start, end


@dataclass(frozen=True, slots=True)
class UsageRow:
    group: str | None  # the day (YYYY-MM-DD), workflow, key id or user id; None: no key / no user
    jobs: int
    succeeded: int
    failed: int
    cancelled: int
    spent_micros: int
    reserved_micros: int  # held for jobs not yet finished
    estimated_micros: int  # the estimates of the group's jobs
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class JobTokens:
    """The tokens one job's attempts reported, summed; `total` is prompt + completion (cached tokens
    are part of the prompt, reasoning tokens part of the completion)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def job_tokens(job: Job) -> JobTokens | None:
    """A job's tokens, or None when no attempt reported any."""
    counts = (job.prompt_tokens, job.completion_tokens, job.cached_tokens, job.reasoning_tokens)
    if all(count is None for count in counts):
        return None
    prompt, completion, cached, reasoning = (count or 0 for count in counts)
    return JobTokens(
        prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached, reasoning_tokens=reasoning
    )


@dataclass(frozen=True, slots=True)
class UsageReport:
    start: date
    end: date
    group_by: UsageGroup
    rows: list[UsageRow]


def _day(session: Session) -> ColumnElement[Any]:
    if session.get_bind().dialect.name == "postgresql":
        return func.to_char(func.timezone("UTC", JOBS.c.created_at), "YYYY-MM-DD")
    return func.substr(JOBS.c.created_at, 1, 10)  # SQLite keeps `YYYY-MM-DD HH:MM:SS` in UTC


def _count(status: JobStatus) -> ColumnElement[Any]:
    return func.sum(case((JOBS.c.status == status.value, 1), else_=0))


def _sum(column: ColumnElement[Any]) -> ColumnElement[Any]:
    return func.coalesce(func.sum(column), 0)


async def get_usage(ctx: Context, data: Any) -> UsageReport:
    from levqor.resolvers.validation import parse_input

    principal = ctx.principal
    principal.require(Scope.JOBS_READ)
    query = parse_input(UsageInput, data)
    admin = Scope.ADMIN in principal.scopes
    own_key = managed_key_id(principal.id)
    if not admin:
        if own_key is None:
            raise Forbidden("usage is kept per managed API key: this key is not one, so it needs 'admin'")
        if query.key_id is not None and query.key_id != own_key:
            raise Forbidden("a key without 'admin' sees only its own usage")
    start, end = query.days(datetime.now(UTC).date())

    def run(session: Session) -> UsageReport:
        c = JOBS.c
        group: ColumnElement[Any]
        match query.group_by:
            case UsageGroup.DAY:
                group = _day(session)
            case UsageGroup.WORKFLOW:
                group = c.workflow
            case UsageGroup.KEY:
                group = c.submitted_by
            case UsageGroup.USER:
                group = c.user_id
        unfinished = c.status.not_in([status.value for status in TERMINAL_STATUSES])
        statement = (
            select(
                group.label("group"),
                func.count().label("jobs"),
                _count(JobStatus.SUCCEEDED).label("succeeded"),
                _count(JobStatus.FAILED).label("failed"),
                _count(JobStatus.CANCELLED).label("cancelled"),
                _sum(c.cost_actual_micros).label("spent"),
                _sum(case((unfinished, c.reserved_micros), else_=literal(0))).label("reserved"),
                _sum(c.cost_estimate_micros).label("estimated"),
                _sum(c.prompt_tokens).label("prompt"),
                _sum(c.completion_tokens).label("completion"),
                _sum(c.cached_tokens).label("cached"),
                _sum(c.reasoning_tokens).label("reasoning"),
            )
            .where(
                c.created_at >= datetime.combine(start, time(), UTC),
                c.created_at < datetime.combine(end + timedelta(days=1), time(), UTC),
            )
            .group_by(group)
            .order_by(group)
            .limit(MAX_GROUPS)
        )
        key = own_key if not admin else query.key_id
        if key is not None:
            statement = statement.where(c.submitted_by == managed_principal_id(key))
        if query.user_id is not None:
            statement = statement.where(c.user_id == query.user_id)
        rows = [
            UsageRow(
                group=_group_name(row.group),
                jobs=int(row.jobs),
                succeeded=int(row.succeeded),
                failed=int(row.failed),
                cancelled=int(row.cancelled),
                spent_micros=int(row.spent),
                reserved_micros=int(row.reserved),
                estimated_micros=int(row.estimated),
                prompt_tokens=int(row.prompt),
                completion_tokens=int(row.completion),
                cached_tokens=int(row.cached),
                reasoning_tokens=int(row.reasoning),
            )
            for row in session.execute(statement)
        ]
        return UsageReport(start=start, end=end, group_by=query.group_by, rows=rows)

    return await ctx.db.read(run)


def _group_name(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str) and (key := managed_key_id(value)) is not None:
        return str(key)  # a key's id, as the keys API names it
    return str(value)
