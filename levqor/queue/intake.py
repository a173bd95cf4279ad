"""Group commit for intake: concurrent submits share one thread hop and one transaction.

Each submit puts its ready `jobs` row on a queue and waits; one writer task takes everything waiting
(up to `MAX_BATCH_ROWS`), inserts all the jobs and their `submitted` events with two executemany
statements in one write transaction, and then answers every waiting submit. A caller still hears of
its job only after the commit that holds it, so an accepted job is as durable as before; the commit,
the thread hop and the wake-up (one local poke, one NOTIFY on PostgreSQL) are paid once per batch
rather than once per request. A batch that fails is written again row by row, so one bad row fails
only its own submit.

Only plain submits come this way. An Idempotency-Key or a `user_id` needs reads in the same
transaction, and those submits keep the one-row path (`events.enqueue`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from sqlalchemy import insert
from sqlmodel import Session

from levqor.db.engine import Database
from levqor.db.models import Job, JobStatus
from levqor.db.types import utcnow
from levqor.queue.events import JOB_EVENTS, JOBS, event_row
from levqor.queue.wakeup import mark_claimable

logger = logging.getLogger(__name__)

# Past a few dozen rows a bigger transaction saves little and holds the write lock longer.
MAX_BATCH_ROWS = 64

_JOB_COLUMNS = tuple(column.name for column in JOBS.columns if column.name != "seq")
# `Job`'s defaults live in Python, not in the table; read once, since asking pydantic for a field's
# default on every row costs more than building the row.
_STATIC_DEFAULTS = {
    name: Job.model_fields[name].default
    for name in _JOB_COLUMNS
    if Job.model_fields[name].default_factory is None and not Job.model_fields[name].is_required()
}
_DEFAULT_FACTORIES: tuple[tuple[str, Callable[[], Any]], ...] = tuple(
    (name, factory)  # type: ignore[misc]
    for name in _JOB_COLUMNS
    if (factory := Job.model_fields[name].default_factory) is not None
)


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
    now = utcnow()
    for row in rows:
        row.update(status=JobStatus.QUEUED.value, created_at=now, updated_at=now)
        if row["run_at"] is None or row["run_at"] < now:
            row["run_at"] = now
    # Plain executemany, without RETURNING: one short statement that the driver prepares once and
    # sends for every row in one round trip (a pipeline on PostgreSQL), where a multi-row VALUES
    # statement would be new text, parsed again, for every batch size.
    session.execute(insert(JOBS), list(rows))
    session.execute(
        insert(JOB_EVENTS),
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


@dataclass(slots=True)
class _Pending:
    row: dict[str, Any]
    answer: asyncio.Future[Job]


class IntakeWriter:
    """The batching writer of one event loop. Owned by the app lifespan: `start` before serving,
    `stop` after; `stop` writes what is already waiting before it returns."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._queue: asyncio.Queue[_Pending | None] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(), name="levqor-intake-writer")

    async def stop(self) -> None:
        queue, task = self._queue, self._task
        self._queue = self._task = None  # later submits take the one-row path
        if queue is None or task is None:
            return
        queue.put_nowait(None)
        await task

    async def submit(self, row: dict[str, Any]) -> Job:
        """Write one `job_row` and return its job, once committed."""
        queue = self._queue
        if queue is None:
            return (await anyio.to_thread.run_sync(self._write_sync, [row]))[0]
        answer: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Pending(row, answer))
        return await answer

    async def _run(self) -> None:
        queue = self._queue
        assert queue is not None
        batch: list[_Pending] = []
        stopping = False
        try:
            while not stopping:
                first = await queue.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < MAX_BATCH_ROWS and not queue.empty():
                    item = queue.get_nowait()
                    if item is None:
                        stopping = True
                        break
                    batch.append(item)
                await self._write(batch)
                batch = []
        finally:
            # Cancelled without `stop` (the loop is closing): no submit may wait forever.
            while not queue.empty():
                item = queue.get_nowait()
                if item is not None:
                    batch.append(item)
            for pending in batch:
                if not pending.answer.done():
                    pending.answer.set_exception(RuntimeError("the intake writer has stopped"))

    async def _write(self, batch: list[_Pending]) -> None:
        try:
            jobs = await anyio.to_thread.run_sync(self._write_sync, [pending.row for pending in batch])
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].answer.done():
                    batch[0].answer.set_exception(exc)
                return
            logger.warning("a batch of submits failed; writing them one by one", exc_info=True)
            for pending in batch:
                await self._write([pending])
            return
        for pending, job in zip(batch, jobs, strict=True):
            if not pending.answer.done():  # a caller that went away has cancelled its wait
                pending.answer.set_result(job)

    def _write_sync(self, rows: list[dict[str, Any]]) -> list[Job]:
        def run(session: Session) -> list[Job]:
            insert_jobs(session, rows)
            # Built before the commit, so that a failure here rolls the rows back and the retry row by
            # row cannot find them written. Detached objects, like a closed session's rows; `seq`
            # (arrival order, for list cursors) is not read back.
            return [Job(**row) for row in rows]

        return self._db.write_sync(run)

