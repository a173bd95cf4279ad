"""The delivery queue's statements: claim due deliveries, record what each attempt got, re-send.

A claim leases a delivery the way the job queue leases a job: one statement picks due rows with
`FOR UPDATE SKIP LOCKED` (PostgreSQL; SQLite's IMMEDIATE transaction serialises claimers), counts
the attempt, and moves `next_attempt_at` to the end of the lease, so a delivery whose sender died is
due again then, with no reaper. The attempt's row is written in the claim's transaction, before
anything is sent, so an attempt is never made twice under one row. A result is applied only while
the same attempt still holds the lease (`attempts` and `worker_id`), as job outcomes are fenced.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, null, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, SQLModel, col
from sqlmodel import select as sqlmodel_select

from levqor.callbacks.outbox import DELIVERIES, insert_deliveries, pending_delivery
from levqor.db.bulk import BulkInsert, BulkStatement
from levqor.db.models import (
    DELIVERY_DUE_WHERE,
    CallbackAttempt,
    CallbackDelivery,
    CallbackEndpoint,
    DeliveryStatus,
)

# The partial index's own predicate, as text: a bound status could not use the index.
DUE = text(DELIVERY_DUE_WHERE)
ATTEMPTS: Table = SQLModel.metadata.tables[CallbackAttempt.__tablename__]
ENDPOINTS: Table = SQLModel.metadata.tables[CallbackEndpoint.__tablename__]
MAX_CLAIM_BATCH = 500
GONE = 410  # the receiver says the endpoint is gone for good: no more retries


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: uuid.UUID
    job_id: uuid.UUID
    webhook_id: str
    url: str
    body: str
    signed_by: str | None
    attempt: int


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What one attempt got: a status code (any answer), or an error (no answer)."""

    delivery_id: uuid.UUID
    attempt: int
    url: str
    started_at: datetime
    finished_at: datetime
    status_code: int | None = None
    response_excerpt: str | None = None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def latency_ms(self) -> int:
        return round((self.finished_at - self.started_at).total_seconds() * 1000)


@dataclass(frozen=True, slots=True)
class Applied:
    """What `record_attempts` did: deliveries now final, and endpoints it marked failing."""

    delivered: list[uuid.UUID]
    given_up: list[uuid.UUID]
    retrying: list[uuid.UUID]
    marked_failing: list[str]


def url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()


def next_due_at(session: Session) -> datetime | None:
    """When the earliest pending delivery is due (the partial index answers it)."""
    c = DELIVERIES.c
    return session.execute(select(func.min(c.next_attempt_at)).where(DUE)).scalar()


def claim_due(
    session: Session, *, worker_id: str, max_deliveries: int, lease_s: float, now: datetime
) -> list[ClaimedDelivery]:
    """Lease up to `max_deliveries` due deliveries, oldest due first, and open an attempt for each."""
    if max_deliveries < 1:
        return []
    c = DELIVERIES.c
    due = (
        select(c.id)
        .where(DUE, c.next_attempt_at <= now)
        .order_by(c.next_attempt_at)
        .limit(min(max_deliveries, MAX_CLAIM_BATCH))
        .with_for_update(skip_locked=True)
    )
    lease_ends = now + timedelta(seconds=lease_s)
    values = {
        "attempts": c.attempts + 1,
        "worker_id": worker_id,
        "lease_expires_at": lease_ends,
        "next_attempt_at": lease_ends,
        "updated_at": now,
    }
    returned = (c.id, c.job_id, c.webhook_id, c.url, c.body, c.signed_by, c.attempts)
    if session.get_bind().dialect.name == "postgresql":
        picked = due.cte("picked").prefix_with("MATERIALIZED")
        statement = update(DELIVERIES).where(c.id == picked.c.id)
    else:
        statement = update(DELIVERIES).where(c.id.in_(due.scalar_subquery()))
    rows = session.execute(statement.values(values).returning(*returned)).all()
    claimed = [
        ClaimedDelivery(row.id, row.job_id, row.webhook_id, row.url, row.body, row.signed_by, row.attempts)
        for row in rows
    ]
    _OPEN_ATTEMPTS.execute(
        session,
        [
            {"delivery_id": d.id, "attempt": d.attempt, "worker_id": worker_id, "started_at": now}
            for d in claimed
        ],
    )
    return sorted(claimed, key=lambda d: d.id)


_OPEN_ATTEMPTS = BulkInsert(ATTEMPTS, ("delivery_id", "attempt", "worker_id", "started_at"))

_CLOSE_ATTEMPT = (
    update(ATTEMPTS)
    .where(
        ATTEMPTS.c.delivery_id == bindparam("b_delivery_id"),
        ATTEMPTS.c.attempt == bindparam("b_attempt"),
    )
    .values(
        # The claim wrote when the attempt was taken; this is when its POST began.
        started_at=bindparam("b_started_at", type_=ATTEMPTS.c.started_at.type),
        finished_at=bindparam("b_finished_at", type_=ATTEMPTS.c.finished_at.type),
        status_code=bindparam("b_status_code", type_=ATTEMPTS.c.status_code.type),
        latency_ms=bindparam("b_latency_ms", type_=ATTEMPTS.c.latency_ms.type),
        response_excerpt=bindparam("b_excerpt", type_=ATTEMPTS.c.response_excerpt.type),
        error=bindparam("b_error", type_=ATTEMPTS.c.error.type),
    )
)
_CLOSE_ATTEMPTS = BulkStatement(
    _CLOSE_ATTEMPT,
    (
        "b_delivery_id",
        "b_attempt",
        "b_started_at",
        "b_finished_at",
        "b_status_code",
        "b_latency_ms",
        "b_excerpt",
        "b_error",
    ),
)

# The fence: only the attempt that holds the lease moves its delivery on.
_ADVANCE = (
    update(DELIVERIES)
    .where(
        DELIVERIES.c.id == bindparam("b_id"),
        DELIVERIES.c.attempts == bindparam("b_attempt"),
        DELIVERIES.c.worker_id == bindparam("b_worker_id"),
        DUE,
    )
    .values(
        status=bindparam("b_status"),
        next_attempt_at=bindparam("b_next_attempt_at", type_=DELIVERIES.c.next_attempt_at.type),
        delivered_at=bindparam("b_delivered_at", type_=DELIVERIES.c.delivered_at.type),
        failed_reason=bindparam("b_failed_reason", type_=DELIVERIES.c.failed_reason.type),
        lease_expires_at=null(),
        updated_at=bindparam("b_now", type_=DELIVERIES.c.updated_at.type),
    )
)
_ADVANCE_KEYS = (
    "b_id",
    "b_attempt",
    "b_worker_id",
    "b_status",
    "b_next_attempt_at",
    "b_delivered_at",
    "b_failed_reason",
    "b_now",
)


def record_attempts(
    session: Session,
    results: Sequence[AttemptResult],
    *,
    worker_id: str,
    retry_s: Sequence[int],
    failing_after_s: int,
    now: datetime,
) -> Applied:
    """Close each attempt's row with what it got and move its delivery on: delivered (2xx), retried
    on the `retry_s` schedule, or given up (410, retries used up, or its endpoint marked failing)."""
    applied = Applied([], [], [], [])
    if not results:
        return applied
    _CLOSE_ATTEMPTS.execute(
        session,
        [
            {
                "b_delivery_id": r.delivery_id,
                "b_attempt": r.attempt,
                "b_started_at": r.started_at,
                "b_finished_at": r.finished_at,
                "b_status_code": r.status_code,
                "b_latency_ms": r.latency_ms,
                "b_excerpt": r.response_excerpt,
                "b_error": r.error,
            }
            for r in results
        ],
    )
    failing, marked = _track_endpoints(session, results, failing_after_s, now)
    applied.marked_failing.extend(marked)
    advances: list[dict[str, Any]] = []
    for r in results:
        status, next_at, reason = _next_state(r, retry_s, r.url in failing, now)
        advances.append(
            {
                "b_id": r.delivery_id,
                "b_attempt": r.attempt,
                "b_worker_id": worker_id,
                "b_status": status.value,
                "b_next_attempt_at": next_at,
                "b_delivered_at": now if status is DeliveryStatus.DELIVERED else None,
                "b_failed_reason": reason,
                "b_now": now,
            }
        )
        bucket = {
            DeliveryStatus.DELIVERED: applied.delivered,
            DeliveryStatus.FAILED: applied.given_up,
            DeliveryStatus.PENDING: applied.retrying,
        }[status]
        bucket.append(r.delivery_id)
    _ADVANCE_MANY.execute(session, advances)
    return applied


_ADVANCE_MANY = BulkStatement(_ADVANCE, _ADVANCE_KEYS)


def _next_state(
    result: AttemptResult, retry_s: Sequence[int], endpoint_failing: bool, now: datetime
) -> tuple[DeliveryStatus, datetime, str | None]:
    if result.delivered:
        return DeliveryStatus.DELIVERED, now, None
    if result.status_code == GONE:
        return DeliveryStatus.FAILED, now, "the endpoint answered 410 Gone"
    if endpoint_failing:
        return DeliveryStatus.FAILED, now, "the endpoint is marked failing: no retries until it succeeds"
    if result.attempt > len(retry_s):
        return DeliveryStatus.FAILED, now, f"retries used up ({result.attempt} attempts)"
    return DeliveryStatus.PENDING, now + timedelta(seconds=retry_s[result.attempt - 1]), None


def _track_endpoints(
    session: Session, results: Sequence[AttemptResult], failing_after_s: int, now: datetime
) -> tuple[set[str], list[str]]:
    """Keep `callback_endpoints` for the URLs of `results`: a success clears a URL's row, a failure
    starts or extends it. Returns the URLs marked failing, and those this call marked."""
    succeeded = {r.url for r in results if r.delivered}
    failed = {r.url for r in results if not r.delivered} - succeeded
    c = ENDPOINTS.c
    if succeeded:
        session.execute(delete(ENDPOINTS).where(c.url_hash.in_([url_hash(url) for url in succeeded])))
    if not failed:
        return set(), []
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    rows = [
        {"url_hash": url_hash(url), "url": url, "failing_since": now, "last_failure_at": now}
        for url in sorted(failed)
    ]
    upsert = insert(ENDPOINTS).values(rows)
    session.execute(upsert.on_conflict_do_update(index_elements=[c.url_hash], set_={"last_failure_at": now}))
    marked = session.execute(
        update(ENDPOINTS)
        .where(
            c.url_hash.in_([row["url_hash"] for row in rows]),
            c.marked_failing_at.is_(None),
            c.failing_since <= now - timedelta(seconds=failing_after_s),
        )
        .values(marked_failing_at=now)
        .returning(c.url)
    ).scalars()
    newly = sorted(marked)
    failing = session.execute(
        select(c.url).where(
            c.url_hash.in_([row["url_hash"] for row in rows]), c.marked_failing_at.is_not(None)
        )
    ).scalars()
    return set(failing), newly


def resend(session: Session, delivery: CallbackDelivery, now: datetime) -> CallbackDelivery:
    """A new delivery of the same event (same body and `webhook-id`, so a receiver that already has
    it can tell), due now."""
    row = pending_delivery(
        job_id=delivery.job_id,
        event_type=delivery.event_type,
        webhook_id=delivery.webhook_id,
        url=delivery.url,
        body=delivery.body,
        signed_by=delivery.signed_by,
        now=now,
        resent_from=delivery.id,
    )
    insert_deliveries(session, [row])
    return CallbackDelivery(**row)


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """A delivery with its attempts, oldest first (what a job shows of its callbacks)."""

    delivery: CallbackDelivery
    attempt_log: list[CallbackAttempt]


def deliveries_of_job(session: Session, job_id: uuid.UUID) -> list[DeliveryRecord]:
    deliveries = list(
        session.exec(
            sqlmodel_select(CallbackDelivery)
            .where(CallbackDelivery.job_id == job_id)
            .order_by(col(CallbackDelivery.id))
        )
    )
    if not deliveries:
        return []
    log: dict[uuid.UUID, list[CallbackAttempt]] = {delivery.id: [] for delivery in deliveries}
    attempts = session.exec(
        sqlmodel_select(CallbackAttempt)
        .where(col(CallbackAttempt.delivery_id).in_(list(log)))
        .order_by(col(CallbackAttempt.delivery_id), col(CallbackAttempt.attempt))
    )
    for attempt in attempts:
        log[attempt.delivery_id].append(attempt)
    return [DeliveryRecord(delivery, log[delivery.id]) for delivery in deliveries]


def delivery_of_job(session: Session, job_id: uuid.UUID, delivery_id: uuid.UUID) -> CallbackDelivery | None:
    return session.exec(
        sqlmodel_select(CallbackDelivery).where(
            CallbackDelivery.id == delivery_id, CallbackDelivery.job_id == job_id
        )
    ).first()


def outbox_figures(session: Session) -> tuple[int, int]:
    """(pending deliveries, endpoints marked failing), for `/metrics`: the partial index counts the
    first, the second table holds only endpoints that have failed since their last success."""
    pending = session.execute(select(func.count()).select_from(DELIVERIES).where(DUE)).scalar_one()
    failing = session.execute(
        select(func.count()).select_from(ENDPOINTS).where(ENDPOINTS.c.marked_failing_at.is_not(None))
    ).scalar_one()
    return int(pending), int(failing)
