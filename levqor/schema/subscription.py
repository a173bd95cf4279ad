"""Subscription fields: `jobUpdates`, over the same stream as GET /api/v1/jobs/<id>/events/stream
(levqor.resolvers.job_updates)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import strawberry
from graphql import ExecutionResult, GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.scalars import JSON
from strawberry.types import Info
from strawberry.types.graphql import OperationType

from levqor.errors import InvalidRequest
from levqor.resolvers import job_updates
from levqor.schema.types import JobEventType, JobStatusEnum


@strawberry.type(name="JobUpdate", description="A state change or a progress report of one job.")
class JobUpdateType:
    job_id: strawberry.ID
    status: JobStatusEnum = strawberry.field(  # type: ignore[valid-type]
        description="The job's status once the event happened."
    )
    progress: JSON | None = strawberry.field(
        description="The job's last reported progress once the event happened (null: none yet)."
    )
    event: JobEventType = strawberry.field(
        description="What happened: a `progress` event's `detail` is the report itself."
    )

    @classmethod
    def from_update(cls, update: job_updates.JobUpdate) -> JobUpdateType:
        return cls(
            job_id=strawberry.ID(str(update.job_id)),
            status=update.status,
            progress=JSON(update.progress) if update.progress is not None else None,
            event=JobEventType.from_row(update.event),
        )


async def _shaped(stream: job_updates.JobUpdates) -> AsyncIterator[JobUpdateType]:
    # Strawberry closes this generator when the client completes the operation or goes away.
    async with stream:
        async for update in stream:
            yield JobUpdateType.from_update(update)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="The job's current state, then each state change and progress report as it "
        "happens, until the job is terminal (needs `jobs:read`)."
    )
    async def job_updates(self, info: Info[Any, None], id: strawberry.ID) -> AsyncIterator[JobUpdateType]:
        # Opened before anything streams, so a refusal (scope, id, unknown job, per-key cap) is the
        # operation's error rather than an error inside a stream.
        stream = await job_updates.open_job_updates(info.context.levqor, id)
        return _shaped(stream)


SUBSCRIPTIONS_OVER_HTTP = (
    "subscriptions are served over a WebSocket on /graphql (graphql-transport-ws), not over HTTP"
)


class SubscriptionsOverWebSocket(SchemaExtension):
    """Strawberry runs a subscription sent over HTTP as if it were a query, whose answer (a stream)
    cannot be sent: refuse it as the client's mistake instead, before anything runs."""

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        request = getattr(context.context, "request", None)
        over_http = getattr(request, "scope", {}).get("type") == "http"
        if over_http and context.operation_type is OperationType.SUBSCRIPTION:
            refusal = InvalidRequest(SUBSCRIPTIONS_OVER_HTTP)
            # A result set before execution replaces it.
            context.result = ExecutionResult(
                data=None, errors=[GraphQLError(refusal.message, original_error=refusal)]
            )
        yield
