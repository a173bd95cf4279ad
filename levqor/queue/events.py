"""State changes of a job, each written with its event in the caller's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlmodel import Session

from levqor.db.models import Job, JobEvent, JobStatus
from levqor.db.types import utcnow


def record_event(
    session: Session,
    job: Job,
    type_: str,
    *,
    from_status: str | None,
    at: datetime,
    detail: dict[str, Any] | None = None,
) -> JobEvent:
    event = JobEvent(
        job_id=job.id,
        at=at,
        type=type_,
        from_status=from_status,
        to_status=job.status,
        attempt=job.attempts,
        worker_id=job.worker_id,
        detail=detail,
    )
    session.add(event)
    return event


def enqueue(session: Session, job: Job) -> Job:
    """Insert a new queued job and its `submitted` event."""
    now = utcnow()
    job.status = JobStatus.QUEUED.value
    job.created_at = job.updated_at = now
    if job.run_at is None or job.run_at < now:
        job.run_at = now
    session.add(job)
    session.flush()  # the event references jobs.id
    record_event(session, job, "submitted", from_status=None, at=now)
    return job


def finish(
    session: Session,
    job: Job,
    status: JobStatus,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    type_: str | None = None,
    detail: dict[str, Any] | None = None,
) -> Job:
    """Move a job to a terminal state, releasing its lease."""
    if not status.is_terminal:
        raise ValueError(f"{status} is not a terminal status")
    now = utcnow()
    previous = job.status
    job.status = status.value
    job.result = result
    job.error = error
    job.lease_expires_at = None
    job.finished_at = now
    job.updated_at = now
    session.add(job)
    record_event(session, job, type_ or status.value, from_status=previous, at=now, detail=detail)
    return job
