"""The overview the dashboard opens on: jobs by state, the queue, pickup latency, throughput over a
window, and the live workers with the jobs they hold (issue 14, item 1)."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Table,
    and_,
    case,
    cast,
    func,
    literal,
    select,
    type_coerce,
)
from sqlmodel import Session, SQLModel

from levqor.db.models import TERMINAL_STATUSES, Job, JobStatus, Worker
from levqor.db.types import UtcDateTime, utcnow
from levqor.resolvers.context import Context, Scope
from levqor.resolvers.health import jobs_by_state, live_worker_condition
from levqor.resolvers.validation import QUERY_INTEGER, parse_input

JOBS: Table = SQLModel.metadata.tables[Job.__tablename__]
WORKERS: Table = SQLModel.metadata.tables[Worker.__tablename__]
DEFAULT_WINDOW_S = 3600
MIN_WINDOW_S = 60
MAX_WINDOW_S = 7 * 24 * 3600
DEFAULT_BUCKETS = 60
MAX_BUCKETS = 120
SQLITE_FRACTION_AT = 20  # where `.ffffff` starts in SQLite's stored timestamps


class OverviewInput(BaseModel):
    """The window the figures over time cover, and how many equal slices its throughput is cut into."""

    model_config = ConfigDict(extra="forbid", strict=True)

    window_s: Annotated[int, Field(ge=MIN_WINDOW_S, le=MAX_WINDOW_S), QUERY_INTEGER] = DEFAULT_WINDOW_S
    buckets: Annotated[int, Field(ge=1, le=MAX_BUCKETS), QUERY_INTEGER] = DEFAULT_BUCKETS


@dataclass(frozen=True, slots=True)
class ThroughputBucket:
    start: datetime
    end: datetime
    succeeded: int
    failed: int
    cancelled: int


@dataclass(frozen=True, slots=True)
class HeldJob:
    id: uuid.UUID
    workflow: str
    attempt: int
    started_at: datetime | None  # the job's first start
    lease_expires_at: datetime | None
    progress: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class LiveWorker:
    id: str
    workflows: list[str]
    started_at: datetime
    last_seen_at: datetime
    jobs: list[HeldJob]  # running jobs whose worker_id is this worker, in arrival order


@dataclass(frozen=True, slots=True)
class Overview:
    generated_at: datetime
    window_s: int
    counts: dict[JobStatus, int]  # every status present, 0 when none
    queue_depth: int  # queued, due now and not waiting on parents
    scheduled: int  # queued with run_at in the future
    oldest_queued_age_s: float | None  # of the due queued jobs
    # Over jobs first started within the window: first start minus when it became due.
    pickup_p50_ms: float | None
    pickup_p95_ms: float | None
    buckets: list[ThroughputBucket]  # the window in equal slices, oldest first
    workers: list[LiveWorker]  # newest heartbeat first


async def get_overview(ctx: Context, data: Any) -> Overview:
    ctx.principal.require(Scope.JOBS_READ)
    query = parse_input(OverviewInput, data)
    lease_s = ctx.settings.lease_s
    return await ctx.db.read(lambda session: read_overview(session, query, lease_s, utcnow()))


def read_overview(session: Session, query: OverviewInput, lease_s: int, now: datetime) -> Overview:
    """The overview as of `now`, in one read transaction."""
    since = now - timedelta(seconds=query.window_s)
    depth, scheduled, oldest_due = _queue_figures(session, now)
    p50, p95 = _pickup_percentiles(session, since, now, (0.5, 0.95))
    return Overview(
        generated_at=now,
        window_s=query.window_s,
        counts=jobs_by_state(session),
        queue_depth=depth,
        scheduled=scheduled,
        oldest_queued_age_s=None if oldest_due is None else max(0.0, (now - oldest_due).total_seconds()),
        pickup_p50_ms=p50,
        pickup_p95_ms=p95,
        buckets=_throughput(session, since, now, query.buckets),
        workers=_live_workers(session, lease_s, now),
    )


def _due_at() -> ColumnElement[Any]:
    """When a job became due: its `run_at`, or its submission if that came later (a `run_at` in the
    past is moved to the submission at intake, so this is `run_at` for nearly every job)."""
    c = JOBS.c
    return case((c.run_at > c.created_at, c.run_at), else_=c.created_at)


def _queue_figures(session: Session, now: datetime) -> tuple[int, int, datetime | None]:
    """(due and claimable-by-dependencies queued jobs, queued jobs scheduled later, when the longest
    waiting due job became due), in one pass over the queued jobs."""
    c = JOBS.c
    due = and_(c.run_at <= now, c.waiting_on == 0)
    statement = select(
        func.coalesce(func.sum(case((due, 1), else_=0)), 0),
        func.coalesce(func.sum(case((c.run_at > now, 1), else_=0)), 0),
        type_coerce(func.min(case((due, _due_at()), else_=None)), UtcDateTime()),
    ).where(c.status == JobStatus.QUEUED.value)
    depth, scheduled, oldest = session.execute(statement).one()
    return int(depth), int(scheduled), oldest


def _epoch_s(session: Session, column: ColumnElement[Any]) -> ColumnElement[float]:
    """Seconds since the Unix epoch of a timestamp column, to the microsecond, in the dialect's own
    SQL. SQLite keeps naive-UTC text (`2026-12-07 10:00:00.123456`) and its date functions round to
    the millisecond, so the whole seconds come from `strftime('%s')` and the fraction from the text."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", column), Float)
    whole = cast(func.strftime("%s", column), Integer)
    return cast(whole + cast(func.substr(column, SQLITE_FRACTION_AT), Float), Float)


def _pickup_percentiles(
    session: Session, since: datetime, now: datetime, fractions: tuple[float, ...]
) -> list[float | None]:
    """Percentiles (linear between the closest ranks, as PostgreSQL's percentile_cont) of each job's
    pickup latency in ms, over the jobs first started within the window. A job whose `run_at` a retry
    moved past its first start no longer records when that start was due, so it is left out."""
    c = JOBS.c
    due = _due_at()
    latency_ms = ((_epoch_s(session, c.started_at) - _epoch_s(session, due)) * 1000).label("latency_ms")
    started = and_(c.started_at >= since, c.started_at <= now, due <= c.started_at)
    count = session.execute(select(func.count()).select_from(JOBS).where(started)).scalar_one()
    if not count:
        return [None for _ in fractions]
    ordered = select(latency_ms).where(started).order_by(latency_ms)
    found: list[float | None] = []
    for fraction in fractions:
        rank = fraction * (count - 1)
        low = math.floor(rank)
        values = [float(v) for v in session.execute(ordered.offset(low).limit(2)).scalars()]
        upper = values[1] if len(values) > 1 else values[0]
        found.append(round(values[0] + (rank - low) * (upper - values[0]), 3))
    return found


def _throughput(session: Session, since: datetime, now: datetime, count: int) -> list[ThroughputBucket]:
    """Jobs that finished in each of `count` equal slices of [since, now), by outcome. The slice of a
    finish is found by comparing timestamps with the slices' bounds, which both dialects do exactly."""
    c = JOBS.c
    width = (now - since) / count
    bounds = [since + width * index for index in range(count)] + [now]
    inner = bounds[1:-1]
    slice_of: ColumnElement[Any] = (
        case(*((c.finished_at < bound, index) for index, bound in enumerate(inner)), else_=count - 1)
        if inner
        else literal(0)
    )
    # Grouped outside: PostgreSQL matches a GROUP BY to a selected expression only without parameters.
    finished = (
        select(slice_of.label("slice"), c.status.label("status"))
        .where(
            c.finished_at >= since,
            c.finished_at < now,
            c.status.in_([status.value for status in TERMINAL_STATUSES]),
        )
        .subquery()
    )
    statement = select(finished.c.slice, finished.c.status, func.count()).group_by(
        finished.c.slice, finished.c.status
    )
    tallies = [dict.fromkeys(("succeeded", "failed", "cancelled"), 0) for _ in range(count)]
    for index, status, number in session.execute(statement):
        tallies[int(index)][status] = int(number)
    return [
        ThroughputBucket(start=bounds[index], end=bounds[index + 1], **tallies[index])
        for index in range(count)
    ]


def _live_workers(session: Session, lease_s: int, now: datetime) -> list[LiveWorker]:
    """Live workers (as ops health counts them), newest heartbeat first, each with its running jobs."""
    w = WORKERS.c
    workers = session.execute(
        select(w.id, w.workflows, w.started_at, w.last_seen_at)
        .where(live_worker_condition(lease_s, now))
        .order_by(w.last_seen_at.desc(), w.id)
    ).all()
    if not workers:
        return []
    c = JOBS.c
    held: dict[str, list[HeldJob]] = {row.id: [] for row in workers}
    running = session.execute(
        select(c.id, c.workflow, c.attempts, c.started_at, c.lease_expires_at, c.progress, c.worker_id)
        .where(c.status == JobStatus.RUNNING.value, c.worker_id.in_(list(held)))
        .order_by(c.seq)
    )
    for job in running:
        held[job.worker_id].append(
            HeldJob(
                id=job.id,
                workflow=job.workflow,
                attempt=job.attempts,
                started_at=job.started_at,
                lease_expires_at=job.lease_expires_at,
                progress=job.progress,
            )
        )
    return [
        LiveWorker(
            id=row.id,
            workflows=list(row.workflows or []),
            started_at=row.started_at,
            last_seen_at=row.last_seen_at,
            jobs=held[row.id],
        )
        for row in workers
    ]
