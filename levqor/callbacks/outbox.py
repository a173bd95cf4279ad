"""The outbox: a delivery row for every terminal state change of a job with a `callback_url`.

The queue calls `write_deliveries` in the transaction that finishes the job, so a crash between the
change and the POST loses nothing and a change that rolled back sends nothing. The body is built here,
once: every attempt signs and sends the same bytes under the same `webhook-id`.

Delivery loops learn of new rows at commit: this process's loops through a local poke (an
`after_commit` hook, so a loop never looks before the row is visible), other processes through
`NOTIFY levqor_callbacks` on PostgreSQL, and otherwise at their next look for due rows.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, event, select, text
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, SQLModel
from uuid_utils.compat import uuid7

from levqor.costs.tokens import tokens_of
from levqor.db.bulk import BulkInsert
from levqor.db.models import CallbackDelivery, DeliveryStatus, Job, JobStatus, Priority

DELIVERIES: Table = SQLModel.metadata.tables[CallbackDelivery.__tablename__]
JOBS: Table = SQLModel.metadata.tables[Job.__tablename__]
CHANNEL = "levqor_callbacks"
_SESSION_FLAG = "levqor_deliver"

# What the body's `data` is made of: the job's status fields, and its cost fields when they are set.
BODY_COLUMNS = tuple(
    JOBS.c[name]
    for name in (
        "id",
        "workflow",
        "status",
        "priority",
        "attempts",
        "max_attempts",
        "created_at",
        "started_at",
        "finished_at",
        "result",
        "error",
        "user_id",
        "cost_estimate_micros",
        "cost_actual_micros",
        "cost_estimated",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "reasoning_tokens",
        "callback_url",
        "submitted_by",
    )
)
_COST_FIELDS = ("cost_estimate_micros", "cost_actual_micros")


def event_type_of(status: str) -> str:
    """`job.succeeded`, `job.failed` or `job.cancelled` (CONTRACT.md §8)."""
    if not JobStatus(status).is_terminal:
        raise ValueError(f"a {status} job has no callback")
    return f"job.{status}"


def iso(value: datetime | None) -> str | None:
    """ISO-8601 UTC with a `Z`, as the REST layer writes times."""
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def body_of(job: Any, at: datetime) -> str:
    """The Standard Webhooks payload of `job`'s terminal state, as the JSON text to send."""
    data: dict[str, Any] = {
        "job_id": str(job.id),
        "workflow": job.workflow,
        "status": job.status,
        "priority": Priority.from_rank(job.priority).value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "result": job.result,
        "error": job.error,
        "user_id": None if job.user_id is None else str(job.user_id),
    }
    for name in _COST_FIELDS:
        if getattr(job, name) is not None:
            data[name] = getattr(job, name)
    if job.cost_actual_micros is not None:
        data["cost_estimated"] = bool(job.cost_estimated)
    if (tokens := tokens_of(job)) is not None:
        data["tokens"] = tokens
    envelope = {"type": event_type_of(job.status), "timestamp": iso(at), "data": data}
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)


def new_webhook_id() -> str:
    """A `webhook-id`: unique per event, time-ordered like the delivery ids."""
    return f"msg_{uuid7().hex}"


def pending_delivery(
    *,
    job_id: uuid.UUID,
    event_type: str,
    webhook_id: str,
    url: str,
    body: str,
    signed_by: str | None,
    now: datetime,
    resent_from: uuid.UUID | None = None,
) -> dict[str, Any]:
    """A `callback_deliveries` row of an event, due now, not yet attempted."""
    return {
        "id": uuid7(),
        "job_id": job_id,
        "event_type": event_type,
        "webhook_id": webhook_id,
        "url": url,
        "body": body,
        "signed_by": signed_by,
        "status": DeliveryStatus.PENDING.value,
        "attempts": 0,
        "next_attempt_at": now,
        "lease_expires_at": None,
        "worker_id": None,
        "failed_reason": None,
        "resent_from": resent_from,
        "created_at": now,
        "updated_at": now,
        "delivered_at": None,
    }


def delivery_row(job: Any, now: datetime) -> dict[str, Any]:
    """The delivery of `job`'s terminal state: a new event, with a `webhook-id` of its own."""
    return pending_delivery(
        job_id=job.id,
        event_type=event_type_of(job.status),
        webhook_id=new_webhook_id(),
        url=job.callback_url,
        body=body_of(job, job.finished_at or now),
        signed_by=job.submitted_by,
        now=now,
    )


_INSERT = BulkInsert(DELIVERIES, tuple(column.name for column in DELIVERIES.columns))


def insert_deliveries(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        _INSERT.execute(session, rows)
        mark_deliverable(session)


def write_deliveries(session: Session, jobs: Iterable[Any], now: datetime) -> int:
    """Queue a delivery for each of `jobs` (rows or `Job`s with `BODY_COLUMNS`, already in their
    terminal state in this transaction) that has a callback URL; how many were queued."""
    rows = [delivery_row(job, now) for job in jobs if job.callback_url is not None]
    insert_deliveries(session, rows)
    return len(rows)


def write_deliveries_for(session: Session, job_ids: Sequence[uuid.UUID], now: datetime) -> int:
    """`write_deliveries` for jobs known by id (their new state is read back in this transaction)."""
    if not job_ids:
        return 0
    rows = session.execute(select(*BODY_COLUMNS).where(JOBS.c.id.in_(list(job_ids))))
    return write_deliveries(session, rows, now)


# --- wake-ups ------------------------------------------------------------------------------------

_listeners_lock = threading.Lock()
_listeners: set[Callable[[], None]] = set()


def on_deliverable(poke: Callable[[], None]) -> Callable[[], None]:
    """Call `poke` (from any thread) after each commit that queued a delivery; returns the undo."""
    with _listeners_lock:
        _listeners.add(poke)

    def remove() -> None:
        with _listeners_lock:
            _listeners.discard(poke)

    return remove


def mark_deliverable(session: OrmSession) -> None:
    """Note, in the caller's transaction, that it queues a delivery; loops are told at commit."""
    if session.info.get(_SESSION_FLAG):
        return
    session.info[_SESSION_FLAG] = True
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))  # delivered at commit, and only then


@event.listens_for(OrmSession, "after_commit")
def _after_commit(session: OrmSession) -> None:
    if session.info.pop(_SESSION_FLAG, False):
        with _listeners_lock:
            pokes = list(_listeners)
        for poke in pokes:
            poke()


@event.listens_for(OrmSession, "after_soft_rollback")
def _after_rollback(session: OrmSession, _previous: Any) -> None:
    session.info.pop(_SESSION_FLAG, None)
