"""Which jobs a claim may take: one condition for the claim itself and for the wake-up's look before
it (levqor/queue/wakeup.py), so the two never disagree about what is claimable."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime

from sqlalchemy import ColumnElement, Table, and_, text
from sqlmodel import SQLModel

from levqor.db.models import CLAIMABLE_WHERE, LIMITED_QUEUED_WHERE, Job

JOBS: Table = SQLModel.metadata.tables[Job.__tablename__]

# The predicate of the partial index `ix_jobs_claimable`, written as a literal: a planner can use a
# partial index only where the query's WHERE implies the index's, which a bound parameter cannot
# show (PostgreSQL's generic plans, SQLite's planner).
CLAIMABLE = text(CLAIMABLE_WHERE)
LIMITED_QUEUED = text(LIMITED_QUEUED_WHERE)


def claimable(workflows: Collection[str] | None, now: datetime) -> ColumnElement[bool]:
    """Queued, with its `run_at` come, and of one of `workflows` (None: any workflow)."""
    c = JOBS.c
    condition = and_(CLAIMABLE, c.run_at <= now)
    if workflows is not None:
        condition = and_(condition, c.workflow.in_(list(workflows)))
    return condition


def limited_claimable(workflows: Collection[str] | None, now: datetime) -> ColumnElement[bool]:
    """As `claimable`, for the jobs under a concurrency limit (levqor/queue/limits.py), whether or
    not their limit has room."""
    c = JOBS.c
    condition = and_(LIMITED_QUEUED, c.run_at <= now)
    if workflows is not None:
        condition = and_(condition, c.workflow.in_(list(workflows)))
    return condition
