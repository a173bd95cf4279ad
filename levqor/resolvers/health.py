"""Health and the public metrics, computed from the database."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime

from sqlalchemy import ColumnElement, and_, func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from levqor.db.engine import Database
from levqor.db.models import Job, JobEvent, JobStatus, UptimeSample, Worker
from levqor.db.types import utcnow
from levqor.resolvers.context import Context

logger = logging.getLogger(__name__)

PUBLIC_METRICS_TTL_S = 10.0
ROLLING_WINDOW = timedelta(days=7)
SECONDS_PER_MINUTE = 60
# A live worker heartbeats every third of a lease (CONTRACT.md §7); one silent for three whole leases
# has stopped or lost its connection, so ops health stops counting it.
LIVE_WORKER_LEASES = 3


@dataclass(frozen=True, slots=True)
class PublicMetrics:
    uptime_rolling_7d: float
    jobs_today: int
    audit_coverage: float
    last_updated: int


@dataclass(frozen=True, slots=True)
class OpsHealth:
    ok: bool
    ts: int
    db: bool
    queue_depth: int | None
    workers: int | None


def now_ts() -> int:
    return int(time.time())


def record_uptime_sample(db: Database) -> None:
    """Mark the current minute as up; several processes may mark the same minute."""
    minute = now_ts() // SECONDS_PER_MINUTE
    insert = pg_insert if db.dialect == "postgresql" else sqlite_insert

    def run(session: Session) -> None:
        statement = insert(UptimeSample).values(minute=minute).on_conflict_do_nothing()
        session.execute(statement)

    db.write_sync(run)


def _uptime_percent(session: Session, now_minute: int) -> float:
    window_start = now_minute - int(ROLLING_WINDOW.total_seconds()) // SECONDS_PER_MINUTE + 1
    first, count = session.exec(
        select(func.min(UptimeSample.minute), func.count()).where(col(UptimeSample.minute) >= window_start)
    ).one()
    if not count:
        return 100.0
    observed = now_minute - max(first, window_start) + 1
    return round(min(100.0, 100.0 * count / observed), 2)


def _audit_coverage(session: Session, since: datetime) -> float:
    """Share of recent jobs whose newest event records the state the job is in."""
    last_event = (
        select(func.max(JobEvent.id))
        .where(col(JobEvent.job_id) == col(Job.id))
        .correlate(Job)
        .scalar_subquery()
    )
    matched = (
        select(func.count())
        .select_from(Job)
        .join(JobEvent, col(JobEvent.id) == last_event)
        .where(col(Job.created_at) >= since, col(JobEvent.to_status) == col(Job.status))
    )
    total = session.exec(select(func.count()).select_from(Job).where(col(Job.created_at) >= since)).one()
    if not total:
        return 100.0
    return round(100.0 * session.exec(matched).one() / total, 2)


class PublicMetricsCache:
    """Public metrics recomputed at most every `ttl_s` seconds (CONTRACT.md §2: cache ≤ 10 s).

    `clock` is a monotonic clock in seconds; tests pass their own to step time without sleeping."""

    def __init__(
        self, ttl_s: float = PUBLIC_METRICS_TTL_S, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl_s = ttl_s
        self._clock = clock
        self._value: PublicMetrics | None = None
        self._expires = 0.0

    async def get(self, ctx: Context) -> PublicMetrics:
        if self._value is None or self._clock() >= self._expires:
            self._value = await ctx.db.read(_compute_public_metrics)
            self._expires = self._clock() + self.ttl_s
        return self._value


def _compute_public_metrics(session: Session) -> PublicMetrics:
    now = utcnow()
    midnight = datetime.combine(now.date(), dtime.min, tzinfo=now.tzinfo)
    jobs_today = session.exec(
        select(func.count()).select_from(Job).where(col(Job.created_at) >= midnight)
    ).one()
    return PublicMetrics(
        uptime_rolling_7d=_uptime_percent(session, int(now.timestamp()) // SECONDS_PER_MINUTE),
        jobs_today=jobs_today,
        audit_coverage=_audit_coverage(session, now - ROLLING_WINDOW),
        last_updated=int(now.timestamp()),
    )


def queue_depth(session: Session) -> int:
    """Jobs waiting to run (including scheduled ones)."""
    statement = select(func.count()).select_from(Job).where(col(Job.status) == JobStatus.QUEUED.value)
    return session.exec(statement).one()


def live_worker_condition(lease_s: int, now: datetime) -> ColumnElement[bool]:
    """A worker that has not stopped and heartbeated within `LIVE_WORKER_LEASES` leases."""
    since = now - timedelta(seconds=LIVE_WORKER_LEASES * lease_s)
    return and_(col(Worker.stopped_at).is_(None), col(Worker.last_seen_at) >= since)


def live_workers(session: Session, lease_s: int) -> int:
    """How many workers are live (`live_worker_condition`)."""
    statement = select(func.count()).select_from(Worker).where(live_worker_condition(lease_s, utcnow()))
    return session.exec(statement).one()


def jobs_by_state(session: Session) -> dict[JobStatus, int]:
    """The number of jobs in each state, every state present."""
    rows = session.exec(select(Job.status, func.count()).group_by(col(Job.status))).all()
    counts = dict.fromkeys(JobStatus, 0)
    for status, count in rows:
        counts[JobStatus(status)] = count
    return counts


async def ops_health(ctx: Context) -> OpsHealth:
    """The seed's `{ok, ts}` plus a database round-trip, the queue depth and the live workers.

    A database that cannot answer is a report (`ok: false`), not an error: this is what operators
    look at when something is wrong."""
    ctx.principal.require_key()  # the seed protects it with a key; any scope will do
    lease_s = ctx.settings.lease_s

    def run(session: Session) -> tuple[int, int]:
        return queue_depth(session), live_workers(session, lease_s)

    try:
        depth, workers = await ctx.db.read(run)
    except SQLAlchemyError:
        logger.warning("ops health: the database did not answer", exc_info=True)
        return OpsHealth(ok=False, ts=now_ts(), db=False, queue_depth=None, workers=None)
    return OpsHealth(ok=True, ts=now_ts(), db=True, queue_depth=depth, workers=workers)
