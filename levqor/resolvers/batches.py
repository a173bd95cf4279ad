"""The request paths that coalesce under load: plain intake and the status read.

One `RequestBatches` per server process, owned by the app lifespan and reached through
`Context.batches`; see levqor/db/batching.py for how calls are coalesced.
"""

from __future__ import annotations

import uuid
from functools import partial
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from levqor.db.batching import MAX_IN_LIST_BATCH, Batcher
from levqor.db.engine import Database
from levqor.db.models import Job
from levqor.errors import BudgetExceeded
from levqor.queue.intake import MAX_BATCH_ROWS, write_jobs
from levqor.resolvers.job_reads import JobStatusView, read_job_statuses


class RequestBatches:
    def __init__(self, db: Database) -> None:
        # A submit's budget may refuse it: its caller gets the refusal, the rest are stored.
        self.intake: Batcher[dict[str, Any], Job | BudgetExceeded] = Batcher(
            partial(write_jobs, db), max_batch=MAX_BATCH_ROWS, retry_alone=row_may_be_at_fault
        )
        # A read fails for all its ids or none: nothing to retry alone.
        self.status: Batcher[uuid.UUID, JobStatusView | None] = Batcher(
            partial(read_job_statuses, db), max_batch=MAX_IN_LIST_BATCH, retry_alone=lambda _exc: False
        )

    async def start(self) -> None:
        await self.intake.start("levqor-intake-batches")
        await self.status.start("levqor-status-batches")

    async def stop(self) -> None:
        await self.intake.stop()  # writes and answers the submits already waiting
        await self.status.stop()


def row_may_be_at_fault(exc: Exception) -> bool:
    """Whether one row may have failed the batch (a constraint, a value the column refuses), rather
    than the database itself (unreachable, locked past the busy timeout, no free connection)."""
    return not isinstance(exc, OperationalError | InterfaceError | PoolTimeout)
