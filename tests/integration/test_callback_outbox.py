"""The outbox at the queue's level: every terminal path writes its delivery in the transaction of the
change, a rolled-back change writes none, and two delivery loops never send the same attempt."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlmodel import Session, col, select

from levqor import queue
from levqor.callbacks.delivery import Deliverer
from levqor.db.engine import Database
from levqor.db.models import CallbackAttempt, CallbackDelivery, Job
from levqor.db.types import utcnow
from levqor.queue import Outcome, OutcomeKind
from tests.callback_support import Receiver, new_webhook_secret, receivers
from tests.conftest import settings_for
from tests.queue_support import add_job

pytestmark = pytest.mark.timeout(120)

URL = "https://hooks.example.com/levqor"
WORKER = "test-worker"


@pytest.fixture
def make_receiver() -> Iterator[Callable[[], Receiver]]:
    yield from receivers()


def deliveries(db: Database, job_id: uuid.UUID | None = None) -> list[CallbackDelivery]:
    statement = select(CallbackDelivery).order_by(col(CallbackDelivery.id))
    if job_id is not None:
        statement = statement.where(CallbackDelivery.job_id == job_id)
    return db.read_sync(lambda session: list(session.exec(statement)))


def claimed(db: Database, job: Job, lease_s: int = 30) -> int:
    (one,) = db.write_sync(
        lambda session: queue.claim_jobs(
            session, worker_id=WORKER, workflows=None, max_jobs=1, lease_s=lease_s
        )
    )
    assert one.id == job.id
    return one.attempt


def test_a_success_queues_its_callback_and_a_rollback_queues_nothing(db: Database) -> None:
    job = add_job(db, payload={"x": 1}, callback_url=URL, submitted_by="dev")
    attempt = claimed(db, job)
    outcome = Outcome(job.id, WORKER, attempt, OutcomeKind.SUCCEEDED, result={"ok": True}, cost_micros=42)

    def then_fail(session: Session) -> None:
        assert queue.record_outcomes(session, [outcome]) == [job.id]
        raise RuntimeError("the transaction rolls back")

    with pytest.raises(RuntimeError):
        db.write_sync(then_fail)
    assert deliveries(db) == []

    db.write_sync(lambda session: queue.record_outcomes(session, [outcome]))
    (delivery,) = deliveries(db)
    assert (delivery.job_id, delivery.url, delivery.status, delivery.attempts) == (job.id, URL, "pending", 0)
    assert delivery.event_type == "job.succeeded"
    assert delivery.signed_by == "dev"
    assert delivery.webhook_id.startswith("msg_")
    body = json.loads(delivery.body)
    assert body["type"] == "job.succeeded"
    assert body["data"]["result"] == {"ok": True}
    assert body["data"]["cost_actual_micros"] == 42
    assert "cost_estimate_micros" not in body["data"]  # cost fields only when they exist
    # Recording the same outcome again (a duplicate report) changes nothing and queues nothing more.
    assert db.write_sync(lambda session: queue.record_outcomes(session, [outcome])) == []
    assert len(deliveries(db)) == 1


def test_every_terminal_path_queues_one_callback_and_the_others_none(db: Database) -> None:
    failed = add_job(db, callback_url=URL, max_attempts=1)
    attempt = claimed(db, failed)
    error = {"type": "failed", "message": "no"}
    db.write_sync(lambda s: queue.fail(s, job_id=failed.id, worker_id=WORKER, attempt=attempt, error=error))

    retried = add_job(db, callback_url=URL, max_attempts=3)
    attempt = claimed(db, retried)
    db.write_sync(lambda s: queue.fail(s, job_id=retried.id, worker_id=WORKER, attempt=attempt, error=error))
    assert deliveries(db, retried.id) == []  # back to queued: not terminal, no callback yet

    cancelled = add_job(db, callback_url=URL, run_at=utcnow() + timedelta(hours=1))
    db.write_sync(lambda s: queue.cancel(s, cancelled.id))

    forced = add_job(db, callback_url=URL)
    db.write_sync(lambda s: queue.force_complete(s, forced.id, {"by": "hand"}))

    expired = add_job(db, callback_url=URL, max_attempts=1)
    claimed(db, expired, lease_s=1)
    assert db.write_sync(lambda s: queue.reap_expired(s, now=utcnow() + timedelta(seconds=5))) == 1

    without = add_job(db)
    attempt = claimed(db, without)
    db.write_sync(
        lambda s: queue.complete(s, job_id=without.id, worker_id=WORKER, attempt=attempt, result={})
    )

    types = {d.job_id: d.event_type for d in deliveries(db)}
    assert types == {
        failed.id: "job.failed",
        cancelled.id: "job.cancelled",
        forced.id: "job.succeeded",
        expired.id: "job.failed",
    }
    body = json.loads(deliveries(db, expired.id)[0].body)
    assert body["data"]["error"]["type"] == "lease_expired"


async def test_two_delivery_loops_never_send_the_same_attempt(
    db_url: str, db: Database, make_receiver: Callable[[], Receiver]
) -> None:
    receiver = make_receiver()
    secret = new_webhook_secret()
    jobs = 120
    job_rows = [Job(workflow="echo", payload={"n": n}, callback_url=receiver.url) for n in range(jobs)]
    db.write_sync(lambda s: queue.enqueue_many(s, job_rows))
    claims = db.write_sync(
        lambda s: queue.claim_jobs(s, worker_id=WORKER, workflows=None, max_jobs=jobs, lease_s=30)
    )
    outcomes = [Outcome(c.id, WORKER, c.attempt, OutcomeKind.SUCCEEDED, result={}) for c in claims]
    db.write_sync(lambda s: queue.record_outcomes(s, outcomes))
    settings = settings_for(db_url, LEVQOR_CALLBACK_ALLOW_PRIVATE="true", LEVQOR_WEBHOOK_SECRET=secret)
    # Two loops on two engines, as two processes would be; small concurrency so both claim often.
    databases = [Database(db_url), Database(db_url)]
    loops = [
        Deliverer(database, settings, worker_id=f"loop-{n}", concurrency=8)
        for n, database in enumerate(databases)
    ]
    tasks = [asyncio.create_task(loop.run()) for loop in loops]
    try:
        for _ in range(600):
            if len(receiver.snapshot()) >= jobs:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # time for a second send of anything, were one coming
    finally:
        for loop in loops:
            loop.stop()
        await asyncio.gather(*tasks)
        for database in databases:
            database.dispose()
    hits = receiver.snapshot()
    assert Counter(hit.headers["webhook-id"] for hit in hits).most_common(1)[0][1] == 1
    assert len(hits) == jobs
    attempts = db.read_sync(lambda s: list(s.exec(select(CallbackAttempt))))
    assert len(attempts) == jobs
    assert all(a.status_code == 200 for a in attempts)
    assert {d.status for d in deliveries(db)} == {"delivered"}
