"""The worker loop in this process, on both databases: handlers, retries, timeouts, cancellation,
lost leases, graceful stop and the in-process wake-up. Conditions are awaited with generous deadlines;
nothing asserts how fast something happened."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlmodel import select

from levqor import queue
from levqor.db.engine import Database
from levqor.db.models import Job
from levqor.db.models import Worker as WorkerRow
from levqor.queue import Wakeup
from levqor.worker import Worker
from levqor.workflows import registry_for
from tests.conftest import settings_for
from tests.queue_support import TEST_WORKFLOWS, add_job, event_types, get_job

DEADLINE_S = 30
FAST = {
    "LEVQOR_WORKFLOWS": TEST_WORKFLOWS,
    "LEVQOR_LEASE_S": "3",
    "LEVQOR_RETRY_BASE_MS": "1",
    "LEVQOR_POLL_INTERVAL_MS": "20",
    "LEVQOR_SHUTDOWN_GRACE_S": "0",
}


@asynccontextmanager
async def running_worker(db_url: str, db: Database, **env: str) -> AsyncIterator[Worker]:
    settings = settings_for(db_url, **{**FAST, **env})
    wakeup = Wakeup(poll_interval_s=settings.poll_interval_ms / 1000)
    await wakeup.start()
    worker = Worker(db, registry_for(settings), settings, wakeup=wakeup, concurrency=4)
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, DEADLINE_S)
        await wakeup.stop()


async def until(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while not (value := await asyncio.to_thread(check)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return value


async def finished(db: Database, job_id: uuid.UUID) -> Job:
    return await until(
        lambda: job if (job := get_job(db, job_id)).job_status.is_terminal else None,
        f"job {job_id} to finish",
    )


async def test_echo_runs_and_the_worker_is_recorded(db_url: str, db: Database) -> None:
    job = add_job(db, "echo", payload={"text": "héllo", "n": [1, 2]})
    async with running_worker(db_url, db) as worker:
        done = await finished(db, job.id)
        row = db.read_sync(lambda s: s.exec(select(WorkerRow).where(WorkerRow.id == worker.worker_id)).one())
        assert row.stopped_at is None
        assert "echo" in row.workflows
    assert (done.status, done.result, done.attempts) == ("succeeded", {"text": "héllo", "n": [1, 2]}, 1)
    assert event_types(db, job.id) == ["submitted", "claimed", "succeeded"]
    stopped = db.read_sync(lambda s: s.exec(select(WorkerRow).where(WorkerRow.id == worker.worker_id)).one())
    assert stopped.stopped_at is not None


async def test_failures_retry_until_they_succeed_or_attempts_run_out(db_url: str, db: Database) -> None:
    flaky = add_job(db, "test.fail_once", payload={"k": "v"})
    exploding = add_job(db, "test.explode", max_attempts=2)
    permanent = add_job(db, "test.permanent", max_attempts=5)
    async with running_worker(db_url, db):
        flaky_done = await finished(db, flaky.id)
        exploded = await finished(db, exploding.id)
        refused = await finished(db, permanent.id)

    assert (flaky_done.status, flaky_done.attempts, flaky_done.result) == (
        "succeeded",
        2,
        {"attempt": 2, "k": "v"},
    )
    assert event_types(db, flaky.id) == ["submitted", "claimed", "retry_scheduled", "claimed", "succeeded"]
    assert (exploded.status, exploded.attempts) == ("failed", 2)
    assert exploded.error == {"type": "exception", "message": "RuntimeError: boom"}
    assert (refused.status, refused.attempts) == ("failed", 1)
    assert refused.error == {"type": "failed", "message": "the input can never work", "hint": "fix the input"}


async def test_a_result_no_database_can_store_fails_the_job(db_url: str, db: Database) -> None:
    job = add_job(db, "test.bad_result")
    async with running_worker(db_url, db):
        done = await finished(db, job.id)
    assert done.status == "failed"
    assert done.error is not None
    assert done.error["type"] == "bad_result"


async def test_cost_reported_by_the_handler_is_recorded(db_url: str, db: Database) -> None:
    job = add_job(db, "test.costly")
    async with running_worker(db_url, db):
        done = await finished(db, job.id)
    assert (done.status, done.cost_actual_micros) == ("succeeded", 1234)


async def test_a_job_past_its_timeout_fails(db_url: str, db: Database) -> None:
    job = add_job(db, "sleep", payload={"seconds": 600}, timeout_s=1, max_attempts=1)
    async with running_worker(db_url, db):
        done = await finished(db, job.id)
    assert done.status == "failed"
    assert done.error == {"type": "timeout", "message": "the job ran longer than its timeout of 1 s"}


async def test_cancelling_a_running_job_stops_its_handler(db_url: str, db: Database) -> None:
    job = add_job(db, "sleep", payload={"seconds": 600})
    async with running_worker(db_url, db) as worker:
        await until(lambda: get_job(db, job.id).status == "running", "the job to start")
        db.write_sync(lambda s: queue.cancel(s, job.id))
        done = await finished(db, job.id)
        await until(lambda: worker.running_count == 0, "the slot to be freed")
    assert done.status == "cancelled"
    assert event_types(db, job.id) == ["submitted", "claimed", "cancel_requested", "cancelled"]


async def test_a_lost_lease_stops_the_handler_and_reports_nothing(db_url: str, db: Database) -> None:
    job = add_job(db, "sleep", payload={"seconds": 600})
    async with running_worker(db_url, db) as worker:
        await until(lambda: get_job(db, job.id).status == "running", "the job to start")
        db.write_sync(lambda s: queue.force_complete(s, job.id, {"by": "hand"}))
        await until(lambda: worker.running_count == 0, "the worker to let the job go")
    done = get_job(db, job.id)
    assert (done.status, done.result) == ("succeeded", {"by": "hand"})
    assert event_types(db, job.id) == ["submitted", "claimed", "dev_completed"]


async def test_stopping_hands_running_jobs_back_without_spending_an_attempt(
    db_url: str, db: Database
) -> None:
    job = add_job(db, "sleep", payload={"seconds": 600})
    async with running_worker(db_url, db):
        await until(lambda: get_job(db, job.id).status == "running", "the job to start")
    handed_back = get_job(db, job.id)
    assert (handed_back.status, handed_back.attempts) == ("queued", 0)
    assert event_types(db, job.id) == ["submitted", "claimed", "released"]


async def test_stopping_lets_a_job_finish_within_the_grace_period(db_url: str, db: Database) -> None:
    job = add_job(db, "sleep", payload={"seconds": 0.5})
    async with running_worker(db_url, db, LEVQOR_SHUTDOWN_GRACE_S="30"):
        await until(lambda: get_job(db, job.id).status == "running", "the job to start")
    done = get_job(db, job.id)
    assert (done.status, done.attempts) == ("succeeded", 1)


async def test_an_enqueue_in_this_process_wakes_the_idle_worker(db_url: str, db: Database) -> None:
    """With polling an hour apart, only the in-process wake-up can get the second job picked up."""
    first = add_job(db, "echo")
    async with running_worker(db_url, db, LEVQOR_POLL_INTERVAL_MS="3600000"):
        await finished(db, first.id)
        await asyncio.sleep(0.3)  # let the loop go back to waiting
        second = add_job(db, "echo", payload={"woken": True})
        done = await finished(db, second.id)
    assert done.result == {"woken": True}
