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


@dataclass
class JobRunContext:
    """One attempt of one job, as its handler sees it."""

    job_id: uuid.UUID
    attempt: int
    workflow: str
    worker_id: str
    settings: Settings
    cost_micros: int | None = None
    pending_progress: dict[str, Any] | None = field(default=None, repr=False)
    # Called (on the event loop) at each report: the worker sends what is pending soon after.
    on_progress: Callable[[], None] | None = field(default=None, repr=False)

    def report_progress(self, progress: dict[str, Any]) -> None:
        """Record progress; the worker writes it within about a quarter of a second, together with
        the other reports made meanwhile (the newest report of a job wins). Call it from the
        handler's own task."""
        self.pending_progress = dict(progress)
        if self.on_progress is not None:
            self.on_progress()

    def report_cost(self, micros: int) -> None:
        """The run's actual cost in USD micro-dollars, recorded with its completion."""
        self.cost_micros = micros
