"""Leases: heartbeats extend them; the reaper takes back the ones that ran out.

A lease is the promise that one `(worker_id, attempt)` owns a running job until `lease_expires_at`.
Workers heartbeat every lease/3; a worker that died stops heartbeating, and any worker's reaper then
returns the job to `queued` (after a backoff) or fails it once its attempts are used up.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, select, tuple_, update
from sqlmodel import Session

from levqor.callbacks.outbox import write_deliveries_for
from levqor.costs.ledger import settle
from levqor.db.bulk import BulkStatement
from levqor.db.models import JobStatus
from levqor.db.types import utcnow
from levqor.errors import Conflict
from levqor.queue.claimable import JOBS
from levqor.queue.events import event_row, insert_events
from levqor.queue.outcomes import DEFAULT_BACKOFF, LEASE_LOST, RUNNING_COLUMNS, Backoff
from levqor.queue.steps import EndedStep, steps_finished
from levqor.queue.wakeup import mark_claimable

DEFAULT_REAP_LIMIT = 500

_SET_PROGRESS = BulkStatement(
    update(JOBS)
    .where(JOBS.c.id == bindparam("b_id", type_=JOBS.c.id.type))
    .values(progress=bindparam("b_progress", type_=JOBS.c.progress.type)),
    ("b_id", "b_progress"),
)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    lease_expires_at: datetime
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class Lease:
    job_id: uuid.UUID
    attempt: int


def heartbeat_many(
    session: Session,
    *,
    worker_id: str,
    leases: Sequence[Lease],
    lease_s: int,
    progress: Mapping[uuid.UUID, dict[str, Any]] | None = None,
    now: datetime | None = None,
) -> dict[uuid.UUID, Heartbeat]:
    """Extend every lease still held, in one statement. A job missing from the answer has lost its
    lease (taken back, cancelled, or finished by someone else): its worker must stop reporting on it.

    `progress` (by job id) is each job's latest report: for the jobs whose lease is held it becomes
    the job's `progress` and a `progress` event, in the same transaction."""
    if not leases:
        return {}
    now = now or utcnow()
    expires = now + timedelta(seconds=lease_s)
    c = JOBS.c
    statement = (
        update(JOBS)
        .where(
            c.status == JobStatus.RUNNING.value,
            c.worker_id == worker_id,
            tuple_(c.id, c.attempts).in_([(lease.job_id, lease.attempt) for lease in leases]),
        )
        .values(lease_expires_at=expires, updated_at=now)
        .returning(c.id, c.cancel_requested)
    )
    beats = {
        row.id: Heartbeat(lease_expires_at=expires, cancel_requested=row.cancel_requested)
        for row in session.execute(statement)
    }
    if progress:
        attempts = {lease.job_id: lease.attempt for lease in leases}
        reports = [(job_id, report) for job_id, report in progress.items() if job_id in beats]
        # The rows are this transaction's now (the UPDATE above locked them): no fence needed.
        _SET_PROGRESS.execute(session, [{"b_id": job_id, "b_progress": report} for job_id, report in reports])
        insert_events(
            session,
            [
                event_row(
                    job_id,
                    "progress",
                    from_status=JobStatus.RUNNING.value,
                    to_status=JobStatus.RUNNING.value,
                    attempt=attempts[job_id],
                    worker_id=worker_id,
                    at=now,
                    detail=report,
                )
                for job_id, report in reports
            ],
        )
    return beats


def heartbeat(
    session: Session,
    *,
    job_id: uuid.UUID,
    worker_id: str,
    attempt: int,
    lease_s: int,
    progress: dict[str, Any] | None = None,
) -> Heartbeat:
    """Extend one lease; `Conflict` when it is lost. Progress, when given, becomes the job's
    `progress` and goes to the event log."""
    beats = heartbeat_many(
        session,
        worker_id=worker_id,
        leases=[Lease(job_id, attempt)],
        lease_s=lease_s,
        progress=None if progress is None else {job_id: progress},
    )
    beat = beats.get(job_id)
    if beat is None:
        raise Conflict(LEASE_LOST)
    return beat


def reap_expired(
    session: Session,
    *,
    now: datetime | None = None,
    limit: int = DEFAULT_REAP_LIMIT,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> int:
    """Take back up to `limit` running jobs whose lease ran out: to `queued` after a backoff while
    attempts remain, else `failed`; to `cancelled` when cancellation had been requested. Each UPDATE
    re-checks that the job is still running the same attempt on an expired lease, so a heartbeat or
    completion that got in first wins. Returns how many jobs were taken back."""
    now = now or utcnow()
    c = JOBS.c
    candidates = (
        select(*RUNNING_COLUMNS)
        .where(c.status == JobStatus.RUNNING.value, c.lease_expires_at < now)
        .order_by(c.lease_expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    taken = 0
    requeued = False
    events: list[dict[str, Any]] = []
    called_back: list[uuid.UUID] = []
    held: list[uuid.UUID] = []
    stepped: list[EndedStep] = []
    for row in session.execute(candidates).all():
        status, values, event_type, detail = _after_expiry(row, backoff, now)
        applied = session.execute(
            update(JOBS)
            .where(
                c.seq == row.seq,
                c.status == JobStatus.RUNNING.value,
                c.attempts == row.attempts,
                c.lease_expires_at < now,
            )
            .values(status=status.value, lease_expires_at=None, updated_at=now, **values)
            .returning(c.seq)
        ).first()
        if applied is None:
            continue
        taken += 1
        requeued = requeued or status is JobStatus.QUEUED
        if status.is_terminal and row.callback_url is not None:
            called_back.append(row.id)
        if status.is_terminal and row.reserved_micros is not None:
            held.append(row.id)
        if status.is_terminal and row.run_id is not None:
            stepped.append(EndedStep(row.id, row.run_id, row.step_key, status.value))
        events.append(
            event_row(
                row.id,
                event_type,
                from_status=JobStatus.RUNNING.value,
                to_status=status.value,
                attempt=row.attempts,
                worker_id=row.worker_id,
                at=now,
                detail=detail,
            )
        )
    insert_events(session, events)
    settle(session, held, now)
    write_deliveries_for(session, called_back, now)
    steps_finished(session, stepped, now)
    if requeued:
        mark_claimable(session)
    return taken


def _after_expiry(
    row: Any, backoff: Backoff, now: datetime
) -> tuple[JobStatus, dict[str, Any], str, dict[str, Any]]:
    error = {
        "type": "lease_expired",
        "message": "the worker stopped heartbeating",
        "worker_id": row.worker_id,
    }
    if row.cancel_requested:
        return (
            JobStatus.CANCELLED,
            {"finished_at": now, "error": error},
            "cancelled",
            {"reason": "lease expired"},
        )
    if row.attempts >= row.max_attempts:
        values = {"finished_at": now, "error": error}
        return JobStatus.FAILED, values, "lease_expired", {"reason": "attempts exhausted"}
    run_at = now + timedelta(seconds=backoff.delay_s(row.attempts))
    # The job keeps the last attempt's error while it waits for the next one.
    values = {"run_at": run_at, "error": error}
    return JobStatus.QUEUED, values, "lease_expired", {"run_at": run_at.isoformat()}
