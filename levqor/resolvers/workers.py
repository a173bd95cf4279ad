"""The remote worker API: claim (with long-poll), heartbeat, complete and fail (CONTRACT.md §2, §7).

A worker in any language serves workflows through these four calls, including workflows registered
by name only, with no handler in this process. Fencing lives in the queue: every call after the
claim names `(worker_id, attempt)`, and a stale pair gets `Conflict` and changes nothing.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from sqlmodel import Session, select

from levqor import queue
from levqor.db.models import Job
from levqor.errors import Conflict, FieldCode, InvalidRequest, NotFound
from levqor.queue import ClaimedJob
from levqor.resolvers.context import Context, Scope
from levqor.resolvers.validation import WHOLE_NUMBER, WorkflowName, parse_id, parse_input
from levqor.workflows.context import CostExceeded, TokenUsage
from levqor.workflows.registry import WorkflowRegistry, registry_for, workflow_limits

T = TypeVar("T")

MAX_CLAIM_JOBS = 100
MAX_CLAIM_WAIT_S = 30  # the long-poll cap; HTTP clients and proxies must allow a little more
MAX_CLAIM_WORKFLOWS = 100
MAX_LEASE_S = 3600
MAX_RETRY_AFTER_S = 86_400
MAX_ERROR_MESSAGE_CHARS = 10_000
MAX_COST_USD = Decimal(1_000_000)
MICROS_PER_USD = Decimal(1_000_000)
# A cost sent as text (to keep its decimal digits): 0 to 1,000,000 USD, no sign or exponent.
COST_TEXT_PATTERN = r"^(?:(?:0|[1-9][0-9]{0,5})(?:\.[0-9]{1,12})?|1000000(?:\.0{1,12})?)$"
# Claims reap expired leases at most this often per process (see `_ReapSchedule`).
REAP_INTERVAL_S = 1.0
# Without a wake-up to wait on (a process that never started one), an empty long-poll re-claims
# this often.
FALLBACK_POLL_S = 0.25

# Printable ASCII without spaces: worker ids end up in logs, events and the workers table.
WorkerId = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[!-~]+$")]
Attempt = Annotated[int, Field(ge=1, le=1_000_000), WHOLE_NUMBER]
LeaseSeconds = Annotated[int, Field(ge=1, le=MAX_LEASE_S), WHOLE_NUMBER] | None


class ClaimInput(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    worker_id: WorkerId
    workflows: Annotated[list[WorkflowName], Field(min_length=1, max_length=MAX_CLAIM_WORKFLOWS)]
    max_jobs: Annotated[int, Field(ge=1, le=MAX_CLAIM_JOBS), WHOLE_NUMBER] = 1
    wait_s: Annotated[float, Field(ge=0, le=MAX_CLAIM_WAIT_S)] = 0
    lease_s: LeaseSeconds = None


# One attempt's cost, in USD micro-dollars: at most a million USD.
MAX_COST_MICROS = int(MAX_COST_USD * MICROS_PER_USD)
Micros = Annotated[int, Field(ge=0, le=MAX_COST_MICROS), WHOLE_NUMBER]
Tokens = Annotated[int, Field(ge=0, le=10**12), WHOLE_NUMBER]


class UsageInput(BaseModel):
    """The tokens an attempt used, as OpenAI-compatible APIs report them."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt_tokens: Tokens = 0
    completion_tokens: Tokens = 0
    cached_tokens: Tokens = 0  # the part of prompt_tokens read from a prompt cache
    reasoning_tokens: Tokens = 0  # the part of completion_tokens spent reasoning

    def as_usage(self) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens, self.completion_tokens, self.cached_tokens, self.reasoning_tokens
        )


class SpentInput(BaseModel):
    """What an attempt reports it cost so far (CONTRACT.md §9): money is integer micro-dollars."""

    model_config = ConfigDict(extra="forbid", strict=True)

    cost_micros: Micros | None = None
    usage: UsageInput | None = None
    cost_estimated: bool = False  # some of the cost is an estimate (the real figure never came)

    def spent(self) -> dict[str, Any]:
        """The outcome's cost fields."""
        return {
            "cost_micros": self.cost_micros,
            "usage": None if self.usage is None else self.usage.as_usage(),
            "cost_estimated": self.cost_estimated,
        }


class HeartbeatInput(SpentInput):
    worker_id: WorkerId
    attempt: Attempt
    progress: dict[str, Any] | None = None
    lease_s: LeaseSeconds = None


class CompleteRunInput(SpentInput):
    # Both costs at once is refused, as the schema says.
    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "required": ["cost", "cost_micros"],
                "properties": {"cost": {"not": {"type": "null"}}, "cost_micros": {"not": {"type": "null"}}},
            }
        }
    )

    worker_id: WorkerId
    attempt: Attempt
    result: dict[str, Any]
    # Deprecated: USD as a number or decimal text; `cost_micros` is the one representation.
    cost: Annotated[
        Decimal | None,
        Field(strict=False, ge=0, le=MAX_COST_USD, allow_inf_nan=False),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "number", "minimum": 0, "maximum": int(MAX_COST_USD)},
                    {"type": "string", "pattern": COST_TEXT_PATTERN},
                    {"type": "null"},
                ]
            }
        ),
    ] = None

    @field_validator("cost", mode="before")
    @classmethod
    def _number_or_decimal_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("cost must be a number of USD")
        if isinstance(value, str) and re.fullmatch(COST_TEXT_PATTERN, value) is None:
            raise ValueError("cost must be a number of USD, or its decimal digits as a string")
        return value

    @model_validator(mode="after")
    def _one_cost(self) -> CompleteRunInput:
        if self.cost is not None:
            if self.cost_micros is not None:
                raise ValueError("send cost_micros or the deprecated cost (USD), not both")
            self.cost_micros = int((self.cost * MICROS_PER_USD).to_integral_value())
        return self


class FailRunInput(SpentInput):
    worker_id: WorkerId
    attempt: Attempt
    # An object, or a plain message, kept as `{"message": ...}`.
    error: Annotated[
        dict[str, Any],
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "object"},
                    {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": MAX_ERROR_MESSAGE_CHARS,
                        "pattern": r"\S",
                    },
                ]
            }
        ),
    ]
    retryable: bool = True
    retry_after_s: Annotated[float | None, Field(ge=0, le=MAX_RETRY_AFTER_S)] = None

    @field_validator("error", mode="before")
    @classmethod
    def _message(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip() or len(value) > MAX_ERROR_MESSAGE_CHARS:
                raise ValueError(f"a message must be 1 to {MAX_ERROR_MESSAGE_CHARS} characters")
            return {"message": value}
        return value


@dataclass(frozen=True, slots=True)
class Claim:
    jobs: list[ClaimedJob]
    lease_s: int


class _ReapSchedule:
    """Remote workers cannot take back a dead peer's jobs, and a deployment may run no Levqor worker
    process at all (`serve` without the in-process worker, remote workers only). So claims reap
    expired leases too, at most every `REAP_INTERVAL_S` per process; the reaper re-checks each lease
    as it writes, so it may run in several places at once."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._next_at = 0.0
        self._lock = threading.Lock()

    def due(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now < self._next_at:
                return False
            self._next_at = now + self.interval_s
            return True


_reaps = _ReapSchedule(REAP_INTERVAL_S)


def _backoff(ctx: Context) -> queue.Backoff:
    return queue.Backoff(base_s=ctx.settings.retry_base_ms / 1000, max_s=ctx.settings.retry_max_s)


def _fenced(session: Session, job_id: uuid.UUID, call: Callable[[], T]) -> T:
    """Run a fenced queue call; when it matched nothing because the id names no job, say so (404)
    rather than "lease lost" (409)."""
    try:
        return call()
    except Conflict:
        if session.exec(select(Job.id).where(Job.id == job_id)).first() is None:
            raise NotFound(f"no job with id '{job_id}'") from None
        raise


async def claim_jobs(ctx: Context, data: Any) -> Claim:
    """Claim up to `max_jobs`; when none is ready, wait up to `wait_s` for one (long-poll).

    Each try is one short write transaction; between tries the request waits on the process's
    wake-up (a local enqueue, PostgreSQL NOTIFY, or the poll interval), holding no connection.
    """
    ctx.principal.require(Scope.WORKER)
    fields = parse_input(ClaimInput, data)
    registry = registry_for(ctx.settings)
    unknown = [name for name in fields.workflows if name not in registry]
    if unknown:
        # A worker asking for a name no intake accepts would wait forever; tell it now.
        raise InvalidRequest.for_field(
            "workflows",
            f"unknown workflow '{unknown[0]}' (see GET /api/v1/workflows)",
            FieldCode.ENUM,
        )
    lease_s = fields.lease_s or ctx.settings.lease_s
    backoff = _backoff(ctx)
    limits = workflow_limits(ctx.settings)
    deadline = time.monotonic() + fields.wait_s
    wakeup = ctx.wakeup
    first_try = True
    while True:
        token = wakeup.token() if wakeup is not None else None
        run = _claim_transaction(fields, lease_s, backoff, limits, record=first_try, reap=_reaps.due())
        jobs = await ctx.db.write(run)
        first_try = False
        remaining_s = deadline - time.monotonic()
        if jobs or remaining_s <= 0:
            return Claim(jobs=jobs, lease_s=lease_s)
        if wakeup is not None:
            await wakeup.wait_for_jobs(remaining_s, since=token, workflows=fields.workflows)
        else:
            await asyncio.sleep(min(remaining_s, FALLBACK_POLL_S))


def _claim_transaction(
    fields: ClaimInput,
    lease_s: int,
    backoff: queue.Backoff,
    limits: Mapping[str, int],
    *,
    record: bool,
    reap: bool,
) -> Callable[[Session], list[ClaimedJob]]:
    """One try of a claim: reap when due, note the worker on its first try, claim."""

    def run(session: Session) -> list[ClaimedJob]:
        if reap:
            queue.reap_expired(session, backoff=backoff)
        if record:
            queue.record_worker(
                session,
                worker_id=fields.worker_id,
                hostname=None,
                pid=None,
                workflows=list(fields.workflows),
                concurrency=fields.max_jobs,
            )
        return queue.claim_jobs(
            session,
            worker_id=fields.worker_id,
            workflows=fields.workflows,
            max_jobs=fields.max_jobs,
            lease_s=lease_s,
            workflow_limits=limits,
        )

    return run


async def heartbeat_job(ctx: Context, job_id: str | uuid.UUID, data: Any) -> queue.Heartbeat:
    """Extend the lease of a running attempt; say whether a cancel was requested."""
    ctx.principal.require(Scope.WORKER)
    key = parse_id(job_id, kind="job")
    fields = parse_input(HeartbeatInput, data)
    lease_s = fields.lease_s or ctx.settings.lease_s
    backoff = _backoff(ctx)

    def run(session: Session) -> queue.Heartbeat:
        beat = _fenced(
            session,
            key,
            lambda: queue.heartbeat(
                session,
                job_id=key,
                worker_id=fields.worker_id,
                attempt=fields.attempt,
                lease_s=lease_s,
                progress=fields.progress,
            ),
        )
        # A worker busy with long jobs claims nothing for a while; its heartbeats show it is alive.
        queue.touch_worker(session, worker_id=fields.worker_id)
        if fields.cost_micros is not None and _past_hold(session, key, fields, backoff):
            # Stopped and failed, its cost recorded: the worker is told to stop as for a cancel,
            # and its next report on this attempt finds the lease gone.
            return queue.Heartbeat(lease_expires_at=beat.lease_expires_at, cancel_requested=True)
        return beat

    return await ctx.db.write(run)


def _past_hold(session: Session, key: uuid.UUID, fields: HeartbeatInput, backoff: queue.Backoff) -> bool:
    """Fail a running attempt whose reported cost has passed its job's budget hold (the rule
    `JobRunContext.report_cost` applies in-process), charging what it reported; whether it did."""
    found = session.exec(
        select(Job.reserved_micros, Job.cost_actual_micros, Job.settled_micros).where(Job.id == key)
    ).first()
    if found is None or found[0] is None:
        return False
    reserved, spent_before = found[0], (found[1] or 0) - (found[2] or 0)
    reported = spent_before + (fields.cost_micros or 0)
    if reported <= reserved:
        return False
    stop = CostExceeded(reported, reserved)
    queue.fail(
        session,
        job_id=key,
        worker_id=fields.worker_id,
        attempt=fields.attempt,
        error=stop.as_error(),
        retryable=False,
        **fields.spent(),
        backoff=backoff,
    )
    return True


def _fail_misfit(
    session: Session,
    key: uuid.UUID,
    fields: CompleteRunInput,
    registry: WorkflowRegistry,
    backoff: queue.Backoff,
) -> Job | None:
    """Fail the attempt when its result misfits the workflow's result schema (the check the
    in-process worker makes), keeping the cost it reports; None when the result fits."""
    name = session.exec(select(Job.workflow).where(Job.id == key)).first()
    if name is None or name not in registry:
        return None  # no such job (the completion answers 404), or a workflow no longer registered
    flow = registry.get(name)
    error = flow.invalid_result(fields.result)
    if error is None:
        return None
    return _fenced(
        session,
        key,
        lambda: queue.fail(
            session,
            job_id=key,
            worker_id=fields.worker_id,
            attempt=fields.attempt,
            error=error,
            retryable=flow.result_invalid_retryable,
            **fields.spent(),
            backoff=backoff,
        ),
    )


async def complete_job_run(ctx: Context, job_id: str | uuid.UUID, data: Any) -> Job:
    """Finish an attempt with its result (and the cost it reports); a result that misfits the
    workflow's result schema fails the attempt instead, and the answer shows the job retrying or
    failed with the `invalid_result` error."""
    ctx.principal.require(Scope.WORKER)
    key = parse_id(job_id, kind="job")
    fields = parse_input(CompleteRunInput, data)
    registry, backoff = registry_for(ctx.settings), _backoff(ctx)

    def run(session: Session) -> Job:
        rejected = _fail_misfit(session, key, fields, registry, backoff)
        if rejected is not None:
            return rejected
        return _fenced(
            session,
            key,
            lambda: queue.complete(
                session,
                job_id=key,
                worker_id=fields.worker_id,
                attempt=fields.attempt,
                result=fields.result,
                **fields.spent(),
            ),
        )

    return await ctx.db.write(run)


async def fail_job_run(ctx: Context, job_id: str | uuid.UUID, data: Any) -> Job:
    """Fail an attempt: the queue retries it with backoff (or after `retry_after_s`) while attempts
    remain and `retryable` holds; otherwise the job fails."""
    ctx.principal.require(Scope.WORKER)
    key = parse_id(job_id, kind="job")
    fields = parse_input(FailRunInput, data)
    backoff = _backoff(ctx)

    def run(session: Session) -> Job:
        return _fenced(
            session,
            key,
            lambda: queue.fail(
                session,
                job_id=key,
                worker_id=fields.worker_id,
                attempt=fields.attempt,
                error=fields.error,
                retryable=fields.retryable,
                retry_after_s=fields.retry_after_s,
                **fields.spent(),
                backoff=backoff,
            ),
        )

    return await ctx.db.write(run)
