"""The worker loop: claim up to the free slots, run handlers as tasks, heartbeat, report in batches.

One worker per process (in `levqor serve` or `levqor worker`). Every database call goes through
`Database.write` (a thread), never on the event loop. A job holds its slot, and its lease is kept
alive by heartbeats, until its outcome is written; outcomes that finish together are written in one
transaction. Stopping (SIGTERM) stops claiming, gives running jobs a grace period, then hands the
rest back to the queue without spending their attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session

from levqor import queue
from levqor.config import Settings
from levqor.db.engine import Database
from levqor.errors import Conflict
from levqor.queue import Backoff, ClaimedJob, Lease, Outcome, OutcomeKind, Wakeup
from levqor.worker.runner import run_attempt, spent
from levqor.workflows import JobRunContext, WorkflowRegistry

logger = logging.getLogger(__name__)

DB_RETRY_S = 1.0  # after a failed claim or write of outcomes, wait this long before trying again
HEARTBEATS_PER_LEASE = 3  # CONTRACT.md §7: heartbeat every lease/3
# A progress report is written this long after it was made, with every report made meanwhile: live
# streams see it at once, and a busy worker writes four transactions a second, not one per report.
PROGRESS_FLUSH_S = 0.25


class StopReason(enum.Enum):
    CANCEL_REQUESTED = "cancel_requested"
    LEASE_LOST = "lease_lost"
    SHUTDOWN = "shutdown"


@dataclass
class RunningJob:
    job: ClaimedJob
    ctx: JobRunContext
    task: asyncio.Task[Outcome] | None = None
    stop_reason: StopReason | None = None
    outcome: Outcome | None = field(default=None, repr=False)


def new_worker_id() -> str:
    """Unique per process run, so a restarted worker never matches an old fence."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    def __init__(
        self,
        db: Database,
        registry: WorkflowRegistry,
        settings: Settings,
        *,
        wakeup: Wakeup,
        concurrency: int | None = None,
        workflows: list[str] | None = None,
        worker_id: str | None = None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.settings = settings
        self.wakeup = wakeup
        self.concurrency = concurrency or settings.worker_concurrency
        self.workflows = workflows if workflows is not None else registry.local_names()
        # Jobs of these workflows run at most so many at once, across every worker.
        self.workflow_limits = registry.concurrency_limits(settings.workflow_max_running)
        self.worker_id = worker_id or new_worker_id()
        self.lease_s = settings.lease_s
        self.backoff = Backoff(base_s=settings.retry_base_ms / 1000, max_s=settings.retry_max_s)
        self._running: dict[uuid.UUID, RunningJob] = {}
        self._pending: list[Outcome] = []
        self._outcome_ready = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._progress_reported = asyncio.Event()
        self._stopping = asyncio.Event()
        # Outcome flushes and heartbeat rounds lock this worker's running rows; one at a time, so
        # two transactions of the same worker never wait on each other (PostgreSQL deadlock).
        self._lease_lock = asyncio.Lock()
        self._reserved = 0  # slots a claim in flight may fill

    @property
    def running_count(self) -> int:
        return len(self._running)

    def stop(self) -> None:
        """Ask for a graceful stop (safe to call more than once, from a signal handler on the loop)."""
        self._stopping.set()
        self._slot_freed.set()
        self.wakeup.poke()  # end an idle wait now rather than at the next poll

    async def run(self) -> None:
        """Serve until `stop()`; then shut down gracefully and return."""
        await self.db.write(self._register)
        logger.info(
            "worker started",
            extra={"worker_id": self.worker_id, "workflows": self.workflows, "concurrency": self.concurrency},
        )
        helpers = [
            asyncio.create_task(self._flush_loop(), name="levqor-flush"),
            asyncio.create_task(self._heartbeat_loop(), name="levqor-heartbeat"),
            asyncio.create_task(self._progress_loop(), name="levqor-progress"),
        ]
        try:
            await self._claim_loop()
        finally:
            try:
                await self._shutdown()
            finally:
                for helper in helpers:
                    helper.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
                await self.db.write(lambda s: queue.mark_worker_stopped(s, worker_id=self.worker_id))
                logger.info("worker stopped", extra={"worker_id": self.worker_id})

    def _register(self, session: Session) -> None:
        queue.record_worker(
            session,
            worker_id=self.worker_id,
            hostname=socket.gethostname(),
            pid=os.getpid(),
            workflows=self.workflows,
            concurrency=self.concurrency,
        )

    # --- claiming and running ----------------------------------------------------------------

    async def _claim_loop(self) -> None:
        poll_s = self.settings.poll_interval_ms / 1000
        while not self._stopping.is_set():
            self._slot_freed.clear()  # before counting, so a slot freed meanwhile is not missed
            free = self._free_slots()
            if free <= 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._slot_freed.wait(), poll_s)
                continue
            token = self.wakeup.token()
            self._reserved += free
            try:
                claimed = await self.db.write(functools.partial(self._claim, max_jobs=free))
            except Exception:
                logger.exception("could not claim jobs; retrying", extra={"worker_id": self.worker_id})
                await asyncio.sleep(DB_RETRY_S)
                continue
            finally:
                self._reserved -= free
            for job in claimed:
                self._start(job)
            if len(claimed) < free and not self._stopping.is_set():
                await self.wakeup.wait_for_jobs(poll_s, since=token, workflows=self.workflows)

    def _free_slots(self) -> int:
        return self.concurrency - len(self._running) - self._reserved

    def _claim(self, session: Session, max_jobs: int) -> list[ClaimedJob]:
        if max_jobs <= 0:
            return []
        return queue.claim_jobs(
            session,
            worker_id=self.worker_id,
            workflows=self.workflows,
            max_jobs=max_jobs,
            lease_s=self.lease_s,
            workflow_limits=self.workflow_limits,
        )

    def _start(self, job: ClaimedJob) -> None:
        ctx = JobRunContext(
            job_id=job.id,
            attempt=job.attempt,
            workflow=job.workflow,
            worker_id=self.worker_id,
            settings=self.settings,
            cost_estimate_micros=job.cost_estimate_micros,
            reserved_micros=job.reserved_micros,
            spent_before_micros=job.spent_before_micros,
            run_id=job.run_id,
            step_key=job.step_key,
            parents=job.parents or {},
            on_progress=self._progress_reported.set,
        )
        running = RunningJob(job=job, ctx=ctx)
        flow = self.registry.get(job.workflow) if job.workflow in self.registry else None
        running.task = asyncio.create_task(run_attempt(job, flow, ctx), name=f"levqor-job-{job.id}")
        running.task.add_done_callback(functools.partial(self._finished, running))
        self._running[job.id] = running

    def _finished(self, running: RunningJob, _task: asyncio.Task[Outcome]) -> None:
        task = running.task
        assert task is not None
        job = running.job
        if not task.cancelled():
            outcome: Outcome | None = task.result() if task.exception() is None else self._crash(running)
        elif running.stop_reason is StopReason.CANCEL_REQUESTED:
            # What it reported before it was stopped is still charged.
            outcome = Outcome(
                job.id,
                self.worker_id,
                job.attempt,
                OutcomeKind.CANCELLED,
                error={"type": "cancelled"},
                **spent(running.ctx),
            )
        else:
            outcome = None  # lease lost: nothing to report; shutdown: handed back by `_shutdown`
        if outcome is None:
            if running.stop_reason is StopReason.LEASE_LOST:
                self._free(job.id)
            return
        running.outcome = outcome
        self._pending.append(outcome)
        self._outcome_ready.set()

    def _crash(self, running: RunningJob) -> Outcome:
        """The runner itself failed (it turns handler errors into outcomes, so this is a bug)."""
        assert running.task is not None
        logger.error(
            "job task failed", exc_info=running.task.exception(), extra={"job_id": str(running.job.id)}
        )
        error = {"type": "worker_error", "message": "the worker failed while running the job"}
        return Outcome(running.job.id, self.worker_id, running.job.attempt, OutcomeKind.FAILED, error=error)

    def _free(self, job_id: uuid.UUID) -> None:
        self._running.pop(job_id, None)
        self._slot_freed.set()

    def _interrupt(self, running: RunningJob, reason: StopReason) -> None:
        if running.task is not None and not running.task.done():
            running.stop_reason = reason
            running.task.cancel()

    # --- writing outcomes --------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            await self._flush()

    async def _flush(self) -> None:
        async with self._lease_lock:  # the flush loop and shutdown both flush; one batch at a time
            await self._flush_pending()

    async def _flush_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            # The slots this batch frees are refilled in the same transaction: under load, one
            # commit per cycle instead of one for the outcomes and one for the next claim.
            refill = 0 if self._stopping.is_set() else self._free_slots() + len(batch)
            self._reserved += refill
            # A report made just before a handler returned is written before its outcome, so the
            # job's last progress and its event log are complete (no statement without one).
            finishing = [self._running[o.job_id] for o in batch if o.job_id in self._running]
            progress = _take_progress(finishing)
            record = functools.partial(
                self._record_and_claim,
                outcomes=batch,
                refill=refill,
                progress=progress,
                leases=[Lease(r.job.id, r.job.attempt) for r in finishing if r.job.id in progress],
            )
            try:
                applied, claimed = await self.db.write(record)
            except Exception:
                logger.exception("could not record job outcomes; retrying", extra={"jobs": len(batch)})
                _restore_progress(finishing, progress)
                self._pending[:0] = batch
                await asyncio.sleep(DB_RETRY_S)
                continue
            finally:
                self._reserved -= refill
            if len(applied) < len(batch):
                stale = {outcome.job_id for outcome in batch} - set(applied)
                logger.warning("lease lost before the outcome was recorded", extra={"jobs": len(stale)})
            for outcome in batch:
                self._free(outcome.job_id)
            for job in claimed:
                self._start(job)

    def _record_and_claim(
        self,
        session: Session,
        *,
        outcomes: list[Outcome],
        refill: int,
        progress: dict[uuid.UUID, dict[str, Any]],
        leases: list[Lease],
    ) -> tuple[list[uuid.UUID], list[ClaimedJob]]:
        if progress:
            queue.heartbeat_many(
                session, worker_id=self.worker_id, leases=leases, lease_s=self.lease_s, progress=progress
            )
        applied = queue.record_outcomes(session, outcomes, backoff=self.backoff)
        return applied, self._claim(session, refill)

    # --- heartbeats and the reaper -----------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        interval_s = self.lease_s / HEARTBEATS_PER_LEASE
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self._heartbeat_round()
            except Exception:
                logger.exception("heartbeat round failed", extra={"worker_id": self.worker_id})

    async def _heartbeat_round(self) -> None:
        await self._beat(full_round=True)

    async def _progress_loop(self) -> None:
        while True:
            await self._progress_reported.wait()
            await asyncio.sleep(PROGRESS_FLUSH_S)  # reports made meanwhile go in the same write
            self._progress_reported.clear()
            try:
                await self._beat(full_round=False)
            except Exception:
                logger.exception("could not write progress reports", extra={"worker_id": self.worker_id})

    async def _beat(self, *, full_round: bool) -> None:
        """Heartbeat the running jobs with their pending progress: every job on a full round (which
        also notes the worker alive and reaps), only the jobs with a report otherwise."""
        # Inside the lock: an outcome flush that ran meanwhile has freed its jobs.
        async with self._lease_lock:
            held = [
                running
                for running in self._running.values()
                if full_round or running.ctx.pending_progress is not None
            ]
            if not held and not full_round:
                return  # a full round runs without jobs too: it notes the worker alive and reaps
            progress = _take_progress(held)

            def run(session: Session) -> tuple[dict[uuid.UUID, queue.Heartbeat], int]:
                beats = queue.heartbeat_many(
                    session,
                    worker_id=self.worker_id,
                    leases=[Lease(running.job.id, running.job.attempt) for running in held],
                    lease_s=self.lease_s,
                    progress=progress,
                )
                if not full_round:
                    return beats, 0
                queue.touch_worker(session, worker_id=self.worker_id)
                # Any worker reaps; the UPDATE is cheap and re-checks each lease, so several may run it.
                return beats, queue.reap_expired(session, backoff=self.backoff)

            try:
                beats, reaped = await self.db.write(run)
            except BaseException:
                _restore_progress(held, progress)
                raise
        if reaped:
            logger.info("took back jobs whose lease expired", extra={"jobs": reaped})
        for running in held:
            beat = beats.get(running.job.id)
            if beat is None:
                if running.outcome is None:
                    self._interrupt(running, StopReason.LEASE_LOST)
            elif beat.cancel_requested and running.outcome is None:
                self._interrupt(running, StopReason.CANCEL_REQUESTED)

    # --- graceful shutdown -------------------------------------------------------------------

    async def _shutdown(self) -> None:
        grace_s = self.settings.shutdown_grace_s
        busy = [r.task for r in self._running.values() if r.task is not None and not r.task.done()]
        if busy and grace_s > 0:
            logger.info("waiting for running jobs", extra={"jobs": len(busy), "grace_s": grace_s})
            await asyncio.wait(busy, timeout=grace_s)
        unfinished = [r for r in self._running.values() if r.task is not None and not r.task.done()]
        for running in unfinished:
            self._interrupt(running, StopReason.SHUTDOWN)
        await asyncio.gather(*(r.task for r in unfinished if r.task is not None), return_exceptions=True)
        await self._flush()
        handed_back = [r for r in unfinished if r.stop_reason is StopReason.SHUTDOWN]
        if handed_back:
            async with self._lease_lock:
                await self.db.write(lambda s: self._release(s, handed_back))
            logger.info("handed jobs back to the queue", extra={"jobs": len(handed_back)})
        for running in handed_back:
            self._free(running.job.id)

    def _release(self, session: Session, handed_back: list[RunningJob]) -> None:
        for running in handed_back:
            # A job whose lease was lost meanwhile is someone else's now; nothing was written for it.
            with contextlib.suppress(Conflict):
                queue.release(
                    session, job_id=running.job.id, worker_id=self.worker_id, attempt=running.job.attempt
                )


def _take_progress(held: list[RunningJob]) -> dict[uuid.UUID, dict[str, Any]]:  # on the loop
    """The pending report of each job that has one; they are no longer pending."""
    progress: dict[uuid.UUID, dict[str, Any]] = {}
    for running in held:
        report = running.ctx.pending_progress
        if report is not None:
            progress[running.job.id] = report
            running.ctx.pending_progress = None
    return progress


def _restore_progress(held: list[RunningJob], progress: dict[uuid.UUID, dict[str, Any]]) -> None:
    """After a failed write: the reports are pending again, unless a newer one came meanwhile."""
    for running in held:
        report = progress.get(running.job.id)
        if report is not None and running.ctx.pending_progress is None:
            running.ctx.pending_progress = report
