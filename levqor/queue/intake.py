"""Group commit for intake: concurrent submits share one thread hop and one transaction.

The request path builds a ready `jobs` row (`job_row`) and hands it to a `Batcher` (levqor/db/
batching.py) over `write_jobs`, which inserts every waiting job and its `submitted` event with two
executemany statements in one write transaction. A caller still hears of its job only after the
commit that holds it, so an accepted job is as durable as before; the commit, the thread hop and the
wake-up (one local poke, one NOTIFY on PostgreSQL) are paid once per batch rather than once per
request. A batch that fails is written again row by row, so one bad row fails only its own submit.

The batch's transaction also reserves each job's estimate against its key's budget
(levqor/costs/ledger.py): a job the budget has no room for is left out of the insert and its caller
hears why, while the rest of the batch is stored. It also reads which of the batch's keys have a
concurrency limit, so a job is marked by the limit its key has when it is stored
(levqor/queue/limits.py).

Only plain submits come this way. An Idempotency-Key or a `user_id` needs reads in the same
transaction, and those submits keep the one-row path (`events.enqueue`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import inspect as sa_inspect
from sqlalchemy.orm import configure_mappers
from sqlmodel import Session

from levqor.costs.ledger import Ask, Grant, reserve
from levqor.db.bulk import BulkInsert
from levqor.db.engine import Database
from levqor.db.models import Job, JobStatus
from levqor.db.types import utcnow
from levqor.errors import BudgetExceeded
from levqor.queue.claimable import JOBS
from levqor.queue.events import event_row, insert_events
from levqor.queue.limits import limited_keys, note_limited
from levqor.queue.wakeup import mark_claimable

# Keys of a submit's row that are not columns, taken out before the insert: the managed key whose
# budget applies, and whether the submit asked for `budget_policy: defer`.
BUDGET_KEY = "budget_key_id"
DEFER = "budget_defer"
# Past a few dozen rows a bigger transaction saves little and holds the write lock longer.
MAX_BATCH_ROWS = 64

_JOB_COLUMNS = tuple(column.name for column in JOBS.columns if column.name != "seq")
# `Job`'s defaults live in Python, not in the table; read once, since asking pydantic for a field's
# default on every row costs more than building the row.
# Columns `insert_jobs` always sets itself, from the batch's one `now`: their defaults are not worth
# computing for each row only to be overwritten.
_SET_AT_INSERT = frozenset({"created_at", "updated_at"})
_STATIC_DEFAULTS = {
    name: None if name in _SET_AT_INSERT else Job.model_fields[name].default
    for name in _JOB_COLUMNS
    if name in _SET_AT_INSERT
    or (Job.model_fields[name].default_factory is None and not Job.model_fields[name].is_required())
}
_DEFAULT_FACTORIES: tuple[tuple[str, Callable[[], Any]], ...] = tuple(
    (name, factory)  # type: ignore[misc]
    for name in _JOB_COLUMNS
    if name not in _SET_AT_INSERT and (factory := Job.model_fields[name].default_factory) is not None
)
_INSERT_JOBS = BulkInsert(JOBS, _JOB_COLUMNS)


def job_row(**values: Any) -> dict[str, Any]:
    """A complete `jobs` row: `values`, and the model's defaults for the other columns (every row of
    one executemany must name the same columns)."""
    row = _STATIC_DEFAULTS.copy()
    for name, factory in _DEFAULT_FACTORIES:
        if name not in values:
            row[name] = factory()
    row.update(values)
    return row


def insert_jobs(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert queued jobs (rows from `job_row`) and their `submitted` events.

    The rows are completed in place: status, timestamps and a `run_at` not in the past."""
    if not rows:
        return
    now = utcnow()
    for row in rows:
        row.update(status=JobStatus.QUEUED.value, created_at=now, updated_at=now)
        if row["run_at"] is None or row["run_at"] < now:
            row["run_at"] = now
    # Plain executemany, without RETURNING: one short statement that the driver prepares once and
    # sends for every row in one round trip (a pipeline on PostgreSQL), where a multi-row VALUES
    # statement would be new text, parsed again, for every batch size. `BulkInsert` binds the values
    # shared by the batch (None, `now`) once, rather than once per row and column.
    _INSERT_JOBS.execute(session, rows)
    insert_events(
        session,
        [
            event_row(
                row["id"],
                "submitted",
                from_status=None,
                to_status=row["status"],
                attempt=0,
                worker_id=None,
                at=now,
            )
            for row in rows
        ],
    )
    mark_claimable(session)


def enqueue_many(session: Session, jobs: Sequence[Job]) -> int:
    """Insert many queued jobs with their `submitted` events (bulk loads, benchmarks). The `Job`
    objects are templates: they are not attached to the session."""
    if not jobs:
        return 0
    insert_jobs(session, [job.model_dump(exclude={"seq"}) for job in jobs])
    return len(jobs)


def ask_of(row: dict[str, Any], now: datetime) -> Ask:
    """What the job of `row` asks of its key's and its user's budgets. The row keeps its keys that
    are not columns (the insert reads only the columns), so a batch retried row by row asks again."""
    run_at = row["run_at"]
    return Ask(
        job_id=row["id"],
        workflow=row["workflow"],
        estimate_micros=row["cost_estimate_micros"] or 0,
        key_id=row.get(BUDGET_KEY),
        user_id=row["user_id"],
        run_at=now if run_at is None or run_at < now else run_at,
        defer=bool(row.get(DEFER)),
    )


def mark_limited(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Mark the rows whose key has a concurrency limit now (rows of a limited workflow are marked
    already, from the settings, by the request)."""
    keys = {
        key for row in rows if not row["concurrency_limited"] and (key := row.get(BUDGET_KEY)) is not None
    }
    limited = limited_keys(session, keys) if keys else set()
    for row in rows:
        if row.get(BUDGET_KEY) in limited:
            row["concurrency_limited"] = True
    if any(row["concurrency_limited"] for row in rows):
        note_limited(session)


def apply_grant(row: dict[str, Any], grant: Grant) -> None:
    row["reserved_micros"] = grant.reserved_micros
    if grant.run_at is not None:
        row["run_at"] = grant.run_at
        row["defer_reason"] = grant.defer_reason


def write_jobs(db: Database, rows: Sequence[dict[str, Any]]) -> list[Job | BudgetExceeded]:
    """One write transaction for a batch of submits (rows from `job_row`); for each, its job once
    committed, or why its budget refused it."""

    def run(session: Session) -> list[Job | BudgetExceeded]:
        now = utcnow()
        grants = reserve(session, [ask_of(row, now) for row in rows], now)
        admitted = []
        for row, grant in zip(rows, grants, strict=True):
            if isinstance(grant, Grant):
                apply_grant(row, grant)
                admitted.append(row)
        mark_limited(session, admitted)
        insert_jobs(session, admitted)
        # Built before the commit, so that a failure here rolls the rows back and a retry cannot find
        # them written. `seq` (arrival order, for list cursors) is not read back.
        jobs = iter(_jobs_of(admitted))
        return [next(jobs) if isinstance(grant, Grant) else grant for grant in grants]

    return db.write_sync(run)


def _jobs_of(rows: Sequence[dict[str, Any]]) -> list[Job]:
    """`Job`s outside any session holding `rows`, made as the ORM makes the rows it loads: `Job(**row)`
    runs SQLModel's constructor, which costs as much per row as the insert itself."""
    new_instance = _new_job_instance()
    jobs: list[Job] = []
    for row in rows:
        job: Job = new_instance()
        job.__dict__.update(row, seq=None)
        job.__dict__.pop(BUDGET_KEY, None)
        job.__dict__.pop(DEFER, None)
        jobs.append(job)
    return jobs


@functools.cache
def _new_job_instance() -> Callable[[], Job]:
    """The ORM's constructor of loaded `Job`s, looked up once (the look-up cost more than a row)."""
    mapper = sa_inspect(Job)
    if not mapper.configured:
        configure_mappers()
    new_instance: Callable[[], Job] = mapper.class_manager.new_instance
    return new_instance
