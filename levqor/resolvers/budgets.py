"""Budgets: set, list and remove the spending limits of API keys and users (admin), with what each
has spent and holds in its current period (CONTRACT.md §9)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlmodel import Session, col, select

from levqor.costs.periods import next_reset, period_start
from levqor.db.models import ApiKey, Budget, BudgetPeriod, BudgetSubject, BudgetWindow, User
from levqor.db.types import utcnow
from levqor.errors import FieldCode, InvalidRequest, NotFound
from levqor.resolvers.audit import record_change
from levqor.resolvers.context import Context, Scope
from levqor.resolvers.validation import WHOLE_NUMBER, WorkflowName, keyed_by_workflow, parse_id, parse_input

# Ten million USD: past any real budget, and far inside a BIGINT of micro-dollars.
MAX_MICROS = 10_000_000 * 1_000_000
MAX_WORKFLOW_CAPS = 100

Micros = Annotated[int, Field(ge=0, le=MAX_MICROS), WHOLE_NUMBER]


class BudgetInput(BaseModel):
    """A budget as an admin sets it: every field is replaced (PUT)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    period: Annotated[BudgetPeriod, Field(strict=False)]
    limit_micros: Micros
    soft_limit_micros: Micros | None = None
    max_job_micros: Micros | None = None
    workflow_max_job_micros: Annotated[
        dict[WorkflowName, Micros],
        Field(max_length=MAX_WORKFLOW_CAPS, json_schema_extra=keyed_by_workflow),
    ] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _soft_below_hard(self) -> BudgetInput:
        if self.soft_limit_micros is not None and self.soft_limit_micros > self.limit_micros:
            raise ValueError("soft_limit_micros must not be more than limit_micros")
        return self


@dataclass(frozen=True, slots=True)
class BudgetView:
    """A budget with its current period's figures."""

    budget: Budget
    period_start: datetime
    resets_at: datetime | None
    spent_micros: int
    reserved_micros: int
    soft_limit_crossed: bool

    @property
    def remaining_micros(self) -> int:
        return max(0, self.budget.limit_micros - self.spent_micros - self.reserved_micros)


def parse_subject(kind: str) -> BudgetSubject:
    try:
        return BudgetSubject(kind)
    except ValueError:
        raise InvalidRequest.for_field("subject", "must be 'key' or 'user'", FieldCode.INVALID) from None


def _view(session: Session, budget: Budget, now: datetime) -> BudgetView:
    start = period_start(budget.period, now)
    window = session.get(BudgetWindow, (budget.id, start))
    return BudgetView(
        budget=budget,
        period_start=start,
        resets_at=next_reset(budget.period, now),
        spent_micros=window.spent_micros if window else 0,
        reserved_micros=window.reserved_micros if window else 0,
        soft_limit_crossed=window is not None and window.soft_alerted_at is not None,
    )


def _check_subject(session: Session, kind: BudgetSubject, subject_id: uuid.UUID) -> None:
    model: type[ApiKey] | type[User] = ApiKey if kind is BudgetSubject.KEY else User
    if session.get(model, subject_id) is None:
        what = "API key" if kind is BudgetSubject.KEY else "user"
        raise NotFound(f"no {what} with id '{subject_id}'")


async def set_budget(ctx: Context, kind: str, subject_id: str | uuid.UUID, data: Any) -> BudgetView:
    """Create or replace the budget of one key or user. Its spending so far stays: the counters
    belong to the budget's periods, so a new limit applies to what was already spent."""
    ctx.principal.require(Scope.ADMIN)
    subject = parse_subject(kind)
    key = parse_id(subject_id, kind="API key" if subject is BudgetSubject.KEY else "user")
    fields = parse_input(BudgetInput, data)

    def run(session: Session) -> BudgetView:
        _check_subject(session, subject, key)
        now = utcnow()
        budget = session.exec(
            select(Budget).where(Budget.subject_kind == subject.value, Budget.subject_id == key)
        ).first()
        if budget is None:
            budget = Budget(
                subject_kind=subject.value, subject_id=key, period=fields.period.value, limit_micros=0
            )
            budget.created_at = now
        budget.period = fields.period.value
        budget.limit_micros = fields.limit_micros
        budget.soft_limit_micros = fields.soft_limit_micros
        budget.max_job_micros = fields.max_job_micros
        budget.workflow_max_job_micros = dict(fields.workflow_max_job_micros)
        budget.updated_at = now
        session.add(budget)
        session.flush()
        record_change(
            session,
            ctx.principal,
            "budget.set",
            "budget",
            budget.id,
            {"subject": f"{subject.value}:{key}", **fields.model_dump(mode="json")},
        )
        return _view(session, budget, now)

    return await ctx.db.write(run)


async def delete_budget(ctx: Context, kind: str, subject_id: str | uuid.UUID) -> BudgetView:
    """Remove a budget: jobs it held for settle as before, against windows no limit reads any more.
    The answer is the budget as it was, with its current period's figures."""
    ctx.principal.require(Scope.ADMIN)
    subject = parse_subject(kind)
    key = parse_id(subject_id, kind="API key" if subject is BudgetSubject.KEY else "user")

    def run(session: Session) -> BudgetView:
        budget = session.exec(
            select(Budget).where(Budget.subject_kind == subject.value, Budget.subject_id == key)
        ).first()
        if budget is None:
            raise NotFound(
                f"no budget for the {'API key' if subject is BudgetSubject.KEY else 'user'} '{key}'"
            )
        view = _view(session, budget, utcnow())
        session.delete(budget)
        record_change(
            session,
            ctx.principal,
            "budget.deleted",
            "budget",
            budget.id,
            {"subject": f"{subject.value}:{key}"},
        )
        return view

    return await ctx.db.write(run)


async def list_budgets(ctx: Context) -> list[BudgetView]:
    ctx.principal.require(Scope.ADMIN)

    def run(session: Session) -> list[BudgetView]:
        now = utcnow()
        budgets = session.exec(select(Budget).order_by(col(Budget.subject_kind), col(Budget.created_at)))
        return [_view(session, budget, now) for budget in budgets]

    return await ctx.db.read(run)
