"""Reservations and settlements: the budgets' side of a job's life (CONTRACT.md §9).

Intake reserves a job's estimate against every budget that applies (its key's, its user's) in the
transaction that stores the job: each budget's window for the period is read under its row lock
(`FOR UPDATE` on PostgreSQL; SQLite's IMMEDIATE transaction holds the whole database), the jobs of
the batch are admitted in order while spent + reserved + estimate stays within the limit, and each
window is written back once. Concurrent submits through any number of processes therefore see each
other's holds, and never admit more than the limit. A job that does not fit is refused, or, with
`budget_policy: defer`, reserved in the first later period it fits, with its `run_at` at that
period's start.

The reservation holds across retries. When the job reaches its terminal state, in that same
transaction, every hold is settled once to the job's actual cost (the sum of what its attempts
reported): the window's `reserved` drops by the hold and `spent` grows by the cost. Each reserve and
settle is a ledger row (`cost_ledger`, unique per job, budget and kind), so a window's counters are
the sums of its entries (`rebuild_windows`).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, literal_column, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, SQLModel

from levqor.costs.periods import next_reset, period_start
from levqor.db.bulk import BulkInsert, BulkStatement
from levqor.db.models import (
    Budget,
    BudgetPeriod,
    BudgetSubject,
    BudgetWindow,
    CostEntry,
    Job,
    LedgerKind,
)
from levqor.db.principals import managed_key_id
from levqor.errors import BudgetExceeded

logger = logging.getLogger("levqor.budgets")

BUDGETS: Table = SQLModel.metadata.tables[Budget.__tablename__]
WINDOWS: Table = SQLModel.metadata.tables[BudgetWindow.__tablename__]
LEDGER: Table = SQLModel.metadata.tables[CostEntry.__tablename__]
JOBS: Table = SQLModel.metadata.tables[Job.__tablename__]

# How many later periods a deferred job may look through for one it fits in.
MAX_DEFER_PERIODS = 24

_LEDGER_COLUMNS = (
    "job_id",
    "budget_id",
    "hold",
    "period_start",
    "kind",
    "reserved_delta_micros",
    "spent_delta_micros",
    "at",
)
_INSERT_ENTRIES = BulkInsert(LEDGER, _LEDGER_COLUMNS)
_WRITE_WINDOW = BulkStatement(
    update(WINDOWS)
    .where(WINDOWS.c.budget_id == bindparam("w_budget"), WINDOWS.c.period_start == bindparam("w_start"))
    .values(
        spent_micros=bindparam("w_spent"),
        reserved_micros=bindparam("w_reserved"),
        soft_alerted_at=bindparam("w_alerted", type_=WINDOWS.c.soft_alerted_at.type),
    ),
    ("w_budget", "w_start", "w_spent", "w_reserved", "w_alerted"),
)
_SETTLE_WINDOW = BulkStatement(
    update(WINDOWS)
    .where(WINDOWS.c.budget_id == bindparam("w_budget"), WINDOWS.c.period_start == bindparam("w_start"))
    .values(
        spent_micros=WINDOWS.c.spent_micros + bindparam("w_spent"),
        reserved_micros=WINDOWS.c.reserved_micros - bindparam("w_released"),
    ),
    ("w_budget", "w_start", "w_spent", "w_released"),
)


@dataclass(frozen=True, slots=True)
class Ask:
    """What one job asks of the budgets at intake."""

    job_id: uuid.UUID
    workflow: str
    estimate_micros: int  # 0 when the workflow has no cost model
    key_id: uuid.UUID | None  # the managed key submitting it
    user_id: uuid.UUID | None
    run_at: datetime  # when it would run (now, or later when it asked for a later time)
    defer: bool = False  # `budget_policy: defer`
    hold: int = 1  # the job's first hold, or the next one for a retry


@dataclass(frozen=True, slots=True)
class Grant:
    """A job admitted: what its budgets hold for it (None: no budget applies) and, when it was
    deferred, when it may run and why."""

    reserved_micros: int | None = None
    run_at: datetime | None = None
    defer_reason: str | None = None


NO_BUDGET = Grant()


def subject_name(kind: str, subject_id: uuid.UUID) -> str:
    return f"the {'API key' if kind == BudgetSubject.KEY else 'user'} {subject_id}"


def refusal(
    budget: Any, *, estimate: int, remaining: int, message: str, resets_at: datetime | None
) -> BudgetExceeded:
    """402 `budget_exceeded`, naming the budget and what remains of it."""
    detail = {
        "field": "budget",
        "code": "budget_exceeded",
        "message": message,
        "budget_id": str(budget.id),
        "subject": budget.subject_kind,
        "subject_id": str(budget.subject_id),
        "period": budget.period,
        "limit_micros": budget.limit_micros,
        "remaining_micros": remaining,
        "estimate_micros": estimate,
        "resets_at": None if resets_at is None else resets_at.isoformat().replace("+00:00", "Z"),
    }
    return BudgetExceeded(message, details=[detail])


@dataclass(slots=True)
class _Window:
    spent: int
    reserved: int
    alerted_at: datetime | None
    changed: bool = False


@dataclass(slots=True)
class _Windows:
    """The windows one transaction has locked, with their counters as this transaction changes them."""

    session: Session
    by_key: dict[tuple[uuid.UUID, datetime], _Window] = field(default_factory=dict)

    def lock(self, keys: set[tuple[uuid.UUID, datetime]]) -> None:
        """Make sure the windows exist and hold their row locks, in one order (budget, then period)
        so that two transactions locking the same windows cannot deadlock."""
        missing = sorted(key for key in keys if key not in self.by_key)
        if not missing:
            return
        rows = [
            {"budget_id": budget, "period_start": start, "spent_micros": 0, "reserved_micros": 0}
            for budget, start in missing
        ]
        dialect = self.session.get_bind().dialect.name
        insert = pg_insert(WINDOWS) if dialect == "postgresql" else sqlite_insert(WINDOWS)
        self.session.execute(insert.on_conflict_do_nothing(), rows)
        found = self.session.execute(
            select(WINDOWS)
            .where(tuple_(WINDOWS.c.budget_id, WINDOWS.c.period_start).in_(missing))
            .order_by(WINDOWS.c.budget_id, WINDOWS.c.period_start)
            .with_for_update()
        )
        for row in found:
            self.by_key[(row.budget_id, row.period_start)] = _Window(
                row.spent_micros, row.reserved_micros, row.soft_alerted_at
            )

    def get(self, budget_id: uuid.UUID, start: datetime) -> _Window:
        key = (budget_id, start)
        if key not in self.by_key:
            self.lock({key})
        return self.by_key[key]

    def write(self) -> None:
        changed = [
            {
                "w_budget": budget,
                "w_start": start,
                "w_spent": window.spent,
                "w_reserved": window.reserved,
                "w_alerted": window.alerted_at,
            }
            for (budget, start), window in sorted(self.by_key.items())
            if window.changed
        ]
        if changed:
            _WRITE_WINDOW.execute(self.session, changed)


def budgets_for(session: Session, asks: Sequence[Ask]) -> dict[tuple[str, uuid.UUID], Any]:
    """The budgets of the asks' keys and users, by (kind, subject id): one read."""
    keys = {ask.key_id for ask in asks if ask.key_id is not None}
    users = {ask.user_id for ask in asks if ask.user_id is not None}
    if not keys and not users:
        return {}
    conditions = []
    if keys:
        conditions.append(
            and_(BUDGETS.c.subject_kind == BudgetSubject.KEY.value, BUDGETS.c.subject_id.in_(keys))
        )
    if users:
        conditions.append(
            and_(BUDGETS.c.subject_kind == BudgetSubject.USER.value, BUDGETS.c.subject_id.in_(users))
        )
    rows = session.execute(select(BUDGETS).where(or_(*conditions)))
    return {(row.subject_kind, row.subject_id): row for row in rows}


def _applicable(ask: Ask, budgets: dict[tuple[str, uuid.UUID], Any]) -> list[Any]:
    found = []
    if ask.key_id is not None and (budget := budgets.get((BudgetSubject.KEY.value, ask.key_id))):
        found.append(budget)
    if ask.user_id is not None and (budget := budgets.get((BudgetSubject.USER.value, ask.user_id))):
        found.append(budget)
    return found


def reserve(session: Session, asks: Sequence[Ask], now: datetime) -> list[Grant | BudgetExceeded]:
    """Reserve each ask's estimate against its budgets, in order; for each, its grant or its refusal.
    Nothing is written for a refused ask (the caller does not store that job)."""
    budgets = budgets_for(session, asks)
    if not budgets:
        return [NO_BUDGET] * len(asks)
    applicable = [_applicable(ask, budgets) for ask in asks]
    windows = _Windows(session)
    windows.lock(
        {
            (budget.id, period_start(budget.period, ask.run_at))
            for ask, found in zip(asks, applicable, strict=True)
            for budget in found
        }
    )
    entries: list[dict[str, Any]] = []
    results: list[Grant | BudgetExceeded] = []
    for ask, found in zip(asks, applicable, strict=True):
        results.append(_reserve_one(ask, found, windows, entries, now) if found else NO_BUDGET)
    windows.write()
    if entries:
        _INSERT_ENTRIES.execute(session, entries)
    return results


def _cap_refusal(ask: Ask, budget: Any) -> BudgetExceeded | None:
    """A job whose estimate alone is past a cap, or past the whole limit, can never run."""
    estimate = ask.estimate_micros
    caps = [("the limit", budget.limit_micros)]
    if budget.max_job_micros is not None:
        caps.append(("the most one job may be estimated at", budget.max_job_micros))
    workflow_cap = (budget.workflow_max_job_micros or {}).get(ask.workflow)
    if workflow_cap is not None:
        caps.append((f"the most one '{ask.workflow}' job may be estimated at", workflow_cap))
    for what, cap in caps:
        if estimate > cap:
            whose = subject_name(budget.subject_kind, budget.subject_id)
            message = (
                f"budget exceeded: this job is estimated at {estimate} micro-USD, more than {what} "
                f"({cap}) of the {budget.period} budget of {whose}"
            )
            return refusal(budget, estimate=estimate, remaining=cap, message=message, resets_at=None)
    return None


def _reserve_one(
    ask: Ask, budgets: list[Any], windows: _Windows, entries: list[dict[str, Any]], now: datetime
) -> Grant | BudgetExceeded:
    for budget in budgets:
        if (refused := _cap_refusal(ask, budget)) is not None:
            return refused
    estimate = ask.estimate_micros
    at = ask.run_at
    deferred_by: Any = None
    for _ in range(MAX_DEFER_PERIODS + 1):
        blocking = None
        for budget in budgets:
            window = windows.get(budget.id, period_start(budget.period, at))
            if window.spent + window.reserved + estimate > budget.limit_micros:
                blocking = (budget, window)
                break
        if blocking is None:
            return _hold(ask, budgets, windows, entries, at, deferred_by, now)
        budget, window = blocking
        resets_at = next_reset(budget.period, at)
        if not ask.defer or resets_at is None:
            remaining = max(0, budget.limit_micros - window.spent - window.reserved)
            message = (
                f"budget exceeded: the {budget.period} budget of "
                f"{subject_name(budget.subject_kind, budget.subject_id)} has {remaining} of "
                f"{budget.limit_micros} micro-USD left, and this job is estimated at {estimate}"
            )
            return refusal(
                budget, estimate=estimate, remaining=remaining, message=message, resets_at=resets_at
            )
        deferred_by, at = budget, resets_at
    message = (
        f"budget exceeded: no {deferred_by.period} in the next {MAX_DEFER_PERIODS} has room for this job"
    )
    return refusal(deferred_by, estimate=estimate, remaining=0, message=message, resets_at=None)


def _hold(
    ask: Ask,
    budgets: list[Any],
    windows: _Windows,
    entries: list[dict[str, Any]],
    at: datetime,
    deferred_by: Any,
    now: datetime,
) -> Grant:
    for budget in budgets:
        start = period_start(budget.period, at)
        window = windows.get(budget.id, start)
        window.reserved += ask.estimate_micros
        window.changed = True
        _check_soft_limit(budget, start, window, now)
        entries.append(
            {
                "job_id": ask.job_id,
                "budget_id": budget.id,
                "hold": ask.hold,
                "period_start": start,
                "kind": LedgerKind.RESERVE.value,
                "reserved_delta_micros": ask.estimate_micros,
                "spent_delta_micros": 0,
                "at": now,
            }
        )
    if deferred_by is None:
        return Grant(reserved_micros=ask.estimate_micros)
    reason = (
        f"waiting for the {deferred_by.period} budget of "
        f"{subject_name(deferred_by.subject_kind, deferred_by.subject_id)} to reset at "
        f"{at.isoformat().replace('+00:00', 'Z')}"
    )
    return Grant(reserved_micros=ask.estimate_micros, run_at=at, defer_reason=reason)


def _check_soft_limit(budget: Any, start: datetime, window: _Window, now: datetime) -> None:
    """Log and record the first time in a period that a budget's use passes its soft limit."""
    soft = budget.soft_limit_micros
    if soft is None or window.alerted_at is not None or window.spent + window.reserved <= soft:
        return
    window.alerted_at = now
    window.changed = True
    logger.warning(
        "budget soft limit crossed",
        extra={
            "budget_id": str(budget.id),
            "subject": budget.subject_kind,
            "subject_id": str(budget.subject_id),
            "period": budget.period,
            "period_start": start.isoformat(),
            "soft_limit_micros": soft,
            "used_micros": window.spent + window.reserved,
        },
    )


def settle(session: Session, job_ids: Sequence[uuid.UUID], now: datetime) -> int:
    """Settle the open holds of `job_ids` (jobs that reached their terminal state in this
    transaction): each hold is released, and what the job cost since its last settlement is spent in
    the hold's window. A hold already settled is left alone. How many holds were settled."""
    if not job_ids:
        return 0
    ids = list(job_ids)
    entries = session.execute(
        select(
            LEDGER.c.job_id,
            LEDGER.c.budget_id,
            LEDGER.c.hold,
            LEDGER.c.period_start,
            LEDGER.c.kind,
            LEDGER.c.reserved_delta_micros,
        ).where(LEDGER.c.job_id.in_(ids))
    ).all()
    settled = {
        (row.job_id, row.budget_id, row.hold) for row in entries if row.kind == LedgerKind.SETTLE.value
    }
    holds = [
        row
        for row in entries
        if row.kind == LedgerKind.RESERVE.value and (row.job_id, row.budget_id, row.hold) not in settled
    ]
    if not holds:
        return 0
    j = JOBS.c
    costs = {
        row.id: max(0, (row.cost_actual_micros or 0) - (row.settled_micros or 0))
        for row in session.execute(
            select(j.id, j.cost_actual_micros, j.settled_micros).where(
                j.id.in_({row.job_id for row in holds})
            )
        )
    }
    by_window: dict[tuple[uuid.UUID, datetime], list[int]] = defaultdict(lambda: [0, 0])
    settles = []
    for row in holds:
        spent = costs.get(row.job_id, 0)
        totals = by_window[(row.budget_id, row.period_start)]
        totals[0] += spent
        totals[1] += row.reserved_delta_micros
        settles.append(
            {
                "job_id": row.job_id,
                "budget_id": row.budget_id,
                "hold": row.hold,
                "period_start": row.period_start,
                "kind": LedgerKind.SETTLE.value,
                "reserved_delta_micros": -row.reserved_delta_micros,
                "spent_delta_micros": spent,
                "at": now,
            }
        )
    # In one order (budget, then period), as intake locks them.
    _SETTLE_WINDOW.execute(
        session,
        [
            {"w_budget": budget, "w_start": start, "w_spent": spent, "w_released": released}
            for (budget, start), (spent, released) in sorted(by_window.items())
        ],
    )
    _INSERT_ENTRIES.execute(session, settles)
    # What is charged now is charged once: a retry's settlement charges only what came after.
    session.execute(
        update(JOBS)
        .where(j.id.in_(list(costs)))
        .values(settled_micros=func.coalesce(j.cost_actual_micros, literal_column("0")))
    )
    _soft_alerts_after_settling(session, list(by_window), now)
    return len(settles)


def hold_anew(session: Session, job: Any, now: datetime) -> int | None:
    """Reserve a finished job's estimate again, as its next hold, for it to run again (a retry, or
    a step its parent's retry brings back): what its budgets now hold for it (None: no budget);
    `BudgetExceeded` when they have no room. `job` is a `Job` or a row with its columns."""
    ask = Ask(
        job_id=job.id,
        workflow=job.workflow,
        estimate_micros=job.cost_estimate_micros or 0,
        key_id=managed_key_id(job.submitted_by),
        user_id=job.user_id,
        run_at=now,
        hold=next_hold(session, job.id),
    )
    (granted,) = reserve(session, [ask], now)
    if isinstance(granted, BudgetExceeded):
        raise granted
    assert isinstance(granted, Grant)
    return granted.reserved_micros


def next_hold(session: Session, job_id: uuid.UUID) -> int:
    """The number of a job's next hold (a retry's), after those the ledger has."""
    latest = session.execute(select(func.max(LEDGER.c.hold)).where(LEDGER.c.job_id == job_id)).scalar()
    return 1 if latest is None else int(latest) + 1


def _soft_alerts_after_settling(
    session: Session, keys: list[tuple[uuid.UUID, datetime]], now: datetime
) -> None:
    """A cost past its hold can carry a window over its soft limit at settlement."""
    w, b = WINDOWS.c, BUDGETS.c
    crossed = session.execute(
        select(BUDGETS, w.period_start, w.spent_micros, w.reserved_micros)
        .join(WINDOWS, w.budget_id == b.id)
        .where(
            tuple_(w.budget_id, w.period_start).in_(keys),
            b.soft_limit_micros.is_not(None),
            w.soft_alerted_at.is_(None),
            w.spent_micros + w.reserved_micros > b.soft_limit_micros,
        )
    ).all()
    for row in crossed:
        window = _Window(row.spent_micros, row.reserved_micros, None)
        _check_soft_limit(row, row.period_start, window, now)
        session.execute(
            update(WINDOWS)
            .where(w.budget_id == row.id, w.period_start == row.period_start)
            .values(soft_alerted_at=now)
        )


def budget_figures(session: Session) -> tuple[int, int, int]:
    """For `/metrics`: micro-USD spent and held under budgets in all their windows, and how many
    windows crossed their soft limit (the windows table is small: one row per budget and period)."""
    w = WINDOWS.c
    spent, reserved, crossed = session.execute(
        select(
            func.coalesce(func.sum(w.spent_micros), 0),
            func.coalesce(func.sum(w.reserved_micros), 0),
            func.count(w.soft_alerted_at),
        )
    ).one()
    return int(spent), int(reserved), int(crossed)


def rebuild_windows(session: Session) -> dict[tuple[uuid.UUID, datetime], tuple[int, int]]:
    """Each window's (spent, reserved), summed from the ledger alone."""
    rows = session.execute(
        select(
            LEDGER.c.budget_id,
            LEDGER.c.period_start,
            func.sum(LEDGER.c.spent_delta_micros),
            func.sum(LEDGER.c.reserved_delta_micros),
        ).group_by(LEDGER.c.budget_id, LEDGER.c.period_start)
    ).all()
    return {(row[0], row[1]): (int(row[2]), int(row[3])) for row in rows}


__all__ = ["NO_BUDGET", "Ask", "BudgetPeriod", "Grant", "rebuild_windows", "reserve", "settle"]
