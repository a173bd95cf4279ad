"""How an attempt ends: succeeded, failed (retried or final), cancelled, or handed back.

Every write is fenced by `(job_id, worker_id, attempt)` and `status = 'running'`: the rows are read
under a row lock (PostgreSQL `FOR UPDATE`; SQLite's IMMEDIATE transaction holds the whole database),
so the checks made in Python still hold when the updates run. A stale worker changes nothing: the single
functions raise `Conflict`, the batch function skips its items and says which ones it applied.
"""

from __future__ import annotations

import enum
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Integer,
    String,
    Uuid,
    bindparam,
    column,
    func,
    literal,
    literal_column,
    null,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Session, col

from levqor.callbacks.outbox import write_deliveries_for
from levqor.costs.ledger import settle
from levqor.db.bulk import BulkStatement
from levqor.db.models import Job, JobStatus
from levqor.db.types import utcnow
from levqor.errors import Conflict
from levqor.queue.claimable import JOBS
from levqor.queue.events import event_row, events_of_changed, insert_events
from levqor.queue.job_event_notices import mark_job_events
from levqor.queue.steps import EndedStep, steps_finished
from levqor.queue.wakeup import mark_claimable
from levqor.workflows.context import TokenUsage

DEFAULT_RETRY_BASE_S = 1.0
DEFAULT_RETRY_MAX_S = 3600.0
SUCCEEDED_EVENT = "succeeded"
LEASE_LOST = "lease lost: the job is no longer running under this worker and attempt"

_jitter = secrets.SystemRandom()


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with "equal jitter": attempt n waits between half and all of
    `min(max_s, base_s * 2**(n-1))`, so retries of jobs that failed together spread out."""

    base_s: float = DEFAULT_RETRY_BASE_S
    max_s: float = DEFAULT_RETRY_MAX_S

    def delay_s(self, attempt: int) -> float:
        ceiling = min(self.max_s, self.base_s * 2.0 ** max(0, attempt - 1))
        return ceiling / 2 + _jitter.uniform(0, ceiling / 2)


DEFAULT_BACKOFF = Backoff()


class OutcomeKind(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a worker reports for one attempt."""

    job_id: uuid.UUID
    worker_id: str
    attempt: int
    kind: OutcomeKind
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    retryable: bool = True
    retry_after_s: float | None = None
    # What this attempt cost (USD micro-dollars) and the tokens it used; both add to the job's totals.
    cost_micros: int | None = None
    usage: TokenUsage | None = None
    cost_estimated: bool = False  # some of `cost_micros` is an estimate

    def usage_values(self) -> dict[str, int | None]:
        usage = self.usage
        if usage is None:
            return dict.fromkeys(TOKEN_COLUMNS)
        return {name: getattr(usage, name) for name in TOKEN_COLUMNS}


# The job's token columns, each the sum over its attempts (named as `TokenUsage`'s fields).
TOKEN_COLUMNS = ("prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens")


def added(current: ColumnElement[Any], reported: ColumnElement[Any]) -> ColumnElement[Any]:
    """A total that grows by what an attempt reported: unchanged when it reported nothing, the
    report alone when the total was unset."""
    # `reported` appears once: an executemany binds each parameter once.
    return func.coalesce(func.coalesce(current, literal_column("0")) + reported, current)


# What deciding a running job's next state reads of it (here, and by the reaper).
RUNNING_COLUMNS = tuple(
    JOBS.c[name]
    for name in (
        "seq",
        "id",
        "attempts",
        "max_attempts",
        "worker_id",
        "cancel_requested",
        "callback_url",
        "reserved_micros",
        "run_id",
        "step_key",
    )
)


def _locked_running(session: Session, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Any]:
    c = JOBS.c
    statement = (
        select(*RUNNING_COLUMNS)
        .where(c.id.in_(list(job_ids)), c.status == JobStatus.RUNNING.value)
        .with_for_update()
    )
    return {row.id: row for row in session.execute(statement)}


# One statement for every kind of outcome, run as an executemany over the batch; columns an outcome
# does not set are passed as NULL and kept by COALESCE.
_APPLY_KEYS = (
    "b_seq",
    "b_status",
    "b_result",
    "b_error",
    "b_cost",
    "b_estimated",
    *(f"b_{name}" for name in TOKEN_COLUMNS),
    "b_run_at",
    "b_finished_at",
    "b_now",
)
_APPLY = (
    update(JOBS)
    .where(JOBS.c.seq == bindparam("b_seq"))
    .values(
        status=bindparam("b_status"),
        result=bindparam("b_result", type_=JOBS.c.result.type),
        error=bindparam("b_error", type_=JOBS.c.error.type),
        cost_actual_micros=added(
            JOBS.c.cost_actual_micros, bindparam("b_cost", type_=JOBS.c.cost_actual_micros.type)
        ),
        cost_estimated=JOBS.c.cost_estimated | bindparam("b_estimated", type_=Boolean),
        **{
            name: added(JOBS.c[name], bindparam(f"b_{name}", type_=JOBS.c[name].type))
            for name in TOKEN_COLUMNS
        },
        run_at=func.coalesce(bindparam("b_run_at", type_=JOBS.c.run_at.type), JOBS.c.run_at),
        finished_at=bindparam("b_finished_at", type_=JOBS.c.finished_at.type),
        lease_expires_at=null(),
        updated_at=bindparam("b_now", type_=JOBS.c.updated_at.type),
    )
)
_APPLY_MANY = BulkStatement(_APPLY, _APPLY_KEYS)


def record_outcomes(
    session: Session,
    outcomes: Sequence[Outcome],
    *,
    backoff: Backoff = DEFAULT_BACKOFF,
    now: datetime | None = None,
) -> list[uuid.UUID]:
    """Apply the outcomes whose lease is still held, with their events; return the ids of the jobs
    that changed, in the order given (the others were stale and are left alone; a job reported twice
    in one batch counts once, as its first report)."""
    if not outcomes:
        return []
    now = now or utcnow()
    first: dict[uuid.UUID, Outcome] = {}
    for outcome in outcomes:
        first.setdefault(outcome.job_id, outcome)
    unique = list(first.values())
    if session.get_bind().dialect.name == "postgresql":
        # Successes, nearly every outcome under load, need nothing read first: one fenced statement.
        successes = [outcome for outcome in unique if outcome.kind is OutcomeKind.SUCCEEDED]
        others = [outcome for outcome in unique if outcome.kind is not OutcomeKind.SUCCEEDED]
        changed = set(_succeed_with_events(session, successes, now)) if successes else set()
    else:
        others, changed = unique, set()
    if others:
        changed.update(_record_locked(session, others, backoff, now))
    return [outcome.job_id for outcome in unique if outcome.job_id in changed]


def _succeed_with_events(session: Session, successes: Sequence[Outcome], now: datetime) -> list[uuid.UUID]:
    """PostgreSQL: mark the attempts succeeded and write their events in one statement. The batch
    travels as one JSON array (`jsonb_to_recordset`); the fence is in the UPDATE's WHERE, which
    PostgreSQL re-checks on the newest row version when it had to wait for a lock, so a job that was
    taken back or finished meanwhile is not touched."""
    c = JOBS.c
    batch = [
        {
            "id": str(outcome.job_id),
            "worker_id": outcome.worker_id,
            "attempt": outcome.attempt,
            "result": outcome.result,
            "cost": outcome.cost_micros,
            "estimated": outcome.cost_estimated,
            **outcome.usage_values(),
        }
        for outcome in successes
    ]
    reported = (
        func.jsonb_to_recordset(literal(batch, JSONB))
        .table_valued(
            column("id", Uuid),
            column("worker_id", String),
            column("attempt", Integer),
            column("result", JSONB),
            column("cost", BigInteger),
            column("estimated", Boolean),
            *(column(name, BigInteger) for name in TOKEN_COLUMNS),
        )
        .render_derived(name="reported", with_types=True)
    )
    done = (
        update(JOBS)
        .where(
            c.id == reported.c.id,
            c.status == JobStatus.RUNNING.value,
            c.worker_id == reported.c.worker_id,
            c.attempts == reported.c.attempt,
        )
        .values(
            status=JobStatus.SUCCEEDED.value,
            result=reported.c.result,
            error=None,
            cost_actual_micros=added(c.cost_actual_micros, reported.c.cost),
            cost_estimated=c.cost_estimated | reported.c.estimated,
            **{name: added(c[name], reported.c[name]) for name in TOKEN_COLUMNS},
            finished_at=now,
            lease_expires_at=None,
            updated_at=now,
        )
        .returning(
            c.id,
            c.attempts,
            c.worker_id,
            c.callback_url.is_not(None).label("has_callback"),
            c.reserved_micros.is_not(None).label("has_hold"),
            c.run_id,
            c.step_key,
        )
        .cte("done")
    )
    logged = events_of_changed(
        done,
        SUCCEEDED_EVENT,
        from_status=JobStatus.RUNNING.value,
        to_status=JobStatus.SUCCEEDED.value,
        at=now,
        worker_id=done.c.worker_id,
    ).cte("logged")
    rows = session.execute(
        select(done.c.id, done.c.has_callback, done.c.has_hold, done.c.run_id, done.c.step_key).add_cte(
            logged
        )
    ).all()
    if rows:
        mark_job_events(session)
    # Budget holds settle to the actual cost, and only jobs that have one cost anything more.
    settle(session, [row.id for row in rows if row.has_hold], now)
    # The outbox rows, in this transaction: only jobs with a callback cost anything more.
    write_deliveries_for(session, [row.id for row in rows if row.has_callback], now)
    # Steps of runs release the steps that wait for them; only those cost anything more.
    steps_finished(
        session,
        [
            EndedStep(row.id, row.run_id, row.step_key, JobStatus.SUCCEEDED.value)
            for row in rows
            if row.run_id is not None
        ],
        now,
    )
    return [row.id for row in rows]


def _record_locked(
    session: Session, outcomes: Sequence[Outcome], backoff: Backoff, now: datetime
) -> list[uuid.UUID]:
    """Any outcome: the rows read under a lock first, since the next state depends on them (attempts
    left, a cancel request). Two statements plus the events."""
    rows = _locked_running(session, [outcome.job_id for outcome in outcomes])
    updates: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    applied: list[uuid.UUID] = []
    called_back: list[uuid.UUID] = []
    held: list[uuid.UUID] = []
    stepped: list[EndedStep] = []
    requeued = False
    for outcome in outcomes:
        row = rows.get(outcome.job_id)
        if row is None or row.worker_id != outcome.worker_id or row.attempts != outcome.attempt:
            continue
        status, run_at, finished_at, event_type, detail = _next_state(outcome, row, backoff, now)
        requeued = requeued or status is JobStatus.QUEUED
        updates.append(
            {
                "b_seq": row.seq,
                "b_status": status.value,
                "b_result": outcome.result if status is JobStatus.SUCCEEDED else None,
                "b_error": outcome.error if status is not JobStatus.SUCCEEDED else None,
                "b_cost": outcome.cost_micros,
                "b_estimated": outcome.cost_estimated,
                **{f"b_{name}": value for name, value in outcome.usage_values().items()},
                "b_run_at": run_at,
                "b_finished_at": finished_at,
                "b_now": now,
            }
        )
        events.append(
            event_row(
                row.id,
                event_type,
                from_status=JobStatus.RUNNING.value,
                to_status=status.value,
                attempt=row.attempts,
                worker_id=outcome.worker_id,
                at=now,
                detail=detail,
            )
        )
        applied.append(row.id)
        if status.is_terminal and row.callback_url is not None:
            called_back.append(row.id)
        if status.is_terminal and row.reserved_micros is not None:
            held.append(row.id)
        if status.is_terminal and row.run_id is not None:
            stepped.append(EndedStep(row.id, row.run_id, row.step_key, status.value))
    if updates:
        _APPLY_MANY.execute(session, updates)
        insert_events(session, events)
        settle(session, held, now)
        write_deliveries_for(session, called_back, now)
        steps_finished(session, stepped, now)
    if requeued:
        mark_claimable(session)
    return applied


def _next_state(
    outcome: Outcome, row: Any, backoff: Backoff, now: datetime
) -> tuple[JobStatus, datetime | None, datetime | None, str, dict[str, Any] | None]:
    """(status, run_at, finished_at, event type, event detail) after `outcome`."""
    if outcome.kind is OutcomeKind.SUCCEEDED:
        return JobStatus.SUCCEEDED, None, now, SUCCEEDED_EVENT, None
    if outcome.kind is OutcomeKind.CANCELLED or row.cancel_requested:
        # A job whose cancellation was asked for is not retried, whatever made it stop.
        return JobStatus.CANCELLED, None, now, "cancelled", None
    if not outcome.retryable or row.attempts >= row.max_attempts:
        reason = "not retryable" if not outcome.retryable else "attempts exhausted"
        return JobStatus.FAILED, None, now, "failed", {"reason": reason}
    delay_s = outcome.retry_after_s if outcome.retry_after_s is not None else backoff.delay_s(row.attempts)
    run_at = now + timedelta(seconds=max(0.0, delay_s))
    return JobStatus.QUEUED, run_at, None, "retry_scheduled", {"run_at": run_at.isoformat()}


def _load(session: Session, job_id: uuid.UUID) -> Job:
    statement = select(Job).where(col(Job.id) == job_id).execution_options(populate_existing=True)
    job: Job = session.execute(statement).scalar_one()
    return job


def _record_one(session: Session, outcome: Outcome, backoff: Backoff) -> Job:
    if not record_outcomes(session, [outcome], backoff=backoff):
        raise Conflict(LEASE_LOST)
    return _load(session, outcome.job_id)


def complete(
    session: Session,
    *,
    job_id: uuid.UUID,
    worker_id: str,
    attempt: int,
    result: dict[str, Any],
    cost_micros: int | None = None,
    usage: TokenUsage | None = None,
    cost_estimated: bool = False,
) -> Job:
    outcome = Outcome(
        job_id,
        worker_id,
        attempt,
        OutcomeKind.SUCCEEDED,
        result=result,
        cost_micros=cost_micros,
        usage=usage,
        cost_estimated=cost_estimated,
    )
    return _record_one(session, outcome, DEFAULT_BACKOFF)


def fail(
    session: Session,
    *,
    job_id: uuid.UUID,
    worker_id: str,
    attempt: int,
    error: dict[str, Any],
    retryable: bool = True,
    retry_after_s: float | None = None,
    cost_micros: int | None = None,
    usage: TokenUsage | None = None,
    cost_estimated: bool = False,
    backoff: Backoff = DEFAULT_BACKOFF,
) -> Job:
    """Fail an attempt: back to `queued` after a backoff (or `retry_after_s`) while attempts remain,
    `failed` once they are used up or at once with `retryable=False`; `cancelled` if cancellation
    was requested meanwhile."""
    outcome = Outcome(
        job_id,
        worker_id,
        attempt,
        OutcomeKind.FAILED,
        error=error,
        retryable=retryable,
        retry_after_s=retry_after_s,
        cost_micros=cost_micros,
        usage=usage,
        cost_estimated=cost_estimated,
    )
    return _record_one(session, outcome, backoff)


def cancelled(session: Session, *, job_id: uuid.UUID, worker_id: str, attempt: int) -> Job:
    """The worker stopped the attempt because cancellation was requested."""
    outcome = Outcome(job_id, worker_id, attempt, OutcomeKind.CANCELLED, error={"type": "cancelled"})
    return _record_one(session, outcome, DEFAULT_BACKOFF)


def complete_many(
    session: Session, items: Sequence[Outcome], *, backoff: Backoff = DEFAULT_BACKOFF
) -> list[uuid.UUID]:
    """Batch form of complete/fail/cancelled for workers with many results at once; returns the
    ids applied, in order (a stale item is skipped, it does not fail the batch)."""
    return record_outcomes(session, items, backoff=backoff)


def release(session: Session, *, job_id: uuid.UUID, worker_id: str, attempt: int) -> Job:
    """Hand a running job back to `queued` without spending the attempt (graceful shutdown): the
    attempt counter goes back down, so the next claim runs the same attempt number again."""
    now = utcnow()
    row = _locked_running(session, [job_id]).get(job_id)
    if row is None or row.worker_id != worker_id or row.attempts != attempt:
        raise Conflict(LEASE_LOST)
    if row.cancel_requested:
        return cancelled(session, job_id=job_id, worker_id=worker_id, attempt=attempt)
    session.execute(
        update(JOBS)
        .where(JOBS.c.seq == row.seq)
        .values(
            status=JobStatus.QUEUED.value,
            attempts=row.attempts - 1,
            lease_expires_at=None,
            run_at=now,
            updated_at=now,
        )
    )
    insert_events(
        session,
        [
            event_row(
                job_id,
                "released",
                from_status=JobStatus.RUNNING.value,
                to_status=JobStatus.QUEUED.value,
                attempt=row.attempts - 1,
                worker_id=worker_id,
                at=now,
            )
        ],
    )
    mark_claimable(session)
    return _load(session, job_id)
