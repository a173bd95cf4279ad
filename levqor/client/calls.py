"""The API calls as data: each builds its request and decodes its answer, so the async and the sync
client share every rule and differ only in how they send."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

T = TypeVar("T")

# The server holds a claim request open for up to `wait_s`; the HTTP timeout must outlast it.
LONG_POLL_MARGIN_S = 10.0


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """One job this worker now holds for one attempt, until `lease_expires_at` unless heartbeated."""

    id: str
    attempt: int
    workflow: str
    payload: dict[str, Any]
    lease_expires_at: datetime
    lease_s: int
    timeout_s: int | None
    # Micro-USD: the estimate, the budget hold (None: no budget) and earlier attempts' cost.
    cost_estimate_micros: int | None = None
    reserved_micros: int | None = None
    spent_before_micros: int = 0
    # A step of a run: the run, its key, and each parent's {job_id, status, result, error} by key.
    run_id: str | None = None
    step_key: str | None = None
    parents: dict[str, dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    lease_expires_at: datetime
    cancel_requested: bool


@dataclass(frozen=True, slots=True)
class Job:
    """A job as GET /api/v1/jobs/<id> shows it; `data` is the whole body (events included)."""

    id: str
    workflow: str
    status: str
    attempts: int
    payload: dict[str, Any]
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    data: dict[str, Any] = field(repr=False)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.data.get("events") or [])

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Job:
        return cls(
            id=body["id"],
            workflow=body["workflow"],
            status=body["status"],
            attempts=body["attempts"],
            payload=body["payload"],
            result=body.get("result"),
            error=body.get("error"),
            data=body,
        )


TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    decode: Callable[[httpx.Response], T]
    json: Any = None
    headers: dict[str, str] | None = None
    timeout_s: float | None = None  # None: the client's default
    lease_fenced: bool = False  # a 409 means LeaseLost


def _job_path(job_id: str, action: str = "") -> str:
    return f"/api/v1/jobs/{quote(str(job_id), safe='')}{action}"


def _job(response: httpx.Response) -> Job:
    return Job.from_json(response.json())


def submit(
    workflow: str,
    payload: Mapping[str, Any],
    *,
    priority: str | None = None,
    run_at: datetime | None = None,
    max_attempts: int | None = None,
    timeout_s: int | None = None,
    callback_url: str | None = None,
    user_id: str | None = None,
    idempotency_key: str | None = None,
) -> Call[str]:
    body: dict[str, Any] = {"workflow": workflow, "payload": dict(payload)}
    optional = {
        "priority": priority,
        "run_at": run_at.isoformat() if run_at else None,
        "max_attempts": max_attempts,
        "timeout_s": timeout_s,
        "callback_url": callback_url,
        "user_id": user_id,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    return Call("POST", "/api/v1/intake", lambda r: str(r.json()["job_id"]), json=body, headers=headers)


def get(job_id: str) -> Call[Job]:
    return Call("GET", _job_path(job_id), _job)


def cancel(job_id: str) -> Call[Job]:
    return Call("POST", _job_path(job_id, "/cancel"), _job)


def retry(job_id: str) -> Call[Job]:
    return Call("POST", _job_path(job_id, "/retry"), _job)


def _claimed(response: httpx.Response) -> list[ClaimedJob]:
    if response.status_code == 204:
        return []
    return [
        ClaimedJob(
            id=item["id"],
            attempt=item["attempt"],
            workflow=item["workflow"],
            payload=item["payload"],
            lease_expires_at=datetime.fromisoformat(item["lease_expires_at"]),
            lease_s=item["lease_s"],
            timeout_s=item.get("timeout_s"),
            cost_estimate_micros=item.get("cost_estimate_micros"),
            reserved_micros=item.get("reserved_micros"),
            spent_before_micros=item.get("spent_before_micros", 0),
            run_id=item.get("run_id"),
            step_key=item.get("step_key"),
            parents=item.get("parents"),
        )
        for item in response.json()["jobs"]
    ]


def claim(
    worker_id: str,
    workflows: Sequence[str],
    *,
    max_jobs: int = 1,
    wait_s: float = 0,
    lease_s: int | None = None,
) -> Call[list[ClaimedJob]]:
    body: dict[str, Any] = {
        "worker_id": worker_id,
        "workflows": list(workflows),
        "max_jobs": max_jobs,
        "wait_s": wait_s,
    }
    if lease_s is not None:
        body["lease_s"] = lease_s
    return Call("POST", "/api/v1/workers/claim", _claimed, json=body, timeout_s=wait_s + LONG_POLL_MARGIN_S)


def _heartbeat(response: httpx.Response) -> Heartbeat:
    body = response.json()
    return Heartbeat(
        lease_expires_at=datetime.fromisoformat(body["lease_expires_at"]),
        cancel_requested=bool(body["cancel_requested"]),
    )


def heartbeat(
    job_id: str,
    worker_id: str,
    attempt: int,
    *,
    progress: Mapping[str, Any] | None = None,
    lease_s: int | None = None,
    cost_micros: int | None = None,
    usage: Mapping[str, int] | None = None,
) -> Call[Heartbeat]:
    """`cost_micros` and `usage` are the attempt's so far: past the job's budget hold, the job is
    failed and the answer asks the worker to stop."""
    body: dict[str, Any] = {"worker_id": worker_id, "attempt": attempt}
    if progress is not None:
        body["progress"] = dict(progress)
    if lease_s is not None:
        body["lease_s"] = lease_s
    _add_spent(body, cost_micros, usage)
    return Call("POST", _job_path(job_id, "/heartbeat"), _heartbeat, json=body, lease_fenced=True)


def complete(
    job_id: str,
    worker_id: str,
    attempt: int,
    result: Mapping[str, Any],
    *,
    cost_micros: int | None = None,
    usage: Mapping[str, int] | None = None,
    cost: Decimal | float | None = None,
) -> Call[Job]:
    """`cost_micros` is the attempt's cost in USD micro-dollars; `cost` (USD) is the older form."""
    body: dict[str, Any] = {"worker_id": worker_id, "attempt": attempt, "result": dict(result)}
    if cost is not None:
        body["cost"] = float(cost)
    _add_spent(body, cost_micros, usage)
    return Call("POST", _job_path(job_id, "/complete"), _job, json=body, lease_fenced=True)


def _add_spent(body: dict[str, Any], cost_micros: int | None, usage: Mapping[str, int] | None) -> None:
    if cost_micros is not None:
        body["cost_micros"] = cost_micros
    if usage is not None:
        body["usage"] = dict(usage)


def fail(
    job_id: str,
    worker_id: str,
    attempt: int,
    error: Mapping[str, Any] | str,
    *,
    retryable: bool = True,
    retry_after_s: float | None = None,
    cost_micros: int | None = None,
    usage: Mapping[str, int] | None = None,
) -> Call[Job]:
    body: dict[str, Any] = {
        "worker_id": worker_id,
        "attempt": attempt,
        "error": error if isinstance(error, str) else dict(error),
        "retryable": retryable,
    }
    _add_spent(body, cost_micros, usage)
    if retry_after_s is not None:
        body["retry_after_s"] = retry_after_s
    return Call("POST", _job_path(job_id, "/fail"), _job, json=body, lease_fenced=True)
