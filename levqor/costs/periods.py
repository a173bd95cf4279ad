"""Budget periods: UTC calendar days and months, and `total`, which never resets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from levqor.db.models import BudgetPeriod

# The one window of a `total` budget.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def period_start(period: BudgetPeriod | str, at: datetime) -> datetime:
    """The first instant of the period holding `at`."""
    at = at.astimezone(UTC)
    match BudgetPeriod(period):
        case BudgetPeriod.DAY:
            return at.replace(hour=0, minute=0, second=0, microsecond=0)
        case BudgetPeriod.MONTH:
            return at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        case BudgetPeriod.TOTAL:
            return EPOCH


def next_reset(period: BudgetPeriod | str, at: datetime) -> datetime | None:
    """When the period holding `at` ends and the next begins (None: a `total` budget never resets)."""
    start = period_start(period, at)
    match BudgetPeriod(period):
        case BudgetPeriod.DAY:
            return start + timedelta(days=1)
        case BudgetPeriod.MONTH:
            return (
                start.replace(year=start.year + 1, month=1)
                if start.month == 12
                else start.replace(month=start.month + 1)
            )
        case BudgetPeriod.TOTAL:
            return None
