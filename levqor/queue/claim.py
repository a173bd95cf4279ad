"""Claiming a batch of jobs in one statement, the way the database-backed queues do it.

PostgreSQL: the candidates are picked in a MATERIALIZED CTE with `FOR UPDATE SKIP LOCKED`, walking the
partial index `ix_jobs_claimable` in claim order, so concurrent claimers skip each other's rows
instead of waiting; the CTE is materialised so the planner cannot re-run the locking select per row.
The claimed rows' events are written by the same statement, from data-modifying CTEs.
SQLite: `UPDATE ... WHERE seq IN (SELECT ... LIMIT n) RETURNING` inside the IMMEDIATE transaction
that `Database.write` opens, so claimers are serialised by the database lock; the events follow in a
second statement.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Select, TextClause, bindparam, func, select, text, update
from sqlmodel import Session

from levqor.db.models import CLAIMABLE_WHERE, JobStatus
from levqor.db.types import utcnow
from levqor.queue.claimable import JOBS, claimable
from levqor.queue.events import event_row, events_of_changed, insert_events
from levqor.queue.job_event_notices import mark_job_events

CLAIMED_EVENT = "claimed"
MAX_CLAIM_BATCH = 1000


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """One attempt of a job, leased to the worker that claimed it."""

    id: uuid.UUID
    attempt: int
    workflow: str
    payload: dict[str, Any]
    lease_expires_at: datetime
    timeout_s: int | None
    # The job's cost estimate, its budget hold, and what its earlier attempts cost (micro-USD).
    cost_estimate_micros: int | None = None
    reserved_micros: int | None = None
    spent_before_micros: int = 0


def _candidates(workflows: Sequence[str] | None, max_jobs: int, now: datetime) -> Select[Any]:
    c = JOBS.c
    statement = select(c.seq).where(claimable(workflows, now))
    return statement.order_by(c.priority, c.run_at, c.seq).limit(max_jobs)


# SQLite, without statistics, takes `ix_jobs_status_seq` (status = 'queued') and sorts every queued
# job on each claim; `INDEXED BY` walks the claim index in claim order instead (6.6 ms for a batch of
# 50 out of 20,000 queued jobs, against 0.8 ms).
_SQLITE_CANDIDATES = (
    "SELECT seq FROM jobs INDEXED BY ix_jobs_claimable WHERE {claimable} AND run_at <= :now{workflows}"
    " ORDER BY priority, run_at, seq LIMIT :max_jobs"
)


@functools.cache
def _sqlite_candidates(any_workflow: bool) -> TextClause:
    workflows = "" if any_workflow else " AND workflow IN :workflows"
    sql = _SQLITE_CANDIDATES.format(claimable=CLAIMABLE_WHERE, workflows=workflows)
    params = [bindparam("now", type_=JOBS.c.run_at.type)]
    if not any_workflow:
        params.append(bindparam("workflows", expanding=True))
    return text(sql).bindparams(*params)


def _claim_with_events(
    session: Session,
    picked: Select[Any],
    values: dict[str, Any],
    returned: tuple[Any, ...],
    *,
    worker_id: str,
    now: datetime,
) -> Sequence[Any]:
    """PostgreSQL: the claim and its events in one statement (data-modifying CTEs), so a batch costs
    one round trip and the events are built by the server from the claimed rows."""
    c = JOBS.c
    locked = picked.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
    claimed = update(JOBS).where(c.seq == locked.c.seq).values(values).returning(*returned).cte("claimed")
    logged = events_of_changed(
        claimed,
        CLAIMED_EVENT,
        from_status=JobStatus.QUEUED.value,
        to_status=JobStatus.RUNNING.value,
        at=now,
        worker_id=worker_id,
    )
    rows = session.execute(select(claimed).add_cte(logged.cte("logged"))).all()
    if rows:
        mark_job_events(session)
    return rows


def claim_jobs(
    session: Session,
    *,
    worker_id: str,
    workflows: Sequence[str] | None,
    max_jobs: int,
    lease_s: int,
    now: datetime | None = None,
) -> list[ClaimedJob]:
    """Claim up to `max_jobs` queued jobs whose `run_at` has come, in priority, then `run_at`, then
    arrival order; each starts a new attempt leased to `worker_id` for `lease_s` seconds.
    `workflows=None` claims any workflow; an empty list claims nothing."""
    if max_jobs < 1 or (workflows is not None and not workflows):
        return []
    max_jobs = min(max_jobs, MAX_CLAIM_BATCH)
    now = now or utcnow()
    lease_expires_at = now + timedelta(seconds=lease_s)
    c = JOBS.c
    values = {
        "status": JobStatus.RUNNING.value,
        "attempts": c.attempts + 1,
        "worker_id": worker_id,
        "lease_expires_at": lease_expires_at,
        "cancel_requested": False,
        "started_at": func.coalesce(c.started_at, now),
        "updated_at": now,
    }
    returned = (
        c.id,
        c.attempts,
        c.workflow,
        c.payload,
        c.timeout_s,
        c.priority,
        c.run_at,
        c.seq,
        c.cost_estimate_micros,
        c.reserved_micros,
        c.cost_actual_micros,
        c.settled_micros,
    )
    if session.get_bind().dialect.name == "postgresql":
        picked = _candidates(workflows, max_jobs, now)
        rows = _claim_with_events(session, picked, values, returned, worker_id=worker_id, now=now)
    else:
        candidates = _sqlite_candidates(workflows is None).columns(seq=BigInteger).scalar_subquery()
        statement = update(JOBS).where(c.seq.in_(candidates)).values(values).returning(*returned)
        params: dict[str, Any] = {"now": now, "max_jobs": max_jobs}
        if workflows is not None:
            params["workflows"] = list(workflows)
        rows = session.execute(statement, params).all()
        insert_events(
            session,
            [
                event_row(
                    row.id,
                    CLAIMED_EVENT,
                    from_status=JobStatus.QUEUED.value,
                    to_status=JobStatus.RUNNING.value,
                    attempt=row.attempts,
                    worker_id=worker_id,
                    at=now,
                )
                for row in rows
            ],
        )
    rows = sorted(rows, key=lambda row: (row.priority, row.run_at, row.seq))
    return [
        ClaimedJob(
            id=row.id,
            attempt=row.attempts,
            workflow=row.workflow,
            payload=row.payload,
            lease_expires_at=lease_expires_at,
            timeout_s=row.timeout_s,
            cost_estimate_micros=row.cost_estimate_micros,
            reserved_micros=row.reserved_micros,
            # Since its hold began: a retried job's earlier spending was settled already.
            spent_before_micros=(row.cost_actual_micros or 0) - (row.settled_micros or 0),
        )
        for row in rows
    ]
