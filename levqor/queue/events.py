"""State changes of a job, each written with its event in the caller's transaction."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import CTE, ColumnElement, Insert, Table, insert, literal, select
from sqlmodel import Session, SQLModel

from levqor.callbacks.outbox import write_deliveries
from levqor.costs.ledger import settle
from levqor.db.bulk import BulkInsert
from levqor.db.models import Job, JobEvent, JobStatus
from levqor.db.types import utcnow
from levqor.queue.job_event_notices import mark_job_events
from levqor.queue.wakeup import mark_claimable

JOB_EVENTS: Table = SQLModel.metadata.tables[JobEvent.__tablename__]


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
    mark_job_events(session)
    return event


def event_row(
    job_id: uuid.UUID,
    type_: str,
    *,
    from_status: str | None,
    to_status: str,
    attempt: int,
    worker_id: str | None,
    at: datetime,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One `job_events` row for `insert_events` (the hot paths write events in bulk)."""
    return {
        "job_id": job_id,
        "at": at,
        "type": type_,
        "from_status": from_status,
        "to_status": to_status,
        "attempt": attempt,
        "worker_id": worker_id,
        "detail": detail,
    }


EVENT_COLUMNS = tuple(column.name for column in JOB_EVENTS.columns if column.name != "id")
# One short INSERT sent as an executemany (a pipeline on PostgreSQL, sqlite3's own loop on SQLite),
# with the values a batch shares bound once: cheaper than multi-row VALUES, whose text is new for
# every batch size and costs the driver a parse each time.
_INSERT_EVENTS = BulkInsert(JOB_EVENTS, EVENT_COLUMNS)


def events_of_changed(
    changed: CTE,
    type_: str,
    *,
    from_status: str,
    to_status: str,
    at: datetime,
    worker_id: ColumnElement[Any] | str,
) -> Insert:
    """One event per row of `changed`, a data-modifying CTE that returns the changed jobs' `id` and
    `attempts`: for a statement that changes jobs and logs them at once (PostgreSQL). The caller
    marks its transaction (`mark_job_events`) when the statement changed any job."""
    worker = literal(worker_id) if isinstance(worker_id, str) else worker_id
    values = select(
        changed.c.id,
        literal(at, JOB_EVENTS.c.at.type),
        literal(type_),
        literal(from_status),
        literal(to_status),
        changed.c.attempts,
        worker,
    )
    columns = ["job_id", "at", "type", "from_status", "to_status", "attempt", "worker_id"]
    return insert(JOB_EVENTS).from_select(columns, values)


def insert_events(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `event_row`s."""
    if rows:
        _INSERT_EVENTS.execute(session, rows)
        mark_job_events(session)


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
    mark_claimable(session)
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
    """Move a job to a terminal state, releasing its lease, and queue its callback if it has one."""
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
    if job.reserved_micros is not None:
        settle(session, [job.id], now)
    write_deliveries(session, [job], now)
    return job
