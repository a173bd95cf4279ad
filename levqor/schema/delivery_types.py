"""GraphQL types of a job's callback deliveries (`Job.deliveries`)."""

from __future__ import annotations

from datetime import datetime

import strawberry

from levqor.callbacks.attempts import DeliveryRecord
from levqor.db.models import CallbackAttempt, DeliveryStatus

DeliveryStatusEnum = strawberry.enum(
    DeliveryStatus,
    name="DeliveryStatus",
    description="PENDING until delivered (a 2xx answer) or given up (FAILED).",
)


@strawberry.type(name="DeliveryAttempt", description="One POST of a callback.")
class DeliveryAttemptType:
    attempt: int
    started_at: datetime
    finished_at: datetime | None = strawberry.field(
        description="Null: the sender stopped before it could record the attempt."
    )
    status_code: int | None = strawberry.field(description="What the receiver answered, if it did.")
    latency_ms: int | None
    response_excerpt: str | None = strawberry.field(description="The first 1,000 characters of the answer.")
    error: str | None = strawberry.field(description="Why no answer came (refused, timed out, ...).")

    @classmethod
    def from_row(cls, row: CallbackAttempt) -> DeliveryAttemptType:
        return cls(
            attempt=row.attempt,
            started_at=row.started_at,
            finished_at=row.finished_at,
            status_code=row.status_code,
            latency_ms=row.latency_ms,
            response_excerpt=row.response_excerpt,
            error=row.error,
        )


@strawberry.type(name="Delivery", description="A signed callback of a job (Standard Webhooks).")
class DeliveryType:
    id: strawberry.ID
    event_type: str = strawberry.field(description="job.succeeded, job.failed or job.cancelled.")
    webhook_id: str = strawberry.field(description="The `webhook-id` header: the same on every attempt.")
    url: str
    status: DeliveryStatusEnum  # type: ignore[valid-type]
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    delivered_at: datetime | None
    failed_reason: str | None
    resent_from: strawberry.ID | None
    attempt_log: list[DeliveryAttemptType]

    @classmethod
    def from_record(cls, record: DeliveryRecord) -> DeliveryType:
        row = record.delivery
        status = DeliveryStatus(row.status)
        return cls(
            id=strawberry.ID(str(row.id)),
            event_type=row.event_type,
            webhook_id=row.webhook_id,
            url=row.url,
            status=status,
            attempts=row.attempts,
            next_attempt_at=None if status.is_final else row.next_attempt_at,
            created_at=row.created_at,
            delivered_at=row.delivered_at,
            failed_reason=row.failed_reason,
            resent_from=None if row.resent_from is None else strawberry.ID(str(row.resent_from)),
            attempt_log=[DeliveryAttemptType.from_row(attempt) for attempt in record.attempt_log],
        )
