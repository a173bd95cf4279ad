"""The overview the dashboard opens on: jobs by state, the queue, pickup latency, throughput over a
window, and the live workers with the jobs they hold (issue 14, item 1)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import (
    ColumnElement,
    Float,
    Table,
    and_,
    case,
    cast,
    func,
    literal,
    or_,
    select,
    type_coerce,
    union_all,
)
from sqlmodel import Session, SQLModel

from levqor.db.models import Job, JobStatus, Worker
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
SQLITE_SECONDS_END = 19  # `YYYY-MM-DD HH:MM:SS`, then `.ffffff`, in SQLite's stored timestamps
SECONDS_PER_DAY = 86_400


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
    p50, p95 = _pickup_percentiles(session, since, now, (50, 95))
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


def _seconds_between(session: Session, later: Any, earlier: Any) -> ColumnElement[float]:
    """`later - earlier` in seconds, to the microsecond, in the dialect's own SQL. SQLite keeps
    naive-UTC text (`2026-12-07 10:00:00.123456`) and its date functions round to the millisecond,
    so the whole seconds come from julianday() of the text up to the seconds, rounded (exact: the
    true value is a whole number), and the microseconds from the text after them."""
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.extract("epoch", later - earlier), Float)
    whole = func.round(
        (
            func.julianday(func.substr(later, 1, SQLITE_SECONDS_END))
            - func.julianday(func.substr(earlier, 1, SQLITE_SECONDS_END))
        )
        * SECONDS_PER_DAY
    )
    fraction = cast(func.substr(later, SQLITE_SECONDS_END + 1), Float) - cast(
        func.substr(earlier, SQLITE_SECONDS_END + 1), Float
    )
    return cast(whole + fraction, Float)


def _started_in(session: Session, since: datetime, now: datetime, *columns: Any) -> Any:
    """`columns` of the jobs first started in [since, now], read through indexes: a finished job
    (only those have `finished_at`) that started in the window finished in it too
    (ix_jobs_finished_at), and unfinished jobs are few (ix_jobs_status_seq). A job whose `run_at` a
    retry moved past its first start no longer records when that start was due, so it is left out."""
    c = JOBS.c
    started = and_(c.started_at >= since, c.started_at <= now, _due_at() <= c.started_at)
    unfinished = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
    return union_all(
        select(*columns).where(c.finished_at >= since, started),
        select(*columns).where(c.status.in_(unfinished), c.finished_at.is_(None), started),
    ).subquery()


def _pickup_percentiles(
    session: Session, since: datetime, now: datetime, percents: tuple[int, ...]
) -> list[float | None]:
    """Percentiles (linear between the closest ranks, as PostgreSQL's percentile_cont) of the
    pickup latency in ms of the jobs first started within the window, in one sort: each percentile
    needs the values at two ranks, picked with integer arithmetic both dialects do alike."""
    c = JOBS.c
    latency_ms = _seconds_between(session, c.started_at, _due_at()) * 1000
    rows = _started_in(session, since, now, latency_ms.label("ms"))
    ranked = select(
        rows.c.ms,
        func.row_number().over(order_by=rows.c.ms).label("rank"),
        func.count().over().label("n"),
    ).subquery()
    # The 1-based ranks around each percentile: (n - 1) * percent / 100, rounded down, plus 1 and 2.
    low = [(ranked.c.n - 1) * percent // 100 + 1 for percent in percents]
    wanted = or_(*(ranked.c.rank.in_([rank, rank + 1]) for rank in low))
    found = session.execute(select(ranked.c.rank, ranked.c.n, ranked.c.ms).where(wanted)).all()
    if not found:
        return [None for _ in percents]
    count = int(found[0].n)
    value_at = {int(row.rank): float(row.ms) for row in found}
    percentiles: list[float | None] = []
    for percent in percents:
        below, remainder = divmod((count - 1) * percent, 100)
        lower = value_at[below + 1]
        upper = value_at.get(below + 2, lower)
        percentiles.append(round(lower + remainder / 100 * (upper - lower), 3))
    return percentiles


def _slice_of(finished_at: Any, bounds: list[datetime], first: int, last: int) -> ColumnElement[Any]:
    """The index in [first, last] of the slice a finish falls in, found by halving the slices, so
    each finish costs about log2(slices) comparisons of timestamps, which both dialects do exactly;
    `bounds[i]` is where slice i ends."""
    if first == last:
        return literal(first)
    middle = (first + last) // 2
    return case(
        (finished_at < bounds[middle], _slice_of(finished_at, bounds, first, middle)),
        else_=_slice_of(finished_at, bounds, middle + 1, last),
    )


def _throughput(session: Session, since: datetime, now: datetime, count: int) -> list[ThroughputBucket]:
    """Jobs that finished in each of `count` equal slices of [since, now), by outcome."""
    c = JOBS.c
    width = (now - since) / count
    starts = [since + width * index for index in range(count)]
    ends = [*starts[1:], now]
    # Grouped outside: PostgreSQL matches a GROUP BY to a selected expression only without parameters.
    finished = (
        select(_slice_of(c.finished_at, ends, 0, count - 1).label("slice"), c.status.label("status"))
        .where(c.finished_at >= since, c.finished_at < now)  # finished jobs only: ix_jobs_finished_at
        .subquery()
    )
    statement = select(finished.c.slice, finished.c.status, func.count()).group_by(
        finished.c.slice, finished.c.status
    )
    tallies = [dict.fromkeys(("succeeded", "failed", "cancelled"), 0) for _ in range(count)]
    for index, status, number in session.execute(statement):
        if status in tallies[int(index)]:
            tallies[int(index)][status] = int(number)
    return [
        ThroughputBucket(start=starts[index], end=ends[index], **tallies[index]) for index in range(count)
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
