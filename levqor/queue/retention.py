"""Retention: finished jobs older than a cutoff are deleted with what hangs off them
(LEVQOR_RETENTION_DAYS; DESIGN.md, "old finished jobs can be pruned by a setting").

What goes, in batches of at most `batch_jobs` jobs, each batch its own short write transaction:
- a job outside any run that finished (succeeded, failed, cancelled) before the cutoff and has no
  pending callback delivery, with its events, its deliveries and their attempts;
- a run that finished before the cutoff, whole: its steps (with their events, deliveries and
  attempts), its own callback delivery, its edges, its events and its row. A run with a pending
  delivery, its own or a step's, waits for it; a step is never pruned apart from its run, and a run
  whose steps outnumber the batch is pruned alone, in one transaction, rather than in halves.

What stays:
- the budgets' ledger (`cost_ledger`): a window's counters are the sums of its entries
  (`rebuild_windows`), a `total` budget's window never ends, and an entry holds ids and amounts,
  no payload or result. The record of what was spent outlives the job.
- schedule fires: a fire records its tick, and its `job_id` may then name a job that is gone.

A pass walks keysets over primary keys, bounded by the cutoff, so it reads only rows created before
it: jobs by `seq` up to the last one created before the cutoff (found through `ix_jobs_created_at`),
runs by their time-ordered ids (UUIDv7, RFC 9562 §5.7) up to the cutoff's. On PostgreSQL each batch
locks its rows `FOR UPDATE SKIP LOCKED`: processes pruning at once take different rows, and a retry
that races the prune either reopens the job first (and it stays) or finds it gone. SQLite's IMMEDIATE
write transactions run one at a time. Deleting a row twice is a no-op.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import ColumnElement, Table, exists, func, select
from sqlmodel import Session, SQLModel

from levqor.db.engine import Database
from levqor.db.models import (
    TERMINAL_STATUSES,
    CallbackAttempt,
    CallbackDelivery,
    DeliveryStatus,
    Job,
    JobEvent,
    Run,
    RunEdge,
    RunEvent,
)

logger = logging.getLogger(__name__)

JOBS: Table = SQLModel.metadata.tables[Job.__tablename__]
EVENTS: Table = SQLModel.metadata.tables[JobEvent.__tablename__]
DELIVERIES: Table = SQLModel.metadata.tables[CallbackDelivery.__tablename__]
ATTEMPTS: Table = SQLModel.metadata.tables[CallbackAttempt.__tablename__]
RUNS: Table = SQLModel.metadata.tables[Run.__tablename__]
RUN_EDGES: Table = SQLModel.metadata.tables[RunEdge.__tablename__]
RUN_EVENTS: Table = SQLModel.metadata.tables[RunEvent.__tablename__]

PRUNE_BATCH_JOBS = 500  # jobs per write transaction: a few milliseconds of the write lock each
# A job is stamped (`created_at`) by the process that took it and numbered (`seq`) when stored, so
# stamps and numbers can disagree by a process's clock skew: the keyset's bound looks this far past.
CREATED_SKEW = timedelta(minutes=10)
FINISHED = sorted(status.value for status in TERMINAL_STATUSES)
_UUID_MS_SHIFT = 80  # a UUIDv7's top 48 of its 128 bits are its Unix time in milliseconds


@dataclass(frozen=True, slots=True)
class Pruned:
    """What a prune deleted, or in a dry run would delete. `jobs` counts runs' steps too."""

    jobs: int = 0
    events: int = 0
    deliveries: int = 0
    attempts: int = 0
    runs: int = 0
    run_events: int = 0
    run_edges: int = 0
    batches: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def retention_cutoff(days: int, now: datetime) -> datetime | None:
    """The moment before which finished jobs go, or None when `days` is 0 (keep them forever)."""
    return now - timedelta(days=days) if days > 0 else None


async def prune(
    db: Database, cutoff: datetime, *, dry_run: bool = False, batch_jobs: int = PRUNE_BATCH_JOBS
) -> Pruned:
    """Delete what finished before `cutoff` (see the module's docstring); with `dry_run`, count what
    would go, through the same statements, and delete nothing."""
    if batch_jobs < 1:
        raise ValueError("batch_jobs must be at least 1")
    step = db.read if dry_run else db.write
    delete = not dry_run
    total = Pruned()
    last_seq = await db.read(partial(_last_seq_before, cutoff=cutoff + CREATED_SKEW))
    after_seq = 0
    while last_seq is not None:
        batch, after_seq, more = await step(
            partial(
                _job_batch,
                cutoff=cutoff,
                after_seq=after_seq,
                last_seq=last_seq,
                limit=batch_jobs,
                delete=delete,
            )
        )
        total += batch
        if not more:
            break
    after_id = uuid.UUID(int=0)
    last_id = _last_uuid7_at(cutoff + CREATED_SKEW)
    while True:
        batch, after_id, more = await step(
            partial(
                _run_batch, cutoff=cutoff, after_id=after_id, last_id=last_id, limit=batch_jobs, delete=delete
            )
        )
        total += batch
        if not more:
            break
    logger.info(
        "pruned" if delete else "counted what a prune would delete",
        extra={"cutoff": cutoff.isoformat(), **total.as_dict()},
    )
    return total


def _last_seq_before(session: Session, *, cutoff: datetime) -> int | None:
    """The greatest `seq` of the jobs created before `cutoff`: a range of `ix_jobs_created_at` that
    holds, once pruning has caught up, only the jobs retention keeps."""
    seq: int | None = session.execute(select(func.max(JOBS.c.seq)).where(JOBS.c.created_at < cutoff)).scalar()
    return seq


def _last_uuid7_at(moment: datetime) -> uuid.UUID:
    """The greatest UUIDv7 made at or before `moment` (to the millisecond)."""
    ms = int(moment.timestamp() * 1000)
    return uuid.UUID(int=((ms + 1) << _UUID_MS_SHIFT) - 1)


def _pending_delivery(job_id: ColumnElement[Any]) -> ColumnElement[bool]:
    d = DELIVERIES.c
    return exists().where(d.job_id == job_id, d.status == DeliveryStatus.PENDING.value)


def _pending_step_delivery(run_id: ColumnElement[Any]) -> ColumnElement[bool]:
    d, j = DELIVERIES.c, JOBS.c
    return exists().where(j.run_id == run_id, d.job_id == j.id, d.status == DeliveryStatus.PENDING.value)


def _job_batch(
    session: Session, *, cutoff: datetime, after_seq: int, last_seq: int, limit: int, delete: bool
) -> tuple[Pruned, int, bool]:
    """Up to `limit` jobs outside runs, after `after_seq`: what they took, the keyset's next start,
    and whether there may be more."""
    j = JOBS.c
    query = (
        select(j.seq, j.id)
        .where(
            j.seq > after_seq,
            j.seq <= last_seq,
            j.status.in_(FINISHED),
            j.finished_at < cutoff,
            j.run_id.is_(None),
            ~_pending_delivery(j.id),
        )
        .order_by(j.seq)
        .limit(limit)
    )
    if delete:
        query = query.with_for_update(skip_locked=True)
    rows = session.execute(query).all()
    if not rows:
        return Pruned(), after_seq, False
    ids = [row.id for row in rows]
    taken = _jobs_and_dependents(session, ids, delete=delete)
    return taken + Pruned(batches=1), rows[-1].seq, len(rows) == limit


def _run_batch(
    session: Session, *, cutoff: datetime, after_id: uuid.UUID, last_id: uuid.UUID, limit: int, delete: bool
) -> tuple[Pruned, uuid.UUID, bool]:
    """Whole runs after `after_id`, as many as fit in `limit` steps (at least one)."""
    r = RUNS.c
    query = (
        select(r.id, r.steps_total)
        .where(
            r.id > after_id,
            r.id <= last_id,
            r.status.in_(FINISHED),
            r.finished_at < cutoff,
            ~_pending_delivery(r.id),
            ~_pending_step_delivery(r.id),
        )
        .order_by(r.id)
        .limit(limit)
    )
    if delete:
        query = query.with_for_update(skip_locked=True)
    rows = session.execute(query).all()
    run_ids: list[uuid.UUID] = []
    steps = 0
    for row in rows:
        if run_ids and steps + row.steps_total > limit:
            break
        run_ids.append(row.id)
        steps += row.steps_total
    if not run_ids:
        return Pruned(), after_id, False
    step_ids = list(session.execute(select(JOBS.c.id).where(JOBS.c.run_id.in_(run_ids))).scalars())
    # Every edge joins two steps of one run, so its parent names it (the edges' primary key leads).
    edges = _take(session, RUN_EDGES, RUN_EDGES.c.parent_id.in_(step_ids), delete=delete) if step_ids else 0
    taken = _jobs_and_dependents(session, step_ids, delete=delete, owners=run_ids)
    taken += Pruned(
        run_edges=edges,
        run_events=_take(session, RUN_EVENTS, RUN_EVENTS.c.run_id.in_(run_ids), delete=delete),
        runs=_take(session, RUNS, RUNS.c.id.in_(run_ids), delete=delete),
        batches=1,
    )
    return taken, run_ids[-1], len(run_ids) < len(rows) or len(rows) == limit


def _jobs_and_dependents(
    session: Session, job_ids: list[uuid.UUID], *, delete: bool, owners: list[uuid.UUID] | None = None
) -> Pruned:
    """The jobs, their events, and the deliveries (with attempts) of the jobs and of `owners` (runs,
    whose callbacks are deliveries under the run's id)."""
    d = DELIVERIES.c
    senders = [*job_ids, *(owners or ())]
    attempts = _take(
        session,
        ATTEMPTS,
        ATTEMPTS.c.delivery_id.in_(select(d.id).where(d.job_id.in_(senders))),
        delete=delete,
    )
    deliveries = _take(session, DELIVERIES, d.job_id.in_(senders), delete=delete)
    if not job_ids:
        return Pruned(deliveries=deliveries, attempts=attempts)
    return Pruned(
        attempts=attempts,
        deliveries=deliveries,
        events=_take(session, EVENTS, EVENTS.c.job_id.in_(job_ids), delete=delete),
        jobs=_take(session, JOBS, JOBS.c.id.in_(job_ids), delete=delete),
    )


def _take(session: Session, table: Table, where: ColumnElement[bool], *, delete: bool) -> int:
    """Delete the rows, or only count them: a dry run counts through the deletes' own conditions."""
    if delete:
        deleted = session.execute(table.delete().where(where))
        return int(deleted.rowcount)  # type: ignore[attr-defined]
    return int(session.execute(select(func.count()).select_from(table).where(where)).scalar_one())
