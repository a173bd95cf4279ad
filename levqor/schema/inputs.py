"""GraphQL input types. They only carry data: the resolvers validate it, as they do for REST."""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from levqor.schema.types import CurrencyEnum, JobStatusEnum, PriorityEnum


class BudgetPolicy(enum.Enum):
    REJECT = "reject"
    DEFER = "defer"


BudgetPolicyEnum = strawberry.enum(
    BudgetPolicy,
    name="BudgetPolicy",
    description="What intake does when a budget has no room for a job: refuse it (a "
    "`BUDGET_EXCEEDED` user error), or keep it queued until the budget's next reset.",
)


@strawberry.input(name="SubmitJobInput")
class SubmitJobInput:
    workflow: str
    payload: JSON
    callback_url: str | None = strawberry.UNSET
    priority: PriorityEnum | None = strawberry.UNSET  # type: ignore[valid-type]
    user_id: strawberry.ID | None = strawberry.UNSET
    run_at: datetime | None = strawberry.UNSET
    max_attempts: int | None = strawberry.UNSET
    timeout_s: int | None = strawberry.UNSET
    # As REST's `budget_policy`: `as_data` sends the enum's wire value, "reject" or "defer".
    budget_policy: BudgetPolicyEnum = BudgetPolicy.REJECT  # type: ignore[valid-type]


@strawberry.input(name="JobFilter")
class JobFilter:
    """As the query parameters of GET /api/v1/jobs, combined with AND."""

    status: JobStatusEnum | None = strawberry.UNSET  # type: ignore[valid-type]
    workflow: str | None = strawberry.UNSET
    key_id: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="The managed API key that submitted the job: its id, or `key:<id>`.",
    )
    user_id: strawberry.ID | None = strawberry.UNSET
    created_after: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="Created at or after this time (UTC when it has no offset)."
    )
    created_before: datetime | None = strawberry.field(
        default=strawberry.UNSET, description="Created before this time (UTC when it has no offset)."
    )
    text: str | None = strawberry.field(
        default=strawberry.UNSET,
        description="1 to 200 characters found, ignoring case, in the job's payload or error as JSON text.",
    )


@strawberry.input(name="UpsertUserInput")
class UpsertUserInput:
    email: str
    name: str
    locale: str | None = strawberry.UNSET
    currency: CurrencyEnum | None = strawberry.UNSET  # type: ignore[valid-type]
    meta: JSON | None = strawberry.UNSET


@strawberry.input(name="UpdateUserInput")
class UpdateUserInput:
    name: str | None = strawberry.UNSET
    locale: str | None = strawberry.UNSET
    currency: CurrencyEnum | None = strawberry.UNSET  # type: ignore[valid-type]
    meta: JSON | None = strawberry.UNSET


def as_data(value: Any) -> dict[str, Any]:
    """An input object as the plain mapping the resolvers take: unset fields left out, enums as their
    wire values, datetimes as ISO-8601 (the same form a REST body has)."""
    if value is None or value is strawberry.UNSET:
        return {}
    data: dict[str, Any] = {}
    for field in dataclasses.fields(value):
        item = getattr(value, field.name)
        if item is strawberry.UNSET:
            continue
        if isinstance(item, enum.Enum):
            item = item.value
        elif isinstance(item, datetime):
            item = item.isoformat()
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            item = as_data(item)  # a nested input object
        elif isinstance(item, list):
            item = [_as_value(element) for element in item]
        data[field.name] = item
    return data


def _as_value(item: Any) -> Any:
    """An element of a list field, as `as_data` gives a field."""
    if isinstance(item, enum.Enum):
        return item.value
    if isinstance(item, datetime):
        return item.isoformat()
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return as_data(item)
    return item
