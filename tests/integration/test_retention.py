"""Retention on both databases: what a prune deletes (old finished jobs with their events, deliveries
and attempts; old finished runs whole), what it keeps (recent, unfinished, pending callbacks, the
budgets' ledger, schedule fires), dry runs, batches, prunes at once, and the background loop (alone and
in a server).

Rows are stored as they would be by then, with their times set; the cutoff is passed explicitly."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlmodel import SQLModel, col, func, select
from uuid_utils.compat import uuid7

from levqor.cli_keys import CLI_PRINCIPAL
from levqor.config import Settings
from levqor.db.engine import Database
from levqor.db.models import (
    CallbackAttempt,
    CallbackDelivery,
    Job,
    JobEvent,
    Run,
    RunEdge,
    RunEvent,
)
from levqor.db.types import utcnow
from levqor.queue.pruner import Pruner
from levqor.queue.retention import Pruned, prune, retention_cutoff
from levqor.resolvers.budgets import set_budget
from levqor.resolvers.context import Context
from levqor.resolvers.jobs import submit_job
from levqor.resolvers.schedules import create_schedule, get_schedule, run_schedule
from tests.conftest import LiveServer, settings_for
from tests.integration.test_budgets import (
    ADMIN,
    PRICED,
    all_finished,
    assert_ledger_rebuilds_windows,
    budget_of,
    ledger,
    new_key,
    worker,
)
from tests.integration.test_worker_loop import until
from tests.queue_support import wait_for

NOW = utcnow()
CUTOFF = NOW - timedelta(days=7)


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def id_at(moment: datetime) -> uuid.UUID:
    """A time-ordered id made at `moment`, as one made then would be."""
    return uuid.UUID(str(uuid7(nanoseconds=int(moment.timestamp() * 1e9))))


def add_job(
    db: Database,
    status: str,
    *,
    finished: float | None = None,
    created: float | None = None,
    delivery: str | None = None,
    **fields: Any,
) -> uuid.UUID:
    """A job in `status`, created `created` and finished `finished` days ago, with two events and,
    when `delivery` is a status, a callback delivery in it with one attempt."""
    created_at = days_ago(created if created is not None else (finished or 0) + 1)
    job = Job(
        id=id_at(created_at),
        workflow="echo",
        status=status,
        created_at=created_at,
        finished_at=None if finished is None else days_ago(finished),
        **fields,
    )

    def store(session: Any) -> uuid.UUID:
        session.add(job)
        session.add(JobEvent(job_id=job.id, type="submitted", to_status="queued", at=created_at))
        session.add(JobEvent(job_id=job.id, type=status, from_status="queued", to_status=status))
        if delivery is not None:
            add_delivery(session, job.id, delivery)
        return job.id

    return db.write_sync(store)


def add_delivery(session: Any, owner: uuid.UUID, status: str) -> None:
    row = CallbackDelivery(
        job_id=owner, event_type="job.succeeded", webhook_id=f"msg_{owner}", url="http://x", body="{}"
    )
    row.status = status
    session.add(row)
    session.flush()
    session.add(CallbackAttempt(delivery_id=row.id, attempt=1, worker_id="w", started_at=NOW))


def add_run(
    db: Database,
    status: str,
    *,
    finished: float | None,
    created: float,
    steps: tuple[str, ...] = ("succeeded", "succeeded", "succeeded"),
    step_delivery: str | None = None,
    run_delivery: str | None = None,
) -> uuid.UUID:
    """A run of a chain of steps (a -> b -> c ...) in the given statuses, with one run event."""
    created_at = days_ago(created)
    run = Run(
        id=id_at(created_at),
        status=status,
        created_at=created_at,
        finished_at=None if finished is None else days_ago(finished),
        steps_total=len(steps),
        steps_open=sum(step not in ("succeeded", "failed", "cancelled") for step in steps),
    )
    db.write_sync(lambda session: session.add(run))
    ids = [
        add_job(
            db,
            step,
            created=created,
            finished=finished if step in ("succeeded", "failed", "cancelled") else None,
            run_id=run.id,
            step_key=f"s{index}",
            delivery=step_delivery if index == 0 else None,
        )
        for index, step in enumerate(steps)
    ]

    def link(session: Any) -> None:
        for parent, child in itertools.pairwise(ids):
            session.add(RunEdge(parent_id=parent, child_id=child, run_id=run.id))
        session.add(RunEvent(run_id=run.id, type="submitted", to_status="queued", at=created_at))
        if run_delivery is not None:
            add_delivery(session, run.id, run_delivery)

    db.write_sync(link)
    return run.id


def count(db: Database, model: type[SQLModel]) -> int:
    return db.read_sync(lambda session: session.exec(select(func.count()).select_from(model)).one())


def counts(db: Database) -> dict[str, int]:
    models = {
        "jobs": Job,
        "events": JobEvent,
        "deliveries": CallbackDelivery,
        "attempts": CallbackAttempt,
        "runs": Run,
        "run_events": RunEvent,
        "run_edges": RunEdge,
    }
    return {name: count(db, model) for name, model in models.items()}


def job_ids(db: Database) -> set[uuid.UUID]:
    return set(db.read_sync(lambda session: session.exec(select(Job.id)).all()))


def run_ids(db: Database) -> set[uuid.UUID]:
    return set(db.read_sync(lambda session: session.exec(select(Run.id)).all()))


def left_for(db: Database, owners: set[uuid.UUID]) -> int:
    """Rows of events and deliveries that still name one of `owners`."""

    def read(session: Any) -> int:
        events = session.exec(select(func.count()).where(col(JobEvent.job_id).in_(owners))).one()
        sent = session.exec(select(func.count()).where(col(CallbackDelivery.job_id).in_(owners))).one()
        return int(events) + int(sent)

    return db.read_sync(read)


def test_the_cutoff_is_the_setting_days_before_now_and_none_keeps_every_job() -> None:
    assert retention_cutoff(0, NOW) is None
    assert retention_cutoff(30, NOW) == NOW - timedelta(days=30)
    assert Settings().retention_days == 0


async def test_old_finished_jobs_go_with_their_history_and_the_rest_stay(db: Database) -> None:
    old = {
        add_job(db, "succeeded", finished=30, delivery="delivered"),
        add_job(db, "failed", finished=8, delivery="failed"),
        add_job(db, "cancelled", finished=400, idempotency_key="dev:old-key"),
    }
    kept = {
        add_job(db, "succeeded", finished=6),  # recent
        add_job(db, "succeeded", finished=30, delivery="pending"),  # its callback is not final
        add_job(db, "queued", created=30),  # waiting a long time (a far `run_at`, a deferral)
        add_job(db, "running", created=30),
    }
    attempts_before = count(db, CallbackAttempt)

    pruned = await prune(db, CUTOFF)

    assert job_ids(db) == kept
    assert left_for(db, old) == 0
    assert (pruned.jobs, pruned.events, pruned.deliveries, pruned.attempts, pruned.runs) == (3, 6, 2, 2, 0)
    assert count(db, CallbackAttempt) == attempts_before - 2
    assert count(db, JobEvent) == 2 * len(kept)
    # Pruning again finds nothing: deleting twice is a no-op.
    assert await prune(db, CUTOFF) == Pruned()


async def test_a_job_waits_for_its_pending_callback_and_goes_once_it_is_final(db: Database) -> None:
    job_id = add_job(db, "succeeded", finished=30, delivery="pending")
    assert (await prune(db, CUTOFF)).jobs == 0
    db.write_sync(
        lambda session: (
            session.exec(select(CallbackDelivery).where(col(CallbackDelivery.job_id) == job_id))
            .one()
            .__setattr__("status", "delivered")
        )
    )
    assert (await prune(db, CUTOFF)).jobs == 1
    assert job_ids(db) == set()


async def test_a_run_goes_whole_only_when_it_finished_before_the_cutoff(db: Database) -> None:
    gone = add_run(db, "failed", finished=30, created=31, run_delivery="delivered", step_delivery="failed")
    running = add_run(db, "running", finished=None, created=31, steps=("succeeded", "running", "queued"))
    recent = add_run(db, "succeeded", finished=2, created=3)
    waiting = add_run(db, "succeeded", finished=30, created=31, step_delivery="pending")
    its_steps = {
        run: set(db.read_sync(lambda s, run=run: s.exec(select(Job.id).where(col(Job.run_id) == run)).all()))
        for run in (gone, running, recent, waiting)
    }
    before = counts(db)

    # Two jobs a batch: a run of three steps is still pruned whole, in one transaction.
    pruned = await prune(db, CUTOFF, batch_jobs=2)

    assert run_ids(db) == {running, recent, waiting}
    assert job_ids(db) == its_steps[running] | its_steps[recent] | its_steps[waiting]
    assert left_for(db, its_steps[gone] | {gone}) == 0
    assert pruned == Pruned(
        jobs=3, events=6, deliveries=2, attempts=2, runs=1, run_events=1, run_edges=2, batches=1
    )
    after = counts(db)
    assert {name: before[name] - after[name] for name in before} == {
        name: value for name, value in pruned.as_dict().items() if name != "batches"
    }
    # The running run's step that finished long ago stays with its run.
    assert len(its_steps[running] & job_ids(db)) == 3


async def test_a_dry_run_deletes_nothing_and_counts_what_the_prune_then_deletes(db: Database) -> None:
    for days in (10, 20, 30):
        add_job(db, "succeeded", finished=days, delivery="delivered")
    add_job(db, "succeeded", finished=1)
    add_run(db, "cancelled", finished=9, created=10)
    before = counts(db)

    dry = await prune(db, CUTOFF, dry_run=True, batch_jobs=2)

    assert counts(db) == before
    real = await prune(db, CUTOFF, batch_jobs=2)
    assert dry == real
    assert (real.jobs, real.runs) == (6, 1)
    assert counts(db)["jobs"] == 1


async def test_batches_of_two_take_five_jobs_in_three(db: Database) -> None:
    for days in range(10, 15):
        add_job(db, "succeeded", finished=days)
    pruned = await prune(db, CUTOFF, batch_jobs=2)
    assert (pruned.jobs, pruned.batches) == (5, 3)
    assert job_ids(db) == set()


async def test_prunes_at_once_in_several_processes_delete_each_job_once(db_url: str, db: Database) -> None:
    for days in range(10, 40):
        add_job(db, "succeeded", finished=days, delivery="delivered")
    others = [Database(db_url) for _ in range(2)]
    try:
        results = await asyncio.gather(*(prune(each, CUTOFF, batch_jobs=3) for each in (db, *others)))
    finally:
        for each in others:
            each.dispose()
    assert sum(result.jobs for result in results) == 30
    assert sum(result.deliveries for result in results) == 30
    assert counts(db) == dict.fromkeys(counts(db), 0)


async def test_a_schedule_still_reads_once_its_fired_job_is_pruned(db_url: str, db: Database) -> None:
    settings = settings_for(db_url)
    admin = Context(db, settings, CLI_PRINCIPAL)
    schedule = await create_schedule(
        admin, {"name": "nightly", "cron": "0 3 * * *", "job": {"workflow": "echo", "payload": {}}}
    )
    ran = await run_schedule(admin, schedule.schedule.id)
    assert ran.fire.job_id is not None
    db.write_sync(
        lambda session: (
            session.exec(select(Job).where(col(Job.id) == ran.fire.job_id))
            .one()
            .sqlmodel_update({"status": "succeeded", "finished_at": utcnow()})
        )
    )

    assert (await prune(db, utcnow() + timedelta(days=1))).jobs == 1

    view = await get_schedule(admin, schedule.schedule.id)
    assert [fire.job_id for fire in view.fires] == [ran.fire.job_id]  # the fire records its tick
    assert job_ids(db) == set()


async def test_budgets_keep_their_ledger_and_still_rebuild_after_a_prune(
    db_url: str, db: Database, budget_settings: Settings
) -> None:
    key_id, caller = await new_key(db, budget_settings)
    await set_budget(
        Context(db, budget_settings, ADMIN), "key", key_id, {"period": "day", "limit_micros": 100}
    )
    jobs = [
        (await submit_job(caller, {"workflow": PRICED, "payload": {"estimate": 5, "cost": 3}})).job
        for _ in range(3)
    ]
    async with worker(db_url, db):
        await all_finished(db, [job.id for job in jobs])
    spent = await budget_of(db, budget_settings, key_id)
    entries = ledger(db)

    pruned = await prune(db, utcnow() + timedelta(days=1))

    assert pruned.jobs == 3
    assert job_ids(db) == set()
    assert ledger(db) == entries
    assert_ledger_rebuilds_windows(db)
    after = await budget_of(db, budget_settings, key_id)
    assert (
        (after.spent_micros, after.reserved_micros) == (spent.spent_micros, spent.reserved_micros) == (9, 0)
    )


@pytest.fixture
def budget_settings(db_url: str) -> Settings:
    return settings_for(db_url, LEVQOR_WORKFLOWS="tests.support_workflows")


async def test_the_background_task_prunes_when_retention_is_set(db_url: str, db: Database) -> None:
    old = add_job(db, "succeeded", finished=30)
    recent = add_job(db, "succeeded", finished=1)
    off = Pruner(db, settings_for(db_url))
    off.start()  # LEVQOR_RETENTION_DAYS unset: nothing runs
    await off.stop()
    assert job_ids(db) == {old, recent}

    pruner = Pruner(db, settings_for(db_url, LEVQOR_RETENTION_DAYS="7", LEVQOR_PRUNE_INTERVAL_S="3600"))
    pruner.start()
    try:
        await until(lambda: job_ids(db) == {recent}, "the pruner's first pass")
    finally:
        await pruner.stop()


def test_a_server_with_a_retention_prunes_and_a_pruned_job_reads_as_unknown(
    db: Database, make_server: Callable[..., LiveServer]
) -> None:
    old = add_job(db, "succeeded", finished=30)
    recent = add_job(db, "succeeded", finished=1)
    live = make_server(LEVQOR_RETENTION_DAYS="7")
    wait_for(lambda: job_ids(db) == {recent}, what="the server's first retention pass")
    with live.client() as http:
        assert http.get(f"/api/v1/status/{old}").status_code == 404
        assert http.get(f"/api/v1/status/{recent}").json()["status"] == "succeeded"
