"""Budgets on both databases, through the service layer: reservation at intake, settlement at the
terminal state, refusal and deferral, periods, caps, soft limits, retries, the ledger and usage.

The jobs run on a real worker loop (or a remote worker's calls); times that matter (a period's end)
are passed to the queue and the ledger as `now`, never waited for."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import select

from levqor import queue
from levqor.config import Settings
from levqor.costs.ledger import Ask, Grant, rebuild_windows, reserve
from levqor.costs.periods import EPOCH, next_reset, period_start
from levqor.db.engine import Database
from levqor.db.models import BudgetWindow, CostEntry, Job
from levqor.db.principals import managed_principal_id
from levqor.db.types import utcnow
from levqor.errors import BudgetExceeded, Forbidden
from levqor.resolvers.batches import RequestBatches
from levqor.resolvers.budgets import BudgetView, list_budgets, set_budget
from levqor.resolvers.context import Context, Principal, Scope
from levqor.resolvers.job_control import cancel_job, retry_job
from levqor.resolvers.jobs import submit_job
from levqor.resolvers.keys import create_api_key
from levqor.resolvers.usage import get_usage
from levqor.resolvers.users import upsert_user
from levqor.resolvers.workers import claim_jobs, heartbeat_job
from tests.conftest import settings_for
from tests.integration.test_worker_loop import FAST, running_worker, until
from tests.queue_support import TEST_WORKFLOWS, get_job

ADMIN = Principal(id="static:admin", scopes=Scope.ALL)
PRICED = "test.priced"


@pytest.fixture
def budget_settings(db_url: str) -> Settings:
    return settings_for(db_url, **FAST)


async def new_key(db: Database, settings: Settings) -> tuple[uuid.UUID, Context]:
    """A managed key with jobs:read and jobs:write, and the context of a caller using it."""
    created = await create_api_key(
        Context(db, settings, ADMIN), {"name": "budgeted", "scopes": ["jobs:read", "jobs:write"]}
    )
    key_id = created.key.id
    principal = Principal(
        id=managed_principal_id(key_id),
        scopes=frozenset({Scope.JOBS_READ, Scope.JOBS_WRITE}),
        key_id=str(key_id),
    )
    return key_id, Context(db, settings, principal)


async def budget_of(db: Database, settings: Settings, subject_id: uuid.UUID) -> BudgetView:
    [view] = [
        item
        for item in await list_budgets(Context(db, settings, ADMIN))
        if item.budget.subject_id == subject_id
    ]
    return view


def ledger(db: Database) -> list[CostEntry]:
    return db.read_sync(lambda session: list(session.exec(select(CostEntry).order_by(CostEntry.id))))


def windows(db: Database) -> dict[tuple[uuid.UUID, datetime], tuple[int, int]]:
    rows = db.read_sync(lambda session: list(session.exec(select(BudgetWindow))))
    return {(row.budget_id, row.period_start): (row.spent_micros, row.reserved_micros) for row in rows}


def assert_ledger_rebuilds_windows(db: Database) -> None:
    assert db.read_sync(rebuild_windows) == windows(db)


async def all_finished(db: Database, job_ids: list[uuid.UUID]) -> list[Job]:
    def check() -> list[Job] | None:
        jobs = [get_job(db, job_id) for job_id in job_ids]
        return jobs if all(job.job_status.is_terminal for job in jobs) else None

    found: list[Job] = await until(check, "the jobs to finish")
    return found


@asynccontextmanager
async def worker(db_url: str, db: Database) -> AsyncIterator[None]:
    async with running_worker(db_url, db, LEVQOR_WORKFLOWS=TEST_WORKFLOWS):
        yield


# --- reservation and settlement ------------------------------------------------------------------


async def test_intake_reserves_and_the_terminal_state_settles_to_the_actual_cost(
    db_url: str, db: Database, budget_settings: Settings
) -> None:
    key_id, caller = await new_key(db, budget_settings)
    await set_budget(
        Context(db, budget_settings, ADMIN), "key", key_id, {"period": "day", "limit_micros": 10}
    )
    jobs = [
        (await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 3, "cost": 2}})).job
        for _ in range(3)
    ]
    assert [job.reserved_micros for job in jobs] == [3, 3, 3]
    assert [job.cost_estimate_micros for job in jobs] == [3, 3, 3]
    held = await budget_of(db, budget_settings, key_id)
    assert (held.spent_micros, held.reserved_micros, held.remaining_micros) == (0, 9, 1)

    with pytest.raises(BudgetExceeded) as refused:
        await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 3}})
    [detail] = refused.value.details
    assert detail["remaining_micros"] == 1
    assert detail["estimate_micros"] == 3
    assert detail["subject_id"] == str(key_id)
    assert str(key_id) in refused.value.message
    assert "1 of 10" in refused.value.message
    assert db.read_sync(lambda session: len(list(session.exec(select(Job))))) == 3  # nothing stored

    async with worker(db_url, db):
        finished = await all_finished(db, [job.id for job in jobs])
    assert {job.status for job in finished} == {"succeeded"}
    assert [job.cost_actual_micros for job in finished] == [2, 2, 2]
    settled = await budget_of(db, budget_settings, key_id)
    assert (settled.spent_micros, settled.reserved_micros, settled.remaining_micros) == (6, 0, 4)
    kinds = [(entry.kind, entry.reserved_delta_micros, entry.spent_delta_micros) for entry in ledger(db)]
    assert sorted(kinds) == sorted([("reserve", 3, 0)] * 3 + [("settle", -3, 2)] * 3)
    assert_ledger_rebuilds_windows(db)

    # What was spent frees the rest: a job estimated at 4 fits now.
    assert (
        await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 4}})
    ).job.reserved_micros == 4


async def test_batched_submits_never_pass_the_limit(db: Database, budget_settings: Settings) -> None:
    key_id, caller = await new_key(db, budget_settings)
    await set_budget(
        Context(db, budget_settings, ADMIN), "key", key_id, {"period": "month", "limit_micros": 10}
    )
    batches = RequestBatches(db)
    await batches.start()
    try:
        batched = Context(db, budget_settings, caller.principal, batches=batches)
        answers = await asyncio.gather(
            *(submit_job(batched, {"workflow": PRICED, "payload": {"estimate": 1}}) for _ in range(30)),
            return_exceptions=True,
        )
    finally:
        await batches.stop()
    accepted = [answer for answer in answers if not isinstance(answer, BaseException)]
    refused = [answer for answer in answers if isinstance(answer, BudgetExceeded)]
    assert (len(accepted), len(refused)) == (10, 20)
    stored = db.read_sync(lambda session: list(session.exec(select(Job))))
    assert sorted(job.id for job in stored) == sorted(answer.job.id for answer in accepted)
    assert all(job.reserved_micros == 1 for job in stored)
    view = await budget_of(db, budget_settings, key_id)
    assert (view.reserved_micros, view.remaining_micros) == (10, 0)
    assert_ledger_rebuilds_windows(db)


async def test_a_job_reporting_more_than_its_hold_is_stopped_and_its_spend_recorded(
    db_url: str, db: Database, budget_settings: Settings
) -> None:
    key_id, caller = await new_key(db, budget_settings)
    await set_budget(
        Context(db, budget_settings, ADMIN), "key", key_id, {"period": "total", "limit_micros": 100}
    )
    job = (await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 5, "costs": [3, 7, 9]}})).job
    async with worker(db_url, db):
        [done] = await all_finished(db, [job.id])
    assert done.status == "failed"
    assert done.attempts == 1  # not retried
    assert done.error is not None
    assert done.error["type"] == "cost_exceeded"
    assert (done.error["reported_micros"], done.error["reserved_micros"]) == (7, 5)
    assert done.cost_actual_micros == 7  # the report that stopped it is charged
    view = await budget_of(db, budget_settings, key_id)
    assert (view.spent_micros, view.reserved_micros) == (7, 0)
    assert_ledger_rebuilds_windows(db)


async def test_the_hold_lasts_across_retries_and_settles_once(
    db_url: str, db: Database, budget_settings: Settings
) -> None:
    key_id, caller = await new_key(db, budget_settings)
    await set_budget(
        Context(db, budget_settings, ADMIN), "key", key_id, {"period": "total", "limit_micros": 100}
    )
    job = (
        await submit_job(
            caller, {"workflow": PRICED, "payload": {"estimate": 5, "cost": 2, "fail_first": True}}
        )
    ).job
    async with worker(db_url, db):
        [done] = await all_finished(db, [job.id])
    assert (done.status, done.attempts, done.cost_actual_micros) == ("succeeded", 2, 4)
    entries = ledger(db)
    assert [(entry.kind, entry.hold) for entry in entries] == [("reserve", 1), ("settle", 1)]
    assert entries[1].spent_delta_micros == 4
    assert (await budget_of(db, budget_settings, key_id)).spent_micros == 4


async def test_a_retried_job_holds_anew_and_is_charged_only_its_new_spending(
    db_url: str, db: Database, budget_settings: Settings
) -> None:
    key_id, caller = await new_key(db, budget_settings)
    await set_budget(
        Context(db, budget_settings, ADMIN), "key", key_id, {"period": "total", "limit_micros": 12}
    )
    job = (await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 5, "costs": [3, 6]}})).job
    async with worker(db_url, db):
        await all_finished(db, [job.id])
        assert (await budget_of(db, budget_settings, key_id)).spent_micros == 6
        again = await retry_job(caller, job.id)
        assert again.reserved_micros == 5
        [done] = await all_finished(db, [job.id])
        # 12 spent now: another hold of 5 has no room.
        with pytest.raises(BudgetExceeded):
            await retry_job(caller, job.id)
    assert done.cost_actual_micros == 12  # both runs, 6 each (each stopped at its second report)
    entries = ledger(db)
    assert [(entry.kind, entry.hold, entry.spent_delta_micros) for entry in entries] == [
        ("reserve", 1, 0),
        ("settle", 1, 6),
        ("reserve", 2, 0),
        ("settle", 2, 6),
    ]
    assert (await budget_of(db, budget_settings, key_id)).spent_micros == 12
    assert_ledger_rebuilds_windows(db)


async def test_a_cancelled_job_settles_to_what_it_reported(db: Database, budget_settings: Settings) -> None:
    key_id, caller = await new_key(db, budget_settings)
    await set_budget(
        Context(db, budget_settings, ADMIN), "key", key_id, {"period": "day", "limit_micros": 10}
    )
    queued = (await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 4}})).job
    await cancel_job(caller, queued.id)
    view = await budget_of(db, budget_settings, key_id)
    assert (view.spent_micros, view.reserved_micros) == (0, 0)
    assert [entry.kind for entry in ledger(db)] == ["reserve", "settle"]


async def test_a_remote_worker_reporting_past_the_hold_is_stopped(
    db: Database, budget_settings: Settings
) -> None:
    key_id, caller = await new_key(db, budget_settings)
    await set_budget(
        Context(db, budget_settings, ADMIN), "key", key_id, {"period": "day", "limit_micros": 10}
    )
    job = (await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 4}})).job
    remote = Context(db, budget_settings, ADMIN)
    claim = await claim_jobs(remote, {"worker_id": "w-remote", "workflows": [PRICED]})
    [claimed] = claim.jobs
    assert (claimed.reserved_micros, claimed.cost_estimate_micros, claimed.spent_before_micros) == (4, 4, 0)
    within = await heartbeat_job(remote, job.id, {"worker_id": "w-remote", "attempt": 1, "cost_micros": 4})
    assert within.cancel_requested is False
    past = await heartbeat_job(
        remote,
        job.id,
        {"worker_id": "w-remote", "attempt": 1, "cost_micros": 5, "usage": {"prompt_tokens": 7}},
    )
    assert past.cancel_requested is True
    stopped = get_job(db, job.id)
    assert (stopped.status, stopped.cost_actual_micros, stopped.prompt_tokens) == ("failed", 5, 7)
    assert stopped.error is not None
    assert stopped.error["type"] == "cost_exceeded"
    view = await budget_of(db, budget_settings, key_id)
    assert (view.spent_micros, view.reserved_micros) == (5, 0)


# --- who pays ------------------------------------------------------------------------------------


async def test_the_users_budget_applies_beside_the_keys(db: Database, budget_settings: Settings) -> None:
    key_id, caller = await new_key(db, budget_settings)
    admin = Context(db, budget_settings, ADMIN)
    user = (await upsert_user(admin, {"email": "ada@example.com", "name": "Ada"})).user
    await set_budget(admin, "key", key_id, {"period": "day", "limit_micros": 100})
    await set_budget(admin, "user", user.id, {"period": "month", "limit_micros": 5})
    submit = {"workflow": PRICED, "payload": {"estimate": 3}, "user_id": str(user.id)}
    assert (await submit_job(caller, submit)).job.reserved_micros == 3
    with pytest.raises(BudgetExceeded) as refused:
        await submit_job(caller, submit)
    assert refused.value.details[0]["subject"] == "user"
    assert f"user {user.id}" in refused.value.message
    # Nothing was held on the key's budget for the refused job either.
    assert (await budget_of(db, budget_settings, key_id)).reserved_micros == 3
    # Without the user, only the key's budget applies.
    assert (
        await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 3}})
    ).job.reserved_micros == 3


async def test_caps_on_one_jobs_estimate(db: Database, budget_settings: Settings) -> None:
    key_id, caller = await new_key(db, budget_settings)
    await set_budget(
        Context(db, budget_settings, ADMIN),
        "key",
        key_id,
        {
            "period": "day",
            "limit_micros": 1000,
            "max_job_micros": 50,
            "workflow_max_job_micros": {PRICED: 20},
        },
    )
    for estimate in (21, 51):
        with pytest.raises(BudgetExceeded) as refused:
            await submit_job(
                caller, {"workflow": PRICED, "payload": {"estimate": estimate}, "budget_policy": "defer"}
            )
        assert "more than the most one" in refused.value.message
    assert (
        await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 20}})
    ).job.reserved_micros == 20


async def test_jobs_without_a_budget_hold_nothing(db: Database, budget_settings: Settings) -> None:
    _key_id, caller = await new_key(db, budget_settings)
    job = (await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 3}})).job
    assert (job.cost_estimate_micros, job.reserved_micros) == (3, None)
    assert ledger(db) == []


# --- periods and deferral --------------------------------------------------------------------------


def test_periods_are_utc_calendar_days_and_months() -> None:
    late = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert period_start("day", late) == datetime(2026, 12, 31, tzinfo=UTC)
    assert next_reset("day", late) == datetime(2027, 1, 1, tzinfo=UTC)
    assert period_start("month", late) == datetime(2026, 12, 1, tzinfo=UTC)
    assert next_reset("month", late) == datetime(2027, 1, 1, tzinfo=UTC)
    assert next_reset("month", datetime(2027, 1, 31, tzinfo=UTC)) == datetime(2027, 2, 1, tzinfo=UTC)
    assert (period_start("total", late), next_reset("total", late)) == (EPOCH, None)
    # Another offset names the same instant.
    tokyo = datetime(2027, 1, 1, 8, 0, tzinfo=UTC).astimezone(ZoneInfo("Asia/Tokyo"))
    assert period_start("day", tokyo) == datetime(2027, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "before", "after", "resets"),
    [
        ("day", datetime(2026, 12, 31, 23, 59, tzinfo=UTC), datetime(2027, 1, 1, 0, 0, tzinfo=UTC), True),
        ("month", datetime(2026, 11, 30, 23, 59, tzinfo=UTC), datetime(2026, 12, 1, 0, 0, tzinfo=UTC), True),
        ("month", datetime(2026, 12, 1, 0, 0, tzinfo=UTC), datetime(2026, 12, 31, 23, 59, tzinfo=UTC), False),
        ("total", datetime(2026, 1, 1, tzinfo=UTC), datetime(2036, 1, 1, tzinfo=UTC), False),
    ],
)
async def test_a_budget_resets_at_its_periods_start_and_only_then(
    db: Database, budget_settings: Settings, period: str, before: datetime, after: datetime, resets: bool
) -> None:
    key_id, _caller = await new_key(db, budget_settings)
    await set_budget(
        Context(db, budget_settings, ADMIN), "key", key_id, {"period": period, "limit_micros": 10}
    )

    def ask(at: datetime, estimate: int) -> Grant | BudgetExceeded:
        job = Ask(
            job_id=uuid.uuid4(),
            workflow=PRICED,
            estimate_micros=estimate,
            key_id=key_id,
            user_id=None,
            run_at=at,
        )
        (granted,) = db.write_sync(lambda session: reserve(session, [job], at))
        return granted

    assert isinstance(ask(before, 10), Grant)
    assert isinstance(ask(before, 1), BudgetExceeded)
    assert isinstance(ask(after, 1), Grant) is resets


async def test_a_deferred_job_waits_for_the_reset_and_runs_after_it(
    db: Database, budget_settings: Settings
) -> None:
    key_id, caller = await new_key(db, budget_settings)
    await set_budget(
        Context(db, budget_settings, ADMIN), "key", key_id, {"period": "day", "limit_micros": 10}
    )
    await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 8}})
    before = utcnow()
    deferred = (
        await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 5}, "budget_policy": "defer"})
    ).job
    reset = next_reset("day", before)
    assert reset is not None
    assert deferred.status == "queued"
    assert deferred.run_at == reset
    assert deferred.defer_reason is not None
    assert "reset" in deferred.defer_reason
    # Held in tomorrow's window, not today's.
    [budget] = await list_budgets(Context(db, budget_settings, ADMIN))
    assert windows(db)[(budget.budget.id, reset)] == (0, 5)
    assert budget.reserved_micros == 8

    def claim(at: datetime) -> list[queue.ClaimedJob]:
        return db.write_sync(
            lambda session: queue.claim_jobs(
                session, worker_id="w", workflows=[PRICED], max_jobs=10, lease_s=30, now=at
            )
        )

    today = claim(reset - timedelta(seconds=1))
    assert [job.id for job in today] != []
    assert deferred.id not in [job.id for job in today]
    assert [job.id for job in claim(reset + timedelta(seconds=1))] == [deferred.id]
    # A rejecting submit of the same size is refused, not deferred.
    with pytest.raises(BudgetExceeded):
        await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 5}})


async def test_a_total_budget_cannot_defer(db: Database, budget_settings: Settings) -> None:
    key_id, caller = await new_key(db, budget_settings)
    await set_budget(
        Context(db, budget_settings, ADMIN), "key", key_id, {"period": "total", "limit_micros": 3}
    )
    with pytest.raises(BudgetExceeded) as refused:
        await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 4}, "budget_policy": "defer"})
    assert refused.value.details[0]["resets_at"] is None


async def test_a_soft_limit_is_logged_once_per_period(
    db: Database, budget_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    key_id, caller = await new_key(db, budget_settings)
    await set_budget(
        Context(db, budget_settings, ADMIN),
        "key",
        key_id,
        {"period": "day", "limit_micros": 100, "soft_limit_micros": 5},
    )
    with caplog.at_level(logging.WARNING, logger="levqor.budgets"):
        for _ in range(4):
            await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 3}})
    crossings = [record for record in caplog.records if record.getMessage() == "budget soft limit crossed"]
    assert len(crossings) == 1
    assert crossings[0].used_micros == 6
    assert (await budget_of(db, budget_settings, key_id)).soft_limit_crossed is True


# --- usage ---------------------------------------------------------------------------------------


async def test_usage_equals_the_ledger_and_shows_tokens(
    db_url: str, db: Database, budget_settings: Settings
) -> None:
    key_id, caller = await new_key(db, budget_settings)
    await set_budget(
        Context(db, budget_settings, ADMIN), "key", key_id, {"period": "month", "limit_micros": 1000}
    )
    ids = [
        (
            await submit_job(
                caller,
                {"workflow": PRICED, "payload": {"estimate": 9, "cost": cost, "tokens": [10, cost, 4, 1]}},
            )
        ).job.id
        for cost in (1, 2, 7)
    ]
    waiting = (await submit_job(caller, {"workflow": "echo", "payload": {}})).job.id
    async with worker(db_url, db):
        await all_finished(db, [*ids, waiting])
    report = await get_usage(caller, {"group_by": "key"})
    [row] = report.rows
    assert row.group == str(key_id)
    assert (row.jobs, row.succeeded, row.failed) == (4, 4, 0)
    assert row.spent_micros == 10
    assert row.spent_micros == sum(entry.spent_delta_micros for entry in ledger(db))
    assert (row.prompt_tokens, row.completion_tokens, row.cached_tokens, row.reasoning_tokens) == (
        30,
        10,
        12,
        3,
    )
    assert row.tokens == 40
    by_workflow = {item.group: item for item in (await get_usage(caller, {"group_by": "workflow"})).rows}
    assert (by_workflow[PRICED].jobs, by_workflow["echo"].jobs) == (3, 1)
    [today] = (await get_usage(caller, {"group_by": "day"})).rows
    assert today.group == utcnow().date().isoformat()


async def test_usage_is_a_callers_own_unless_it_is_an_admin(db: Database, budget_settings: Settings) -> None:
    _first, one = await new_key(db, budget_settings)
    second, other = await new_key(db, budget_settings)
    await submit_job(one, {"workflow": "echo", "payload": {}})
    await submit_job(other, {"workflow": "echo", "payload": {}})
    [own] = (await get_usage(one, {"group_by": "key"})).rows
    assert own.jobs == 1
    with pytest.raises(Forbidden):
        await get_usage(one, {"key_id": str(second)})
    everyone = (await get_usage(Context(db, budget_settings, ADMIN), {"group_by": "key"})).rows
    assert sorted(row.jobs for row in everyone) == [1, 1]
    just_second = (
        await get_usage(Context(db, budget_settings, ADMIN), {"group_by": "key", "key_id": str(second)})
    ).rows
    assert [row.group for row in just_second] == [str(second)]
