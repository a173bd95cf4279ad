"""A job's callback deliveries: read them (with every attempt) and re-send one."""

from __future__ import annotations

import uuid

from sqlmodel import Session, select

from levqor.callbacks import attempts
from levqor.callbacks.attempts import DeliveryRecord
from levqor.db.models import Job
from levqor.db.types import utcnow
from levqor.errors import NotFound
from levqor.resolvers.audit import record_change
from levqor.resolvers.context import Context, Scope
from levqor.resolvers.validation import parse_id


async def get_job_deliveries(ctx: Context, job_id: uuid.UUID) -> list[DeliveryRecord]:
    """The deliveries of a job, oldest first (GraphQL resolves `Job.deliveries` through this)."""
    ctx.principal.require(Scope.JOBS_READ)
    return await ctx.db.read(lambda session: attempts.deliveries_of_job(session, job_id))


async def resend_delivery(
    ctx: Context, job_id: str | uuid.UUID, delivery_id: str | uuid.UUID
) -> DeliveryRecord:
    """Send a delivery's event again, as a new delivery due now (admin): the same body and
    `webhook-id`, so a receiver that already processed it can tell. Any delivery may be re-sent,
    delivered or not; the original keeps its record. The audit log names who asked."""
    ctx.principal.require(Scope.ADMIN)
    job_key = parse_id(job_id, kind="job")
    delivery_key = parse_id(delivery_id, kind="delivery")

    def run(session: Session) -> DeliveryRecord:
        if not _job_exists(session, job_key):
            raise NotFound(f"no job with id '{job_key}'")
        original = attempts.delivery_of_job(session, job_key, delivery_key)
        if original is None:
            raise NotFound(f"no delivery with id '{delivery_key}' on job '{job_key}'")
        resent = attempts.resend(session, original, utcnow())
        record_change(
            session,
            ctx.principal,
            "delivery.resent",
            "delivery",
            resent.id,
            {"job_id": str(job_key), "resent_from": str(original.id)},
        )
        return DeliveryRecord(resent, attempt_log=[])

    return await ctx.db.write(run)


def _job_exists(session: Session, job_id: uuid.UUID) -> bool:
    return session.exec(select(Job.seq).where(Job.id == job_id)).first() is not None
