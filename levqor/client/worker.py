"""`RemoteWorker`: serve workflows from any process over the worker API.

It long-polls for jobs up to its free slots, runs each handler as a task, heartbeats every lease/3
(CONTRACT.md §7), stops a job when its timeout passes or a cancel is requested, and reports the
outcome. A 409 from the server means this attempt lost its lease: the job is dropped, never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from levqor.client.calls import ClaimedJob
from levqor.client.errors import LeaseLost, RateLimited, ServerError
from levqor.client.http import AsyncLevqorClient

logger = logging.getLogger(__name__)

DEFAULT_WAIT_S = 20.0
DEFAULT_SHUTDOWN_GRACE_S = 30.0
RETRY_BACKOFF_MIN_S = 0.2
RETRY_BACKOFF_MAX_S = 10.0


class PermanentFailure(Exception):
    """Raise from a handler to fail the job without a retry."""


class RetryLater(Exception):
    """Raise from a handler to fail this attempt and ask for the next one after `retry_after_s`."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class JobRun:
    """What a handler knows about its run, and what it may report back."""

    job: ClaimedJob
    progress: dict[str, Any] | None = None  # sent with the next heartbeat
    # What the attempt cost (USD micro-dollars) and the tokens it used, with heartbeats and outcome.
    cost_micros: int | None = None
    usage: dict[str, int] | None = None
    cost: float | None = None  # deprecated: USD, for handlers written before `cost_micros`
    cancel_requested: bool = field(default=False, init=False)
    # When the lease runs out by this process's event-loop clock: reports are retried until then.
    lease_deadline: float = field(default=0.0, init=False, repr=False)

    def report_progress(self, progress: Mapping[str, Any]) -> None:
        self.progress = dict(progress)

    def report_cost(self, micros: int, usage: Mapping[str, int] | None = None) -> None:
        """The attempt's cost so far in USD micro-dollars (and its tokens: `prompt_tokens`,
        `completion_tokens`, `cached_tokens`, `reasoning_tokens`), sent with each heartbeat and
        with its outcome: past the job's budget hold, the server fails the job and the handler is
        cancelled."""
        self.cost_micros = micros
        if usage is not None:
            self.usage = dict(usage)


@dataclass(frozen=True, slots=True)
class _Outcome:
    """How an attempt ended: a result to complete with, or an error to fail with."""

    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    retryable: bool = True
    retry_after_s: float | None = None


Handler = Callable[[dict[str, Any], JobRun], Awaitable[Mapping[str, Any]] | Mapping[str, Any]]

_TRANSIENT = (httpx.TransportError, ServerError, RateLimited)


def default_worker_id() -> str:
    return f"remote:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RemoteWorker:
    def __init__(
        self,
        client: AsyncLevqorClient,
        handlers: Mapping[str, Handler],
        *,
        worker_id: str | None = None,
        concurrency: int = 1,
        wait_s: float = DEFAULT_WAIT_S,
        lease_s: int | None = None,
        shutdown_grace_s: float = DEFAULT_SHUTDOWN_GRACE_S,
    ) -> None:
        if not handlers:
            raise ValueError("a RemoteWorker needs at least one handler")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client = client
        self.handlers = dict(handlers)
        self.worker_id = worker_id or default_worker_id()
        self.concurrency = concurrency
        self.wait_s = wait_s
        self.lease_s = lease_s
        self.shutdown_grace_s = shutdown_grace_s
        self.reported = 0  # outcomes the server accepted
        self._stopping = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    def stop(self) -> None:
        """Stop claiming; `run` returns once running jobs finish (or the grace period passes)."""
        self._stopping.set()

    async def run(self) -> None:
        """Serve until `stop`. An error the server will repeat (401, 403, 400 for an unknown
        workflow) ends the run, after the jobs already running finish."""
        try:
            await self._claim_until_stopped()
        finally:
            await self._drain()

    async def _claim_until_stopped(self) -> None:
        backoff_s = RETRY_BACKOFF_MIN_S
        while not self._stopping.is_set():
            free = self.concurrency - len(self._running)
            if free <= 0:
                await self._wait_any(self._running)
                continue
            try:
                jobs = await self._claim(free)
            except _TRANSIENT as exc:
                delay_s = _delay_for(exc, backoff_s)
                logger.warning("claim failed; retrying", extra={"error": str(exc), "delay_s": delay_s})
                await self._sleep(delay_s)
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_MAX_S)
                continue
            backoff_s = RETRY_BACKOFF_MIN_S
            for job in jobs:
                task = asyncio.create_task(self._serve(job), name=f"levqor-job-{job.id}")
                self._running.add(task)
                task.add_done_callback(self._running.discard)

    async def _claim(self, max_jobs: int) -> list[ClaimedJob]:
        """One long-poll, given up when `stop` is called. A claim the server answered just as it was
        given up leaves its jobs to their leases, which expire and hand them to another worker."""
        claim = asyncio.ensure_future(
            self.client.claim(
                self.worker_id,
                list(self.handlers),
                max_jobs=max_jobs,
                wait_s=self.wait_s,
                lease_s=self.lease_s,
            )
        )
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({claim, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if claim.done():
            return claim.result()
        claim.cancel()
        with contextlib.suppress(asyncio.CancelledError, *_TRANSIENT):
            await claim
        return []

    async def _drain(self) -> None:
        if not self._running:
            return
        _done, pending = await asyncio.wait(set(self._running), timeout=self.shutdown_grace_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    async def _wait_any(self, tasks: set[asyncio.Task[None]]) -> None:
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({*tasks, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _serve(self, job: ClaimedJob) -> None:
        run = JobRun(job)
        run.lease_deadline = asyncio.get_running_loop().time() + job.lease_s
        handler = self.handlers.get(job.workflow)
        if handler is None:  # the server handed out a workflow this worker did not ask for
            error = {"type": "unknown_workflow", "message": f"no handler for {job.workflow!r}"}
            await self._report(run, _Outcome(error=error, retryable=False))
            return
        task = asyncio.create_task(_call(handler, job.payload, run))
        try:
            outcome = await self._supervise(job, run, task)
        except LeaseLost:
            task.cancel()
            logger.warning("lease lost; dropping the job", extra={"job_id": job.id, "attempt": job.attempt})
            return
        finally:
            if not task.done():
                task.cancel()
        await self._report(run, outcome)

    async def _supervise(
        self, job: ClaimedJob, run: JobRun, task: asyncio.Task[Mapping[str, Any]]
    ) -> _Outcome:
        """Heartbeat until the handler ends, or stop it; then say how the attempt ended."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + job.timeout_s if job.timeout_s else None
        interval_s = max(job.lease_s / 3, 0.1)
        while not task.done():
            wait_s = interval_s if deadline is None else min(interval_s, max(deadline - loop.time(), 0))
            await asyncio.wait({task}, timeout=wait_s)
            if task.done():
                break
            if deadline is not None and loop.time() >= deadline:
                task.cancel()
                error = {"type": "timeout", "message": f"the handler ran past {job.timeout_s} s"}
                return _Outcome(error=error)
            sent_at = loop.time()
            try:
                beat = await self.client.heartbeat(
                    job.id,
                    self.worker_id,
                    job.attempt,
                    progress=run.progress,
                    lease_s=self.lease_s,
                    cost_micros=run.cost_micros,
                    usage=run.usage,
                )
            except _TRANSIENT as exc:
                logger.warning("heartbeat failed", extra={"job_id": job.id, "error": str(exc)})
                continue
            run.lease_deadline = sent_at + (self.lease_s or job.lease_s)
            if beat.cancel_requested:
                run.cancel_requested = True
                task.cancel()
                return _Outcome(error={"type": "cancelled", "message": "cancel requested"}, retryable=False)
        try:
            result = task.result()
        except asyncio.CancelledError:
            error = {"type": "cancelled", "message": "the handler was cancelled"}
            return _Outcome(error=error, retryable=False)
        except PermanentFailure as exc:
            return _Outcome(error=_error_of(exc), retryable=False)
        except RetryLater as exc:
            return _Outcome(error=_error_of(exc), retry_after_s=exc.retry_after_s)
        except Exception as exc:
            logger.warning("handler failed", exc_info=True, extra={"job_id": job.id})
            return _Outcome(error=_error_of(exc))
        if not isinstance(result, Mapping):
            error = {"type": "bad_result", "message": f"the handler returned {type(result).__name__}"}
            return _Outcome(error=error, retryable=False)
        return _Outcome(result=dict(result))

    async def _report(self, run: JobRun, outcome: _Outcome) -> None:
        """Deliver the outcome, retrying through transient errors while the lease holds; after that
        the server takes the job back and another attempt runs it."""
        job = run.job
        loop = asyncio.get_running_loop()
        backoff_s = RETRY_BACKOFF_MIN_S
        while True:
            try:
                if outcome.result is not None:
                    await self.client.complete(
                        job.id,
                        self.worker_id,
                        job.attempt,
                        outcome.result,
                        cost_micros=run.cost_micros,
                        usage=run.usage,
                        cost=run.cost,
                    )
                else:
                    await self.client.fail(
                        job.id,
                        self.worker_id,
                        job.attempt,
                        outcome.error or {},
                        retryable=outcome.retryable,
                        retry_after_s=outcome.retry_after_s,
                        cost_micros=run.cost_micros,
                        usage=run.usage,
                    )
            except LeaseLost:
                logger.warning("lease lost before the outcome", extra={"job_id": job.id})
                return
            except _TRANSIENT as exc:
                delay_s = _delay_for(exc, backoff_s)
                if loop.time() + delay_s > run.lease_deadline:
                    logger.error("gave up reporting; the lease expires", extra={"job_id": job.id})
                    return
                logger.warning("could not report; retrying", extra={"job_id": job.id, "error": str(exc)})
                await asyncio.sleep(delay_s)
                backoff_s = min(backoff_s * 2, RETRY_BACKOFF_MAX_S)
                continue
            self.reported += 1
            return


async def _call(handler: Handler, payload: dict[str, Any], run: JobRun) -> Mapping[str, Any]:
    """Await an async handler; run a plain function in a thread so it cannot block heartbeats."""
    if inspect.iscoroutinefunction(handler):
        return await handler(payload, run)  # type: ignore[no-any-return]
    result = await asyncio.to_thread(handler, payload, run)
    if inspect.isawaitable(result):
        return await result
    return result


def _delay_for(exc: Exception, backoff_s: float) -> float:
    """A 429's Retry-After when it gave one, else the backoff."""
    if isinstance(exc, RateLimited) and exc.retry_after_s is not None:
        return max(exc.retry_after_s, backoff_s)
    return backoff_s


def _error_of(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": str(exc)[:2000]}
