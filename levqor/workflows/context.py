"""What a workflow handler gets besides its payload, and how it reports a failure."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from levqor.config import Settings


class JobFailed(Exception):
    """Raised by a handler to fail its attempt with a clear error. `retryable=False` fails the job at
    once; `retry_after_s` overrides the backoff before the next attempt. Any other exception fails
    the attempt too, as a retryable `{"type": "exception"}` error."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = True,
        retry_after_s: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.details = details or {}

    def as_error(self) -> dict[str, Any]:
        return {"type": "failed", "message": self.message, **self.details}


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """The tokens a model call used, as OpenAI-compatible APIs report them in `usage`.

    `cached_tokens` are the part of `prompt_tokens` read from the provider's prompt cache (priced as
    cached input); `reasoning_tokens` the part of `completion_tokens` spent on reasoning."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
            self.reasoning_tokens + other.reasoning_tokens,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
        }


class CostExceeded(JobFailed):
    """A running attempt reported more cost than its job's budget reservation: the job stops and
    fails (not retried); the cost it reported is still recorded and charged."""

    def __init__(self, reported_micros: int, reserved_micros: int) -> None:
        super().__init__(
            f"the job reported a cost of {reported_micros} micro-USD, past its budget reservation of "
            f"{reserved_micros}: stopped",
            retryable=False,
            details={
                "type": "cost_exceeded",
                "reported_micros": reported_micros,
                "reserved_micros": reserved_micros,
            },
        )


@dataclass
class JobRunContext:
    """One attempt of one job, as its handler sees it."""

    job_id: uuid.UUID
    attempt: int
    workflow: str
    worker_id: str
    settings: Settings
    # What this attempt has cost so far (USD micro-dollars), as the handler reported it.
    cost_micros: int | None = None
    # The workflow's estimate, made from the payload at intake (None: the workflow has no cost model).
    cost_estimate_micros: int | None = None
    # What the job's budgets hold for it (None: no budget applies), and what its earlier attempts
    # cost: an attempt may spend `reserved_micros - spent_before_micros` before it is stopped.
    reserved_micros: int | None = None
    spent_before_micros: int = 0
    # Tokens this attempt used, as reported; `cost_estimated` when the cost is the estimate because
    # the real figure never arrived (a stream cut before its usage).
    usage: TokenUsage | None = None
    cost_estimated: bool = False
    # A step of a run: its run, its key, and each parent's outcome by key (`{job_id, status, result,
    # error}`; a parent whose edge lets this step run after a failure may have failed).
    run_id: uuid.UUID | None = None
    step_key: str | None = None
    parents: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending_progress: dict[str, Any] | None = field(default=None, repr=False)
    # Called (on the event loop) at each report: the worker sends what is pending soon after.
    on_progress: Callable[[], None] | None = field(default=None, repr=False)

    def parent_result(self, key: str) -> Any:
        """The result of parent step `key` (None when it did not succeed); KeyError for a key that
        is not one of this step's parents."""
        return self.parents[key]["result"]

    def report_progress(self, progress: dict[str, Any]) -> None:
        """Record progress; the worker writes it within about a quarter of a second, together with
        the other reports made meanwhile (the newest report of a job wins). Call it from the
        handler's own task."""
        self.pending_progress = dict(progress)
        if self.on_progress is not None:
            self.on_progress()

    def report_cost(self, micros: int, *, estimated: bool = False) -> None:
        """This attempt's cost so far in USD micro-dollars (each report replaces the last), recorded
        with the attempt's outcome and charged to the job's budgets. Past the job's reservation it
        raises `CostExceeded`, which stops the handler (let it propagate): the job fails, and what it
        reported is still charged. `estimated=True` marks a cost the handler could not measure."""
        if isinstance(micros, bool) or not isinstance(micros, int) or micros < 0:
            raise ValueError(f"a cost is a whole, non-negative number of micro-USD, not {micros!r}")
        self.cost_micros = micros
        self.cost_estimated = estimated
        if self.reserved_micros is not None and self.spent_before_micros + micros > self.reserved_micros:
            raise CostExceeded(self.spent_before_micros + micros, self.reserved_micros)

    def report_usage(self, usage: TokenUsage) -> None:
        """The tokens this attempt used so far (each report replaces the last), kept on the job."""
        self.usage = usage
