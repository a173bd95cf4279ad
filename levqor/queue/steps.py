"""Steps of a run: what a step's end does to the rest of its graph (CONTRACT.md §7).

A run's steps are ordinary jobs. A step that waits for parents has `waiting_on` > 0, which keeps it
out of both claim indexes; each parent's end takes one off, and the step becomes claimable at 0.
A parent that fails or is cancelled cancels the children whose edge says `cancel`, and through them
their own descendants; an edge that says `run` counts the parent's end like a success.

The queue calls `steps_finished` in every transaction that moves a step to a terminal state (the
outcomes of workers, the reaper, cancel and the development completion), after the step's own update,
and `step_reopened` when a retry puts a finished step back in the queue. Both change the run's
counters under its row lock last of all, so the transaction that finishes the last open step is the
one that finishes the run, writes its event and queues its callback.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Table, and_, bindparam, func, insert, or_, select, update
from sqlmodel import Session, SQLModel

from levqor.callbacks.outbox import (
    insert_deliveries,
    iso,
    new_webhook_id,
    pending_delivery,
    write_deliveries_for,
)
from levqor.costs.ledger import hold_anew, settle
from levqor.db.models import (
    TERMINAL_STATUSES,
    Job,
    JobStatus,
    ParentFailure,
    Run,
    RunEdge,
    RunEvent,
    RunStatus,
)
from levqor.errors import Conflict
from levqor.queue.events import event_row, insert_events
from levqor.queue.wakeup import mark_claimable

JOBS: Table = SQLModel.metadata.tables[Job.__tablename__]
RUNS: Table = SQLModel.metadata.tables[Run.__tablename__]
EDGES: Table = SQLModel.metadata.tables[RunEdge.__tablename__]
RUN_EVENTS: Table = SQLModel.metadata.tables[RunEvent.__tablename__]

_TERMINAL = tuple(status.value for status in TERMINAL_STATUSES)
# Why a step was cancelled by its graph rather than by a client: `error.type` of such a step, so a
# retry upstream knows which cancelled steps it may bring back.
PARENT_FAILED = "parent_failed"
RUN_CANCELLED = "run_cancelled"


@dataclass(frozen=True, slots=True)
class EndedStep:
    """A step that reached a terminal state in this transaction: its job, run, key and new status
    (the queue has them from the statement that ended it)."""

    id: uuid.UUID
    run_id: uuid.UUID
    key: str
    status: str


def run_event_row(
    run_id: uuid.UUID,
    type_: str,
    *,
    from_status: str | None,
    to_status: str,
    at: datetime,
    detail: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "at": at,
        "type": type_,
        "from_status": from_status,
        "to_status": to_status,
        "detail": detail,
    }


def insert_run_events(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        session.execute(insert(RUN_EVENTS), list(rows))


def steps_finished(session: Session, steps: Sequence[EndedStep], now: datetime) -> None:
    """`steps` reached a terminal state in this transaction: release or cancel what waits for them,
    and count them on their runs."""
    if not steps:
        return
    ended = list(steps)
    counted: list[EndedStep] = []
    while ended:
        counted.extend(ended)
        ended = _release_children(session, ended, now)
    count_on_runs(session, counted, now)


def _release_children(session: Session, ended: Sequence[EndedStep], now: datetime) -> list[EndedStep]:
    """Take the ended parents off their children's counts, or cancel the children; the steps this
    cancelled (whose own children come next)."""
    succeeded = [step.id for step in ended if step.status == JobStatus.SUCCEEDED.value]
    unsuccessful = {step.id: step for step in ended if step.status != JobStatus.SUCCEEDED.value}
    # One statement for every child, however many parents end at once (a fan-out's root releases
    # all its children here): each child's count drops by its edges from the ended parents that
    # release it, a success, or any end through an edge that says `run`.
    e = EDGES.c
    releasing: ColumnElement[bool] = e.parent_id.in_(succeeded)
    if unsuccessful:
        releasing = or_(
            releasing, and_(e.parent_id.in_(list(unsuccessful)), e.on_failure == ParentFailure.RUN.value)
        )
    counts = (
        select(e.child_id, func.count().label("n")).where(releasing).group_by(e.child_id).subquery("released")
    )
    c = JOBS.c
    released = session.execute(
        update(JOBS)
        # No test of the child's status: a child still waiting is queued, one that is not waits for
        # nothing (0) or was cancelled, whose count a retry sets afresh; and a status test lets a
        # planner without statistics walk every queued job for each child (0.2 s for 1,000).
        .where(c.id == counts.c.child_id, c.waiting_on >= counts.c.n)
        .values(waiting_on=c.waiting_on - counts.c.n)
    )
    if released.rowcount:  # type: ignore[attr-defined]
        mark_claimable(session)
    if not unsuccessful:
        return []
    cancelled_by: dict[uuid.UUID, EndedStep] = {}
    for edge in session.execute(
        select(e.parent_id, e.child_id)
        .where(e.parent_id.in_(list(unsuccessful)), e.on_failure == ParentFailure.CANCEL.value)
        .order_by(e.child_id)
    ):
        cancelled_by.setdefault(edge.child_id, unsuccessful[edge.parent_id])
    if not cancelled_by:
        return []
    return cancel_waiting(
        session,
        {
            child: {
                "type": PARENT_FAILED,
                "message": f"step '{parent.key}' {parent.status}",
                "parent": parent.key,
                "parent_job_id": str(parent.id),
            }
            for child, parent in cancelled_by.items()
        },
        now,
    )


def cancel_waiting(
    session: Session, errors: dict[uuid.UUID, dict[str, Any]], now: datetime
) -> list[EndedStep]:
    """Cancel the queued steps among `errors`' keys, each with its error, as `control.cancel` would
    (event, budget settled, callback queued); the steps it cancelled. A step no longer queued is
    left alone."""
    c = JOBS.c
    rows = session.execute(
        select(c.id, c.seq, c.run_id, c.step_key, c.attempts, c.callback_url, c.reserved_micros)
        .where(c.id.in_(list(errors)), c.status == JobStatus.QUEUED.value)
        .order_by(c.seq)
        .with_for_update()
    ).all()
    if not rows:
        return []
    session.execute(
        update(JOBS)
        .where(JOBS.c.seq == bindparam("b_seq"))
        .values(
            status=JobStatus.CANCELLED.value,
            error=bindparam("b_error", type_=JOBS.c.error.type),
            finished_at=now,
            updated_at=now,
        ),
        [{"b_seq": row.seq, "b_error": errors[row.id]} for row in rows],
    )
    insert_events(
        session,
        [
            event_row(
                row.id,
                "cancelled",
                from_status=JobStatus.QUEUED.value,
                to_status=JobStatus.CANCELLED.value,
                attempt=row.attempts,
                worker_id=None,
                at=now,
                detail=errors[row.id],
            )
            for row in rows
        ],
    )
    settle(session, [row.id for row in rows if row.reserved_micros is not None], now)
    write_deliveries_for(session, [row.id for row in rows if row.callback_url is not None], now)
    return [EndedStep(row.id, row.run_id, row.step_key, JobStatus.CANCELLED.value) for row in rows]


def count_on_runs(session: Session, ended: Sequence[EndedStep], now: datetime) -> None:
    tally: dict[uuid.UUID, Counter[str]] = defaultdict(Counter)
    for step in ended:
        tally[step.run_id][step.status] += 1
    for run_id in sorted(tally):
        counts = tally[run_id]
        adjust_run(
            session,
            run_id,
            opened=-sum(counts.values()),
            failed=counts[JobStatus.FAILED.value],
            cancelled=counts[JobStatus.CANCELLED.value],
            now=now,
        )


def adjust_run(
    session: Session, run_id: uuid.UUID, *, opened: int, failed: int, cancelled: int, now: datetime
) -> None:
    """Change a run's counters (under its row lock); finish the run when no step is left open, or
    reopen it when a finished run has an open step again."""
    r = RUNS.c
    row = session.execute(
        update(RUNS)
        .where(r.id == run_id)
        .values(
            steps_open=r.steps_open + opened,
            steps_failed=r.steps_failed + failed,
            steps_cancelled=r.steps_cancelled + cancelled,
            updated_at=now,
        )
        .returning(r.status, r.steps_open, r.steps_failed, r.steps_cancelled, r.cancel_requested)
    ).one()
    was_terminal = RunStatus(row.status).is_terminal
    if row.steps_open == 0 and not was_terminal:
        _finish_run(session, run_id, row, now)
    elif row.steps_open > 0 and was_terminal:
        session.execute(
            update(RUNS)
            .where(r.id == run_id)
            .values(status=RunStatus.RUNNING.value, finished_at=None, updated_at=now)
        )
        insert_run_events(
            session,
            [
                run_event_row(
                    run_id, "resumed", from_status=row.status, to_status=RunStatus.RUNNING.value, at=now
                )
            ],
        )


def final_status(steps_failed: int, steps_cancelled: int, cancel_requested: bool) -> RunStatus:
    if cancel_requested:
        return RunStatus.CANCELLED
    if steps_failed:
        return RunStatus.FAILED
    if steps_cancelled:
        return RunStatus.CANCELLED
    return RunStatus.SUCCEEDED


def _finish_run(session: Session, run_id: uuid.UUID, counts: Any, now: datetime) -> None:
    status = final_status(counts.steps_failed, counts.steps_cancelled, counts.cancel_requested)
    r = RUNS.c
    run = session.execute(
        update(RUNS)
        .where(r.id == run_id)
        .values(status=status.value, finished_at=now, updated_at=now)
        .returning(*RUNS.c)
    ).one()
    insert_run_events(
        session,
        [run_event_row(run_id, status.value, from_status=counts.status, to_status=status.value, at=now)],
    )
    if run.callback_url is not None:
        write_run_delivery(session, run, now)


def run_body(session: Session, run: Any, at: datetime) -> dict[str, Any]:
    """A run's callback data: its status, figures and every step's outcome."""
    c = JOBS.c
    steps = session.execute(
        select(c.id, c.step_key, c.status, c.result, c.error, c.cost_actual_micros)
        .where(c.run_id == run.id)
        .order_by(c.seq)
    ).all()
    costs = [step.cost_actual_micros for step in steps if step.cost_actual_micros is not None]
    data: dict[str, Any] = {
        "run_id": str(run.id),
        "status": run.status,
        "created_at": iso(run.created_at),
        "finished_at": iso(run.finished_at),
        "steps": {
            step.step_key: {
                "job_id": str(step.id),
                "status": step.status,
                "result": step.result,
                "error": step.error,
            }
            for step in steps
        },
    }
    if costs:
        data["cost_actual_micros"] = sum(costs)
    return {"type": f"run.{run.status}", "timestamp": iso(at), "data": data}


def write_run_delivery(session: Session, run: Any, now: datetime) -> None:
    """Queue the callback of a run that has just finished (signed as its steps' would be)."""
    body = run_body(session, run, run.finished_at or now)
    insert_deliveries(
        session,
        [
            pending_delivery(
                job_id=run.id,
                event_type=body["type"],
                webhook_id=new_webhook_id(),
                url=run.callback_url,
                body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                signed_by=run.submitted_by,
                now=now,
            )
        ],
    )


def parent_outcomes(session: Session, child_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, dict[str, Any]]:
    """What each step's handler is told of its parents: by key, `{job_id, status, result, error}`."""
    c = JOBS.c
    rows = session.execute(
        select(EDGES.c.child_id, c.id, c.step_key, c.status, c.result, c.error)
        .join(JOBS, c.id == EDGES.c.parent_id)
        .where(EDGES.c.child_id.in_(list(child_ids)))
    ).all()
    found: dict[uuid.UUID, dict[str, Any]] = defaultdict(dict)
    for row in rows:
        found[row.child_id][row.step_key] = {
            "job_id": str(row.id),
            "status": row.status,
            "result": row.result,
            "error": row.error,
        }
    return found


# --- a retried step --------------------------------------------------------------------------------


def parents_of(session: Session, child_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    """Each child's parents: (parent id, key, status, on_failure)."""
    c = JOBS.c
    rows = session.execute(
        select(EDGES.c.child_id, EDGES.c.on_failure, c.id, c.step_key, c.status)
        .join(JOBS, c.id == EDGES.c.parent_id)
        .where(EDGES.c.child_id.in_(list(child_ids)))
    ).all()
    found: dict[uuid.UUID, list[Any]] = defaultdict(list)
    for row in rows:
        found[row.child_id].append(row)
    return found


def _blocking(parents: Iterable[Any], statuses: dict[uuid.UUID, str]) -> tuple[int, Any | None]:
    """(how many parents a step waits for, a parent whose end keeps it cancelled, if one does)."""
    waiting = 0
    for parent in parents:
        status = statuses.get(parent.id, parent.status)
        if status == JobStatus.SUCCEEDED.value:
            continue
        if status in _TERMINAL:
            if parent.on_failure == ParentFailure.CANCEL.value:
                return waiting, parent
            continue
        waiting += 1
    return waiting, None


def check_retry(session: Session, job: Job) -> int:
    """How many parents a step being retried will wait for; Conflict when a parent's failure keeps
    it cancelled (retry that parent instead, which brings this step back)."""
    waiting, blocker = _blocking(parents_of(session, [job.id]).get(job.id, []), {})
    if blocker is not None:
        raise Conflict(
            f"step '{job.step_key}' depends on step '{blocker.step_key}', which {blocker.status}: "
            f"retry '{blocker.step_key}' (job {blocker.id}), and this step runs after it"
        )
    return waiting


def step_reopened(session: Session, job: Job, previous: str, now: datetime) -> None:
    """A retry put step `job` (which was `previous`) back in the queue: its children wait for it
    again, the descendants its end cancelled come back, and the run counts them open."""
    assert job.run_id is not None
    statuses: dict[uuid.UUID, str] = {job.id: JobStatus.QUEUED.value}
    reopened: list[tuple[uuid.UUID, str]] = [(job.id, previous)]
    frontier = [job.id]
    while frontier:
        edges = session.execute(
            select(EDGES.c.child_id).where(EDGES.c.parent_id.in_(frontier)).distinct()
        ).all()
        children = [edge.child_id for edge in edges]
        if not children:
            break
        c = JOBS.c
        rows = session.execute(
            select(
                c.id,
                c.seq,
                c.status,
                c.error,
                c.workflow,
                c.cost_estimate_micros,
                c.submitted_by,
                c.user_id,
            )
            .where(c.id.in_(children))
            .order_by(c.seq)
            .with_for_update()
        ).all()
        parents = parents_of(session, children)
        frontier = []
        for row in rows:
            if row.status == JobStatus.QUEUED.value:
                # Waiting, or about to run after its parents' ends: it waits for the reopened one too.
                waiting, _ = _blocking(parents[row.id], statuses)
                session.execute(
                    update(JOBS).where(c.seq == row.seq).values(waiting_on=waiting, updated_at=now)
                )
                continue
            cascaded = row.status == JobStatus.CANCELLED.value and (row.error or {}).get("type") in (
                PARENT_FAILED,
                RUN_CANCELLED,
            )
            if not cascaded or row.id in statuses:
                continue
            waiting, blocker = _blocking(parents[row.id], statuses)
            if blocker is not None:
                continue
            session.execute(
                update(JOBS)
                .where(c.seq == row.seq)
                .values(
                    status=JobStatus.QUEUED.value,
                    waiting_on=waiting,
                    reserved_micros=hold_anew(session, row, now),
                    error=None,
                    finished_at=None,
                    attempts=0,
                    run_at=now,
                    cancel_requested=False,
                    updated_at=now,
                )
            )
            insert_events(
                session,
                [
                    event_row(
                        row.id,
                        "restored",
                        from_status=JobStatus.CANCELLED.value,
                        to_status=JobStatus.QUEUED.value,
                        attempt=0,
                        worker_id=None,
                        at=now,
                        detail={"reason": f"step '{job.step_key}' was retried"},
                    )
                ],
            )
            statuses[row.id] = JobStatus.QUEUED.value
            reopened.append((row.id, JobStatus.CANCELLED.value))
            frontier.append(row.id)
    mark_claimable(session)
    session.execute(update(RUNS).where(RUNS.c.id == job.run_id).values(cancel_requested=False))
    adjust_run(
        session,
        job.run_id,
        opened=len(reopened),
        failed=-sum(1 for _, was in reopened if was == JobStatus.FAILED.value),
        cancelled=-sum(1 for _, was in reopened if was == JobStatus.CANCELLED.value),
        now=now,
    )
