"""REST adapters for budgets and usage (CONTRACT.md §9): GET /api/v1/budgets, PUT and DELETE
/api/v1/budgets/keys/<key_id> and /api/v1/budgets/users/<user_id> (admin), GET /api/v1/usage.

Money is integer USD micro-dollars (1 USD = 1000000) in every field named `..._micros`."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from levqor.db.models import BudgetSubject
from levqor.http.context import context_for
from levqor.resolvers import budgets, usage
from levqor.resolvers.budgets import BudgetView
from levqor.resolvers.context import Scope
from levqor.resolvers.usage import UsageReport, UsageRow
from levqor.rest.body import read_json
from levqor.rest.routing import ApiPath, ApiRoute, Operation, api_paths, json_response
from levqor.rest.shapes import ErrorBody


class BudgetBody(BaseModel):
    """A budget with its current period's figures; timestamps in ISO-8601 UTC."""

    id: str
    subject: str = Field(description="`key` or `user`.")
    subject_id: str
    period: str = Field(description="`day` and `month` are UTC calendar periods; `total` never resets.")
    limit_micros: int
    soft_limit_micros: int | None = Field(description="Passing it only alerts, once per period.")
    max_job_micros: int | None = Field(description="The most one job may be estimated at.")
    workflow_max_job_micros: dict[str, int] = Field(
        description="The most one job of each named workflow may be estimated at."
    )
    period_start: datetime
    resets_at: datetime | None = Field(description="When the current period ends; null for `total`.")
    spent_micros: int = Field(description="The actual cost of this period's finished jobs.")
    reserved_micros: int = Field(description="The estimates held for this period's unfinished jobs.")
    remaining_micros: int = Field(description="limit - spent - reserved, never below 0.")
    soft_limit_crossed: bool
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_view(cls, view: BudgetView) -> BudgetBody:
        budget = view.budget
        return cls(
            id=str(budget.id),
            subject=budget.subject_kind,
            subject_id=str(budget.subject_id),
            period=budget.period,
            limit_micros=budget.limit_micros,
            soft_limit_micros=budget.soft_limit_micros,
            max_job_micros=budget.max_job_micros,
            workflow_max_job_micros=dict(budget.workflow_max_job_micros or {}),
            period_start=view.period_start,
            resets_at=view.resets_at,
            spent_micros=view.spent_micros,
            reserved_micros=view.reserved_micros,
            remaining_micros=view.remaining_micros,
            soft_limit_crossed=view.soft_limit_crossed,
            created_at=budget.created_at,
            updated_at=budget.updated_at,
        )


class BudgetList(BaseModel):
    """Every budget, keys' first."""

    budgets: list[BudgetBody]


class UsageRowBody(BaseModel):
    """One group's jobs, outcomes, money and tokens."""

    group: str | None = Field(
        description="The UTC day (YYYY-MM-DD), workflow, key id or user id; null: jobs of no managed "
        "key, or of no user."
    )
    jobs: int
    succeeded: int
    failed: int
    cancelled: int
    spent_micros: int
    reserved_micros: int = Field(description="Held for the group's unfinished jobs.")
    estimated_micros: int = Field(description="The sum of the group's jobs' estimates.")
    tokens: int = Field(description="prompt_tokens + completion_tokens.")
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    reasoning_tokens: int

    @classmethod
    def from_row(cls, row: UsageRow) -> UsageRowBody:
        return cls(
            group=row.group,
            jobs=row.jobs,
            succeeded=row.succeeded,
            failed=row.failed,
            cancelled=row.cancelled,
            spent_micros=row.spent_micros,
            reserved_micros=row.reserved_micros,
            estimated_micros=row.estimated_micros,
            tokens=row.tokens,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            cached_tokens=row.cached_tokens,
            reasoning_tokens=row.reasoning_tokens,
        )


class UsageBody(BaseModel):
    """Usage from `from` to `to` (UTC days, both included), each job counted on the day it was
    submitted."""

    model_config = ConfigDict(serialize_by_alias=True, validate_by_name=True)

    from_: date = Field(alias="from")
    to: date
    group_by: str
    usage: list[UsageRowBody]

    @classmethod
    def from_report(cls, report: UsageReport) -> UsageBody:
        return cls.model_validate(
            {
                "from": report.start,
                "to": report.end,
                "group_by": report.group_by.value,
                "usage": [UsageRowBody.from_row(row) for row in report.rows],
            }
        )


async def list_budgets(request: Request) -> Response:
    views = await budgets.list_budgets(context_for(request))
    return json_response(BudgetList(budgets=[BudgetBody.from_view(view) for view in views]))


def _subject_routes(kind: BudgetSubject, param: str) -> list[ApiRoute]:
    path = f"/api/v1/budgets/{kind.value}s/{{{param}}}"
    whose = "an API key" if kind is BudgetSubject.KEY else "a user"

    async def put(request: Request) -> Response:
        view = await budgets.set_budget(
            context_for(request), kind.value, request.path_params[param], await read_json(request)
        )
        return json_response(BudgetBody.from_view(view))

    async def delete(request: Request) -> Response:
        view = await budgets.delete_budget(context_for(request), kind.value, request.path_params[param])
        return json_response(BudgetBody.from_view(view))

    errors: dict[int, type[BaseModel] | None] = {
        401: ErrorBody,
        403: ErrorBody,
        404: ErrorBody,
        429: ErrorBody,
    }
    return [
        ApiRoute(
            "PUT",
            path,
            put,
            Operation(
                f"Set the budget of {whose}, replacing every field of the one it had; what was "
                "already spent in the period counts against the new limit",
                {200: BudgetBody, 400: ErrorBody, 413: ErrorBody, 415: ErrorBody, **errors},
                "budgets",
                body=budgets.BudgetInput,
                scope=Scope.ADMIN,
            ),
        ),
        ApiRoute(
            "DELETE",
            path,
            delete,
            Operation(
                f"Remove the budget of {whose}", {200: BudgetBody, **errors}, "budgets", scope=Scope.ADMIN
            ),
        ),
    ]


async def get_usage(request: Request) -> Response:
    report = await usage.get_usage(context_for(request), dict(request.query_params))
    return json_response(UsageBody.from_report(report))


def routes() -> list[ApiPath]:
    errors: dict[int, type[BaseModel] | None] = {401: ErrorBody, 403: ErrorBody, 429: ErrorBody}
    return api_paths(
        [
            ApiRoute(
                "GET",
                "/api/v1/budgets",
                list_budgets,
                Operation("List budgets", {200: BudgetList, **errors}, "budgets", scope=Scope.ADMIN),
            ),
            *_subject_routes(BudgetSubject.KEY, "key_id"),
            *_subject_routes(BudgetSubject.USER, "user_id"),
            ApiRoute(
                "GET",
                "/api/v1/usage",
                get_usage,
                Operation(
                    "Usage grouped by day, workflow, key or user; a key without `admin` sees the jobs "
                    "it submitted, an admin every job",
                    {200: UsageBody, 400: ErrorBody, **errors},
                    "budgets",
                    query=usage.UsageInput,
                    scope=Scope.JOBS_READ,
                ),
            ),
        ]
    )
