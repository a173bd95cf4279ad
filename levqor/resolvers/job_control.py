"""Client verbs on one job: cancel and retry (CONTRACT.md §2, §7). The state rules live in the queue;
each event they write names the caller that asked (`detail.by`), from whichever surface."""

from __future__ import annotations

import uuid

from levqor import queue
from levqor.db.models import Job
from levqor.resolvers.context import Context, Scope
from levqor.resolvers.validation import parse_id


async def cancel_job(ctx: Context, job_id: str | uuid.UUID) -> Job:
    """Queued: cancelled at once. Running: cancellation requested; the worker stops the attempt at
    its next heartbeat and the job ends `cancelled`. Already finished: `Conflict`."""
    ctx.principal.require(Scope.JOBS_WRITE)
    key = parse_id(job_id, kind="job")
    return await ctx.db.write(lambda session: queue.cancel(session, key, by=ctx.principal.id))


async def retry_job(ctx: Context, job_id: str | uuid.UUID) -> Job:
    """A failed or cancelled job runs again now, with a fresh set of attempts; otherwise `Conflict`."""
    ctx.principal.require(Scope.JOBS_WRITE)
    key = parse_id(job_id, kind="job")
    return await ctx.db.write(lambda session: queue.retry(session, key, by=ctx.principal.id))
