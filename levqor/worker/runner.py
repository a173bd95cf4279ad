"""Running one attempt of one job: the handler under its timeout, every ending turned into an outcome.

Cancellation is not handled here: the worker cancels the task (a cancel request, a lost lease, or
shutdown) and, knowing why, decides what to report.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from levqor.errors import InvalidRequest
from levqor.queue import ClaimedJob, Outcome, OutcomeKind
from levqor.resolvers.validation import check_json_value
from levqor.workflows import JobFailed, JobRunContext, Workflow

logger = logging.getLogger(__name__)

MAX_ERROR_MESSAGE_CHARS = 2000


def _failed(job: ClaimedJob, worker_id: str, error: dict[str, Any], **options: Any) -> Outcome:
    return Outcome(job.id, worker_id, job.attempt, OutcomeKind.FAILED, error=error, **options)


def spent(ctx: JobRunContext) -> dict[str, Any]:
    """What the attempt reported it cost, for its outcome whatever the ending."""
    return {"cost_micros": ctx.cost_micros, "usage": ctx.usage, "cost_estimated": ctx.cost_estimated}


def _check_result(result: Any) -> dict[str, Any]:
    """The result must be a JSON object every database can store (jsonb refuses U+0000 and NaN)."""
    if not isinstance(result, dict):
        raise JobFailed(
            f"the handler returned {type(result).__name__}, not a JSON object",
            retryable=False,
            details={"type": "bad_result"},
        )
    try:
        check_json_value(result)
    except InvalidRequest as exc:
        raise JobFailed(
            f"the handler's result cannot be stored: {exc.message}",
            retryable=False,
            details={"type": "bad_result"},
        ) from None
    return result


def _check_fit(flow: Workflow, result: dict[str, Any]) -> None:
    """A result that misfits the workflow's result schema fails the attempt (retryable per workflow),
    by the check remote workers' results get too."""
    error = flow.invalid_result(result)
    if error is not None:
        raise JobFailed(error["message"], retryable=flow.result_invalid_retryable, details=error)


def _crashed(job: ClaimedJob, ctx: JobRunContext, exc: Exception) -> Outcome:
    """An unexpected exception: logged with its traceback, and the attempt fails (retryable)."""
    logger.error(
        "workflow handler raised",
        exc_info=exc,
        extra={"job_id": str(job.id), "workflow": job.workflow, "attempt": job.attempt},
    )
    error = {"type": "exception", "message": f"{type(exc).__name__}: {exc}"[:MAX_ERROR_MESSAGE_CHARS]}
    return _failed(job, ctx.worker_id, error, **spent(ctx))


async def run_attempt(job: ClaimedJob, flow: Workflow | None, ctx: JobRunContext) -> Outcome:
    """Run the handler and describe how the attempt ended (success, failure or timeout)."""
    worker_id = ctx.worker_id
    if flow is None or flow.handler is None:
        error = {"type": "no_handler", "message": f"this worker has no handler for '{job.workflow}'"}
        return _failed(job, worker_id, error, retryable=False)
    timeout_s = job.timeout_s or flow.timeout_s
    deadline = asyncio.timeout(timeout_s)
    try:
        async with deadline:
            raw = await flow.handler(job.payload, ctx)
        result = _check_result(raw)
        _check_fit(flow, result)
    except TimeoutError as exc:
        if not deadline.expired():  # the handler's own TimeoutError is an ordinary failure
            return _crashed(job, ctx, exc)
        error = {"type": "timeout", "message": f"the job ran longer than its timeout of {timeout_s} s"}
        return _failed(job, worker_id, error, **spent(ctx))
    except JobFailed as exc:
        return _failed(
            job,
            worker_id,
            exc.as_error(),
            retryable=exc.retryable,
            retry_after_s=exc.retry_after_s,
            **spent(ctx),
        )
    except Exception as exc:
        return _crashed(job, ctx, exc)
    return Outcome(job.id, worker_id, job.attempt, OutcomeKind.SUCCEEDED, result=result, **spent(ctx))
