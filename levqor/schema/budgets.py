"""GraphQL for budgets and usage (CONTRACT.md §9): the `budgets` and `usage` queries and the
`setBudget` / `deleteBudget` mutations, thin adapters over `levqor.resolvers.budgets` and
`levqor.resolvers.usage` like the REST routes under /api/v1/budgets and /api/v1/usage."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info

from levqor.db.models import BudgetPeriod, BudgetSubject
from levqor.resolvers import budgets, usage
from levqor.resolvers.budgets import BudgetView
from levqor.resolvers.usage import UsageGroup
from levqor.schema.errors import with_user_errors
from levqor.schema.inputs import as_data
from levqor.schema.scalars import Long, Micros, optional_micros
from levqor.schema.types import UserError

BudgetSubjectEnum = strawberry.enum(
    BudgetSubject, name="BudgetSubject", description="Whose budget: an API key's or a user's."
)
BudgetPeriodEnum = strawberry.enum(
    BudgetPeriod,
    name="BudgetPeriod",
    description="DAY and MONTH are UTC calendar periods; TOTAL never resets.",
)
UsageGroupEnum = strawberry.enum(UsageGroup, name="UsageGroup", description="How usage is grouped.")


@strawberry.type(name="Budget", description="A spending limit with its current period's figures.")
class BudgetType:
    id: strawberry.ID
    subject: BudgetSubjectEnum  # type: ignore[valid-type]
    subject_id: strawberry.ID
    period: BudgetPeriodEnum  # type: ignore[valid-type]
    limit_micros: Micros
    soft_limit_micros: Micros | None = strawberry.field(
        description="Passing it only alerts, once per period."
    )
    max_job_micros: Micros | None = strawberry.field(description="The most one job may be estimated at.")
    workflow_max_job_micros: JSON = strawberry.field(
        description="The most one job of each named workflow may be estimated at: "
        "`{workflow: micro-dollars}`."
    )
    period_start: datetime
    resets_at: datetime | None = strawberry.field(description="When the current period ends; null for TOTAL.")
    spent_micros: Micros = strawberry.field(description="The actual cost of this period's finished jobs.")
    reserved_micros: Micros = strawberry.field(
        description="The estimates held for this period's unfinished jobs."
    )
    remaining_micros: Micros = strawberry.field(description="limit - spent - reserved, never below 0.")
    soft_limit_crossed: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_view(cls, view: BudgetView) -> BudgetType:
        budget = view.budget
        return cls(
            id=strawberry.ID(str(budget.id)),
            subject=BudgetSubject(budget.subject_kind),
            subject_id=strawberry.ID(str(budget.subject_id)),
            period=BudgetPeriod(budget.period),
            limit_micros=Micros(budget.limit_micros),
            soft_limit_micros=optional_micros(budget.soft_limit_micros),
            max_job_micros=optional_micros(budget.max_job_micros),
            workflow_max_job_micros=JSON(dict(budget.workflow_max_job_micros or {})),
            period_start=view.period_start,
            resets_at=view.resets_at,
            spent_micros=Micros(view.spent_micros),
            reserved_micros=Micros(view.reserved_micros),
            remaining_micros=Micros(view.remaining_micros),
            soft_limit_crossed=view.soft_limit_crossed,
            created_at=budget.created_at,
            updated_at=budget.updated_at,
        )


@strawberry.type(name="UsageRow", description="One group's jobs, outcomes, money and tokens.")
class UsageRowType:
    group: str | None = strawberry.field(
        description="The UTC day (YYYY-MM-DD), workflow, key id or user id; null: jobs of no managed "
        "key, or of no user."
    )
    jobs: int
    succeeded: int
    failed: int
    cancelled: int
    spent_micros: Micros
    reserved_micros: Micros = strawberry.field(description="Held for the group's unfinished jobs.")
    estimated_micros: Micros = strawberry.field(description="The sum of the group's jobs' estimates.")
    tokens: Long = strawberry.field(description="promptTokens + completionTokens.")
    prompt_tokens: Long
    completion_tokens: Long
    cached_tokens: Long
    reasoning_tokens: Long

    @classmethod
    def from_row(cls, row: usage.UsageRow) -> UsageRowType:
        return cls(
            group=row.group,
            jobs=row.jobs,
            succeeded=row.succeeded,
            failed=row.failed,
            cancelled=row.cancelled,
            spent_micros=Micros(row.spent_micros),
            reserved_micros=Micros(row.reserved_micros),
            estimated_micros=Micros(row.estimated_micros),
            tokens=Long(row.tokens),
            prompt_tokens=Long(row.prompt_tokens),
            completion_tokens=Long(row.completion_tokens),
            cached_tokens=Long(row.cached_tokens),
            reasoning_tokens=Long(row.reasoning_tokens),
        )


@strawberry.type(
    name="UsageReport",
    description="Usage from `from` to `to` (UTC days, both included), each job counted on the day it "
    "was submitted.",
)
class UsageReportType:
    from_: date = strawberry.field(name="from")
    to: date
    group_by: UsageGroupEnum  # type: ignore[valid-type]
    rows: list[UsageRowType]


@strawberry.input(name="SetBudgetInput", description="Every field of the budget is replaced.")
class SetBudgetInput:
    subject: BudgetSubjectEnum  # type: ignore[valid-type]
    subject_id: strawberry.ID
    period: BudgetPeriodEnum  # type: ignore[valid-type]
    limit_micros: Micros
    soft_limit_micros: Micros | None = strawberry.UNSET
    max_job_micros: Micros | None = strawberry.UNSET
    workflow_max_job_micros: JSON | None = strawberry.field(
        default=strawberry.UNSET, description="`{workflow: micro-dollars}`: a cap per job of each workflow."
    )


@strawberry.type
class SetBudgetPayload:
    budget: BudgetType | None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class DeleteBudgetPayload:
    budget: BudgetType | None = strawberry.field(description="The budget as it was.")
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.type
class BudgetQuery:
    @strawberry.field(description="Every budget, keys' first (needs `admin`), as GET /api/v1/budgets.")
    async def budgets(self, info: Info[Any, None]) -> list[BudgetType]:
        return [BudgetType.from_view(view) for view in await budgets.list_budgets(info.context.levqor)]

    @strawberry.field(
        description="Usage, as GET /api/v1/usage (needs `jobs:read`): a key without `admin` sees the "
        "jobs it submitted, an admin every job. The last 30 days by default."
    )
    async def usage(
        self,
        info: Info[Any, None],
        from_: Annotated[date | None, strawberry.argument(name="from")] = None,
        to: date | None = None,
        group_by: UsageGroupEnum = UsageGroup.DAY,  # type: ignore[valid-type]
        key_id: strawberry.ID | None = None,
        user_id: strawberry.ID | None = None,
    ) -> UsageReportType:
        query: dict[str, Any] = {"group_by": UsageGroup(group_by).value}
        for name, value in (("from", from_), ("to", to), ("key_id", key_id), ("user_id", user_id)):
            if value is not None:
                query[name] = value.isoformat() if isinstance(value, date) else str(value)
        report = await usage.get_usage(info.context.levqor, query)
        return UsageReportType(
            from_=report.start,
            to=report.end,
            group_by=report.group_by,
            rows=[UsageRowType.from_row(row) for row in report.rows],
        )


@strawberry.type
class BudgetMutation:
    @strawberry.mutation(
        description="Set the budget of an API key or a user (needs `admin`), as PUT "
        "/api/v1/budgets/keys/<id> or /users/<id>."
    )
    async def set_budget(self, info: Info[Any, None], input: SetBudgetInput) -> SetBudgetPayload:
        async def call() -> SetBudgetPayload:
            data = as_data(input)
            subject, subject_id = data.pop("subject"), data.pop("subject_id")
            view = await budgets.set_budget(info.context.levqor, subject, subject_id, data)
            return SetBudgetPayload(budget=BudgetType.from_view(view))

        return await with_user_errors(call, lambda errors: SetBudgetPayload(budget=None, user_errors=errors))

    @strawberry.mutation(description="Remove the budget of an API key or a user (needs `admin`).")
    async def delete_budget(
        self,
        info: Info[Any, None],
        subject: BudgetSubjectEnum,  # type: ignore[valid-type]
        subject_id: strawberry.ID,
    ) -> DeleteBudgetPayload:
        async def call() -> DeleteBudgetPayload:
            view = await budgets.delete_budget(info.context.levqor, BudgetSubject(subject).value, subject_id)
            return DeleteBudgetPayload(budget=BudgetType.from_view(view))

        return await with_user_errors(
            call, lambda errors: DeleteBudgetPayload(budget=None, user_errors=errors)
        )
