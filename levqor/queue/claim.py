"""Claiming a batch of jobs in one statement, the way the database-backed queues do it.

PostgreSQL: the candidates are picked in a MATERIALIZED CTE with `FOR UPDATE SKIP LOCKED`, walking the
partial index `ix_jobs_claimable` in claim order, so concurrent claimers skip each other's rows
instead of waiting; the CTE is materialised so the planner cannot re-run the locking select per row.
SQLite: `UPDATE ... WHERE seq IN (SELECT ... LIMIT n) RETURNING` inside the IMMEDIATE transaction
that `Database.write` opens, so claimers are serialised by the database lock.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlmodel import Session

from levqor.db.models import JobStatus
from levqor.db.types import utcnow
from levqor.queue.events import JOBS, event_row, insert_events

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


def _candidates(workflows: Sequence[str] | None, max_jobs: int, now: datetime) -> Select[Any]:
    c = JOBS.c
    statement = select(c.seq).where(c.status == JobStatus.QUEUED.value, c.run_at <= now)
    if workflows is not None:
        statement = statement.where(c.workflow.in_(list(workflows)))
    return statement.order_by(c.priority, c.run_at, c.seq).limit(max_jobs)


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
    picked = _candidates(workflows, max_jobs, now)
    if session.get_bind().dialect.name == "postgresql":
        cte = picked.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        where = c.seq == cte.c.seq
    else:
        where = c.seq.in_(picked.scalar_subquery())
    statement = (
        update(JOBS)
        .where(where)
        .values(
            status=JobStatus.RUNNING.value,
            attempts=c.attempts + 1,
            worker_id=worker_id,
            lease_expires_at=lease_expires_at,
            cancel_requested=False,
            started_at=func.coalesce(c.started_at, now),
            updated_at=now,
        )
        .returning(c.id, c.attempts, c.workflow, c.payload, c.timeout_s, c.priority, c.run_at, c.seq)
    )
    rows = sorted(session.execute(statement).all(), key=lambda row: (row.priority, row.run_at, row.seq))
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
    return [
        ClaimedJob(
            id=row.id,
            attempt=row.attempts,
            workflow=row.workflow,
            payload=row.payload,
            lease_expires_at=lease_expires_at,
            timeout_s=row.timeout_s,
        )
        for row in rows
    ]
