"""What a client may do to a job from outside: cancel it, retry it, or (in development) complete it.

Each reads the job under a row lock and checks the state machine before it writes, so a verb that
the state does not allow (`Conflict`) changes nothing.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlmodel import Session, col, select

from levqor.costs.ledger import hold_anew
from levqor.db.models import Job, JobStatus
from levqor.db.types import utcnow
from levqor.errors import Conflict, NotFound
from levqor.queue.events import finish, record_event
from levqor.queue.steps import EndedStep, check_retry, step_reopened, steps_finished
from levqor.queue.wakeup import mark_claimable


def _locked(session: Session, job_id: uuid.UUID) -> Job:
    statement = (
        select(Job).where(col(Job.id) == job_id).with_for_update().execution_options(populate_existing=True)
    )
    job = session.exec(statement).first()
    if job is None:
        raise NotFound(f"no job with id '{job_id}'")
    return job


def _acted_by(by: str | None) -> dict[str, Any] | None:
    """The event detail that names who asked (a principal id: `key:<id>`, `static:...`, `dev`)."""
    return {"by": by} if by is not None else None


def cancel(session: Session, job_id: uuid.UUID, *, by: str | None = None) -> Job:
    """Queued (or scheduled): cancelled at once. Running: `cancel_requested` is set and the worker
    stops the attempt when its next heartbeat says so; asking again changes nothing. Finished: Conflict.
    `by` (the caller's principal id) is recorded on the event."""
    job = _locked(session, job_id)
    status = job.job_status
    if status is JobStatus.QUEUED:
        return _finish_step(
            session,
            job,
            JobStatus.CANCELLED,
            error={"type": "cancelled"},
            type_="cancelled",
            detail=_acted_by(by),
        )
    if status is JobStatus.RUNNING:
        if not job.cancel_requested:
            now = utcnow()
            job.cancel_requested = True
            job.updated_at = now
            session.add(job)
            record_event(
                session, job, "cancel_requested", from_status=job.status, at=now, detail=_acted_by(by)
            )
        return job
    raise Conflict(f"job is already {job.status}; only queued or running jobs can be cancelled")


def retry(session: Session, job_id: uuid.UUID, *, by: str | None = None) -> Job:
    """A failed or cancelled job goes back to `queued` to run now, with its attempt count reset, so it
    gets `max_attempts` fresh tries; its earlier attempts stay in the event log. Otherwise Conflict.
    Its budgets hold its estimate anew (`BudgetExceeded` when they have no room now). `by` (the
    caller's principal id) is recorded on the event."""
    job = _locked(session, job_id)
    if job.job_status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise Conflict(f"job is {job.status}; only failed or cancelled jobs can be retried")
    # A step waits for its parents again, if any has not finished; one whose failure cancelled it
    # keeps it cancelled (Conflict: retry that one).
    waiting = check_retry(session, job) if job.run_id is not None else 0
    now = utcnow()
    job.reserved_micros = hold_anew(session, job, now)
    previous = job.status
    job.status = JobStatus.QUEUED.value
    job.attempts = 0
    job.run_at = now
    job.cancel_requested = False
    job.lease_expires_at = None
    job.result = None
    job.error = None
    job.finished_at = None
    job.waiting_on = waiting
    job.updated_at = now
    session.add(job)
    record_event(session, job, "retried", from_status=previous, at=now, detail=_acted_by(by))
    mark_claimable(session)
    if job.run_id is not None:
        session.flush()
        step_reopened(session, job, previous, now)
    return job


def force_complete(session: Session, job_id: uuid.UUID, result: dict[str, Any]) -> Job:
    """The seed's development completion: a queued or running job succeeds with `result`. A worker
    still running it loses its lease (its own report then gets Conflict)."""
    job = _locked(session, job_id)
    if job.job_status.is_terminal:
        raise Conflict(f"job is already {job.status}")
    return _finish_step(session, job, JobStatus.SUCCEEDED, result=result, type_="dev_completed")


def _finish_step(session: Session, job: Job, status: JobStatus, **outcome: Any) -> Job:
    """`events.finish`, and for a step of a run, what its end does to the rest of the run."""
    finish(session, job, status, **outcome)
    if job.run_id is not None:
        session.flush()
        steps_finished(session, [EndedStep(job.id, job.run_id, job.step_key or "", job.status)], utcnow())
    return job
