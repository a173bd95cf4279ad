"""Query fields: thin adapters over the same resolvers as the REST routes."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.types import Info

from levqor.resolvers import health, jobs, users
from levqor.schema.budgets import BudgetQuery
from levqor.schema.inputs import JobFilter, as_data
from levqor.schema.job_control import WorkflowQuery
from levqor.schema.keys import KeyQuery
from levqor.schema.overview import OverviewQuery
from levqor.schema.runs import RunQuery
from levqor.schema.schedules import ScheduleQuery
from levqor.schema.types import (
    HealthType,
    JobConnection,
    JobEdge,
    JobType,
    PageInfo,
    PublicMetricsType,
    UserType,
)


@strawberry.type
class Query(KeyQuery, WorkflowQuery, BudgetQuery, ScheduleQuery, RunQuery, OverviewQuery):
    @strawberry.field(description="One job by id (needs `jobs:read`).")
    async def job(self, info: Info[Any, None], id: strawberry.ID) -> JobType | None:
        detail = await jobs.get_job_detail(info.context.levqor, id)
        return JobType.from_row(detail.job)

    @strawberry.field(description="Jobs, newest first, filtered and paginated (needs `jobs:read`).")
    async def jobs(
        self,
        info: Info[Any, None],
        filter: JobFilter | None = None,
        first: int = jobs.DEFAULT_LIST_LIMIT,
        after: str | None = None,
    ) -> JobConnection:
        query = {**as_data(filter), "limit": first}
        if after is not None:
            query["cursor"] = after
        page = await jobs.list_jobs(info.context.levqor, query)
        edges = [JobEdge(node=JobType.from_row(job), cursor=jobs.cursor_of(job)) for job in page.jobs]
        return JobConnection(
            edges=edges,
            page_info=PageInfo(has_next_page=page.next_cursor is not None, end_cursor=page.next_cursor),
        )

    @strawberry.field(description="One user by id.")
    async def user(self, info: Info[Any, None], id: strawberry.ID) -> UserType | None:
        return UserType.from_row(await users.get_user(info.context.levqor, id))

    @strawberry.field(description="One user by email (trimmed, case-insensitive).")
    async def user_by_email(self, info: Info[Any, None], email: str) -> UserType | None:
        return UserType.from_row(await users.get_user_by_email(info.context.levqor, email))

    @strawberry.field(description="Liveness, as GET /health.")
    def health(self) -> HealthType:
        return HealthType(ok=True, ts=health.now_ts())

    @strawberry.field(description="The public metrics, as GET /public/metrics.")
    async def public_metrics(self, info: Info[Any, None]) -> PublicMetricsType:
        metrics = await info.context.public_metrics.get(info.context.levqor)
        return PublicMetricsType(
            uptime_rolling_7d=metrics.uptime_rolling_7d,
            jobs_today=metrics.jobs_today,
            audit_coverage=metrics.audit_coverage,
            last_updated=metrics.last_updated,
        )
