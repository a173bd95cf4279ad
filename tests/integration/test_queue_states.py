"""The queue's state machine on SQLite and PostgreSQL: every transition, the illegal ones, and fencing.

These call `levqor.queue` directly in write transactions, as the worker and the worker API do.
Times that matter (`run_at`, lease expiry) are passed in, so nothing here waits on a clock.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import Session

from levqor import queue
from levqor.db.engine import Database
from levqor.db.models import Job, Priority
from levqor.db.types import utcnow
from levqor.errors import Conflict, NotFound
from levqor.queue import Backoff, ClaimedJob, Lease, Outcome, OutcomeKind
from tests.queue_support import add_job, event_types, events_of, get_job

LEASE_S = 30


def claim(db: Database, worker_id: str = "w1", max_jobs: int = 10, **options: Any) -> list[ClaimedJob]:
    return db.write_sync(
        lambda session: queue.claim_jobs(
            session,
            worker_id=worker_id,
            workflows=options.pop("workflows", None),
            max_jobs=max_jobs,
            lease_s=options.pop("lease_s", LEASE_S),
            **options,
        )
    )


def claim_one(db: Database, worker_id: str = "w1", **options: Any) -> ClaimedJob:
    claimed = claim(db, worker_id, max_jobs=1, **options)
    assert len(claimed) == 1
    return claimed[0]


def snapshot(job: Job) -> dict[str, Any]:
    return job.model_dump(exclude={"updated_at"})


# --- claiming ------------------------------------------------------------------------------------


def test_claim_orders_by_priority_then_run_at_then_arrival(db: Database) -> None:
    now = utcnow()
    low = add_job(db, priority=Priority.LOW.rank)
    normal_late = add_job(db, priority=Priority.NORMAL.rank, run_at=now + timedelta(minutes=1))
    normal_first = add_job(db, priority=Priority.NORMAL.rank)
    normal_second = add_job(db, priority=Priority.NORMAL.rank)
    high = add_job(db, priority=Priority.HIGH.rank)

    order = [job.id for job in claim(db, max_jobs=10, now=now + timedelta(minutes=2))]

    assert order == [high.id, normal_first.id, normal_second.id, normal_late.id, low.id]


def test_claim_takes_at_most_max_jobs_and_never_the_same_job_twice(db: Database) -> None:
    jobs = [add_job(db, payload={"i": index}) for index in range(5)]

    first = claim(db, "w1", max_jobs=3)
    second = claim(db, "w2", max_jobs=3)

    assert len(first) == 3
    assert len(second) == 2
    assert {job.id for job in first} | {job.id for job in second} == {job.id for job in jobs}
    assert claim(db, "w3") == []


def test_claim_starts_an_attempt_with_a_lease_and_a_claimed_event(db: Database) -> None:
    job = add_job(db, payload={"text": "héllo"}, timeout_s=77)
    now = utcnow()

    claimed = claim_one(db, "worker-a", now=now, lease_s=12)

    assert claimed.id == job.id
    assert claimed.attempt == 1
    assert claimed.payload == {"text": "héllo"}
    assert claimed.timeout_s == 77
    assert claimed.lease_expires_at == now + timedelta(seconds=12)
    row = get_job(db, job.id)
    assert row.status == "running"
    assert row.attempts == 1
    assert row.worker_id == "worker-a"
    assert row.lease_expires_at == now + timedelta(seconds=12)
    assert row.started_at == now
    claimed_event = events_of(db, job.id)[-1]
    assert (claimed_event.type, claimed_event.from_status, claimed_event.to_status) == (
        "claimed",
        "queued",
        "running",
    )
    assert (claimed_event.attempt, claimed_event.worker_id) == (1, "worker-a")


def test_scheduled_job_is_not_claimed_before_its_run_at(db: Database) -> None:
    now = utcnow()
    job = add_job(db, run_at=now + timedelta(hours=1))

    assert claim(db, now=now) == []
    assert get_job(db, job.id).status == "queued"
    assert [c.id for c in claim(db, now=now + timedelta(hours=1, seconds=1))] == [job.id]


def test_claim_filters_by_workflow(db: Database) -> None:
    echo = add_job(db, "echo")
    sleep = add_job(db, "sleep")

    assert [c.id for c in claim(db, workflows=["sleep"])] == [sleep.id]
    assert claim(db, workflows=[]) == []
    assert [c.id for c in claim(db, workflows=["echo", "other"])] == [echo.id]


# --- heartbeats and fencing ----------------------------------------------------------------------


def test_heartbeat_extends_the_lease_and_records_progress(db: Database) -> None:
    add_job(db)
    claimed = claim_one(db, lease_s=5)

    beat = db.write_sync(
        lambda s: queue.heartbeat(
            s, job_id=claimed.id, worker_id="w1", attempt=1, lease_s=60, progress={"done": 3}
        )
    )

    assert beat.cancel_requested is False
    assert beat.lease_expires_at > claimed.lease_expires_at + timedelta(seconds=50)
    assert get_job(db, claimed.id).lease_expires_at == beat.lease_expires_at
    progress = events_of(db, claimed.id)[-1]
    assert (progress.type, progress.detail) == ("progress", {"done": 3})


@pytest.mark.parametrize(("worker_id", "attempt"), [("w2", 1), ("w1", 2), ("w1", 0)])
def test_a_stale_worker_or_attempt_changes_nothing(db: Database, worker_id: str, attempt: int) -> None:
    add_job(db)
    claimed = claim_one(db, "w1")
    before = snapshot(get_job(db, claimed.id))
    events_before = event_types(db, claimed.id)
    fenced = {"job_id": claimed.id, "worker_id": worker_id, "attempt": attempt}

    calls = [
        lambda s: queue.heartbeat(s, lease_s=60, **fenced),
        lambda s: queue.complete(s, result={"late": True}, **fenced),
        lambda s: queue.fail(s, error={"late": True}, **fenced),
        lambda s: queue.fail(s, error={"late": True}, retryable=False, **fenced),
        lambda s: queue.cancelled(s, **fenced),
        lambda s: queue.release(s, **fenced),
    ]
    for call in calls:
        with pytest.raises(Conflict, match="lease lost"):
            db.write_sync(call)

    stale = Outcome(claimed.id, worker_id, attempt, OutcomeKind.SUCCEEDED, result={})
    assert db.write_sync(lambda s: queue.complete_many(s, [stale])) == []
    assert snapshot(get_job(db, claimed.id)) == before
    assert event_types(db, claimed.id) == events_before


def test_heartbeat_many_answers_only_for_leases_still_held(db: Database) -> None:
    kept, lost = add_job(db), add_job(db)
    claim(db, "w1", max_jobs=2)
    db.write_sync(lambda s: queue.complete(s, job_id=lost.id, worker_id="w1", attempt=1, result={}))

    beats = db.write_sync(
        lambda s: queue.heartbeat_many(
            s, worker_id="w1", leases=[Lease(kept.id, 1), Lease(lost.id, 1)], lease_s=LEASE_S
        )
    )

    assert set(beats) == {kept.id}


# --- outcomes ------------------------------------------------------------------------------------


def test_complete_records_result_and_cost(db: Database) -> None:
    add_job(db)
    claimed = claim_one(db)

    job = db.write_sync(
        lambda s: queue.complete(
            s, job_id=claimed.id, worker_id="w1", attempt=1, result={"answer": 42}, cost_micros=1500
        )
    )

    assert job.status == "succeeded"
    assert job.result == {"answer": 42}
    assert job.cost_actual_micros == 1500
    assert job.finished_at is not None
    assert job.lease_expires_at is None
    assert event_types(db, claimed.id) == ["submitted", "claimed", "succeeded"]
    with pytest.raises(Conflict):
        db.write_sync(lambda s: queue.complete(s, job_id=claimed.id, worker_id="w1", attempt=1, result={}))


def test_retryable_failure_goes_back_to_queued_after_a_jittered_backoff(db: Database) -> None:
    add_job(db, max_attempts=3)
    backoff = Backoff(base_s=10, max_s=3600)
    claimed = claim_one(db)

    before = utcnow()
    job = db.write_sync(
        lambda s: queue.fail(
            s, job_id=claimed.id, worker_id="w1", attempt=1, error={"why": "flaky"}, backoff=backoff
        )
    )
    assert job.status == "queued"
    assert job.error == {"why": "flaky"}
    assert job.attempts == 1
    # Attempt 1 waits between half and all of base_s.
    assert before + timedelta(seconds=5) <= job.run_at <= utcnow() + timedelta(seconds=10)
    assert event_types(db, job.id)[-1] == "retry_scheduled"
    assert claim(db, now=utcnow()) == []  # not before its run_at

    second = claim_one(db, now=job.run_at)
    assert second.attempt == 2
    job = db.write_sync(
        lambda s: queue.fail(s, job_id=job.id, worker_id="w1", attempt=2, error={}, backoff=backoff)
    )
    # Attempt 2 waits between half and all of 2 * base_s.
    assert before + timedelta(seconds=10) <= job.run_at <= utcnow() + timedelta(seconds=20)


def test_backoff_doubles_within_bounds_and_is_capped() -> None:
    backoff = Backoff(base_s=1, max_s=30)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 30), (20, 30)]:
        delays = [backoff.delay_s(attempt) for _ in range(50)]
        assert all(ceiling / 2 <= delay <= ceiling for delay in delays), (attempt, delays)
    assert len({Backoff(base_s=8).delay_s(3) for _ in range(20)}) > 1  # jittered


def test_retry_after_overrides_the_backoff(db: Database) -> None:
    add_job(db)
    claimed = claim_one(db)
    before = utcnow()

    job = db.write_sync(
        lambda s: queue.fail(s, job_id=claimed.id, worker_id="w1", attempt=1, error={}, retry_after_s=120)
    )

    assert before + timedelta(seconds=120) <= job.run_at <= utcnow() + timedelta(seconds=120)


def test_not_retryable_fails_at_once(db: Database) -> None:
    add_job(db, max_attempts=5)
    claimed = claim_one(db)

    job = db.write_sync(
        lambda s: queue.fail(
            s, job_id=claimed.id, worker_id="w1", attempt=1, error={"bad": "input"}, retryable=False
        )
    )

    assert (job.status, job.attempts, job.error) == ("failed", 1, {"bad": "input"})
    assert events_of(db, job.id)[-1].detail == {"reason": "not retryable"}


def test_the_last_attempt_fails_the_job(db: Database) -> None:
    job = add_job(db, max_attempts=2)
    for attempt in (1, 2):
        claimed = claim_one(db, now=utcnow() + timedelta(hours=2 * attempt))
        assert claimed.attempt == attempt
        job = db.write_sync(
            lambda s, c=claimed: queue.fail(
                s, job_id=c.id, worker_id="w1", attempt=c.attempt, error={"n": c.attempt}
            )
        )
    assert (job.status, job.attempts, job.error) == ("failed", 2, {"n": 2})
    assert event_types(db, job.id) == [
        "submitted",
        "claimed",
        "retry_scheduled",
        "claimed",
        "failed",
    ]


def test_complete_many_applies_what_is_fresh_and_skips_what_is_stale(db: Database) -> None:
    jobs = [add_job(db, max_attempts=1) for _ in range(3)]
    claim(db, "w1", max_jobs=3)
    batch = [
        Outcome(jobs[0].id, "w1", 1, OutcomeKind.SUCCEEDED, result={"n": 0}),
        Outcome(jobs[1].id, "w1", 1, OutcomeKind.FAILED, error={"n": 1}),
        Outcome(jobs[2].id, "intruder", 1, OutcomeKind.SUCCEEDED, result={"n": 2}),
    ]

    applied = db.write_sync(lambda s: queue.complete_many(s, batch))

    assert applied == [jobs[0].id, jobs[1].id]
    assert [get_job(db, job.id).status for job in jobs] == ["succeeded", "failed", "running"]
    assert get_job(db, jobs[0].id).result == {"n": 0}


def test_release_hands_the_job_back_without_spending_the_attempt(db: Database) -> None:
    job = add_job(db)
    claim_one(db)

    released = db.write_sync(lambda s: queue.release(s, job_id=job.id, worker_id="w1", attempt=1))

    assert (released.status, released.attempts, released.lease_expires_at) == ("queued", 0, None)
    assert event_types(db, job.id)[-1] == "released"
    again = claim_one(db, "w2")
    assert (again.id, again.attempt) == (job.id, 1)


# --- the reaper ----------------------------------------------------------------------------------


def test_reaper_takes_back_expired_leases_only(db: Database) -> None:
    expired, alive = add_job(db), add_job(db)
    now = utcnow()
    claim(db, "dead", max_jobs=1, now=now, lease_s=2)
    claim(db, "alive", max_jobs=1, now=now, lease_s=60)

    taken = db.write_sync(lambda s: queue.reap_expired(s, now=now + timedelta(seconds=3)))

    assert taken == 1
    job = get_job(db, expired.id)
    assert job.status == "queued"
    assert job.run_at > now + timedelta(seconds=3)  # with backoff
    assert job.error is not None
    assert job.error["type"] == "lease_expired"
    assert events_of(db, expired.id)[-1].type == "lease_expired"
    assert get_job(db, alive.id).status == "running"


def test_reaper_fails_a_job_whose_attempts_are_used_up(db: Database) -> None:
    job = add_job(db, max_attempts=1)
    now = utcnow()
    claim(db, "dead", now=now, lease_s=2)

    assert db.write_sync(lambda s: queue.reap_expired(s, now=now + timedelta(seconds=3))) == 1
    failed = get_job(db, job.id)
    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.finished_at is not None


def test_reaper_loses_to_a_heartbeat_that_came_first(db: Database) -> None:
    job = add_job(db)
    now = utcnow()
    claim(db, "w1", now=now, lease_s=2)
    db.write_sync(lambda s: queue.heartbeat(s, job_id=job.id, worker_id="w1", attempt=1, lease_s=60))

    assert db.write_sync(lambda s: queue.reap_expired(s, now=now + timedelta(seconds=3))) == 0
    assert get_job(db, job.id).status == "running"


def test_late_completion_after_the_reaper_gets_conflict(db: Database) -> None:
    job = add_job(db)
    now = utcnow()
    claim(db, "dead", now=now, lease_s=2)
    db.write_sync(lambda s: queue.reap_expired(s, now=now + timedelta(seconds=3)))
    retry = claim_one(db, "w2", now=now + timedelta(hours=1))
    assert retry.attempt == 2

    with pytest.raises(Conflict):
        db.write_sync(lambda s: queue.complete(s, job_id=job.id, worker_id="dead", attempt=1, result={}))
    db.write_sync(lambda s: queue.complete(s, job_id=job.id, worker_id="w2", attempt=2, result={"ok": 1}))
    assert get_job(db, job.id).result == {"ok": 1}


# --- cancel, retry, dev completion ---------------------------------------------------------------


def test_cancel_a_queued_job_at_once(db: Database) -> None:
    job = add_job(db, run_at=utcnow() + timedelta(hours=1))

    cancelled = db.write_sync(lambda s: queue.cancel(s, job.id))

    assert cancelled.status == "cancelled"
    assert cancelled.finished_at is not None
    assert claim(db, now=utcnow() + timedelta(hours=2)) == []
    with pytest.raises(Conflict):
        db.write_sync(lambda s: queue.cancel(s, job.id))


def test_cancel_a_running_job_through_its_heartbeat(db: Database) -> None:
    job = add_job(db)
    claim_one(db)

    requested = db.write_sync(lambda s: queue.cancel(s, job.id))
    assert (requested.status, requested.cancel_requested) == ("running", True)
    assert db.write_sync(lambda s: queue.cancel(s, job.id)).cancel_requested  # asking twice is fine

    beat = db.write_sync(lambda s: queue.heartbeat(s, job_id=job.id, worker_id="w1", attempt=1, lease_s=30))
    assert beat.cancel_requested is True
    done = db.write_sync(lambda s: queue.cancelled(s, job_id=job.id, worker_id="w1", attempt=1))
    assert done.status == "cancelled"
    assert event_types(db, job.id) == ["submitted", "claimed", "cancel_requested", "cancelled"]


def test_a_job_whose_cancel_was_requested_is_not_retried(db: Database) -> None:
    job = add_job(db, max_attempts=5)
    claim_one(db)
    db.write_sync(lambda s: queue.cancel(s, job.id))

    failed = db.write_sync(lambda s: queue.fail(s, job_id=job.id, worker_id="w1", attempt=1, error={}))

    assert failed.status == "cancelled"


def test_retry_puts_failed_and_cancelled_jobs_back_with_fresh_attempts(db: Database) -> None:
    failed = add_job(db, max_attempts=1)
    claim_one(db)
    db.write_sync(lambda s: queue.fail(s, job_id=failed.id, worker_id="w1", attempt=1, error={"x": 1}))
    cancelled = add_job(db)
    db.write_sync(lambda s: queue.cancel(s, cancelled.id))

    for job in (failed, cancelled):
        again = db.write_sync(lambda s, j=job: queue.retry(s, j.id))
        assert (again.status, again.attempts, again.error, again.finished_at) == ("queued", 0, None, None)
        assert event_types(db, job.id)[-1] == "retried"
    assert {c.id for c in claim(db)} == {failed.id, cancelled.id}


def test_retry_and_cancel_refuse_states_that_do_not_allow_them(db: Database) -> None:
    queued = add_job(db)
    with pytest.raises(Conflict):
        db.write_sync(lambda s: queue.retry(s, queued.id))
    claim_one(db)
    with pytest.raises(Conflict):
        db.write_sync(lambda s: queue.retry(s, queued.id))  # running
    db.write_sync(lambda s: queue.complete(s, job_id=queued.id, worker_id="w1", attempt=1, result={}))
    before = snapshot(get_job(db, queued.id))
    for verb in (queue.retry, queue.cancel):
        with pytest.raises(Conflict):
            db.write_sync(lambda s, v=verb: v(s, queued.id))  # succeeded
    assert snapshot(get_job(db, queued.id)) == before


def test_verbs_on_an_unknown_job_are_not_found(db: Database) -> None:
    missing = uuid.UUID(int=1)
    for verb in (queue.cancel, queue.retry):
        with pytest.raises(NotFound):
            db.write_sync(lambda s, v=verb: v(s, missing))


def test_dev_completion_follows_the_state_rules(db: Database) -> None:
    running, queued = add_job(db), add_job(db)
    assert claim_one(db, "w1").id == running.id

    def force(session: Session, job_id: uuid.UUID) -> Job:
        return queue.force_complete(session, job_id, {"by": "hand"})

    assert db.write_sync(lambda s: force(s, running.id)).status == "succeeded"
    assert db.write_sync(lambda s: force(s, queued.id)).status == "succeeded"
    with pytest.raises(Conflict):
        db.write_sync(lambda s: force(s, queued.id))
    # The worker that held the lease cannot overwrite the result.
    with pytest.raises(Conflict):
        db.write_sync(lambda s: queue.complete(s, job_id=running.id, worker_id="w1", attempt=1, result={}))
    assert get_job(db, running.id).result == {"by": "hand"}
    assert event_types(db, running.id)[-1] == "dev_completed"


def test_every_state_change_has_its_event(db: Database) -> None:
    """The newest event of each job names the state the job is in (the audit log is complete)."""
    jobs = [add_job(db, max_attempts=2) for _ in range(6)]
    claimed = claim(db, "w1", max_jobs=5)
    db.write_sync(lambda s: queue.complete(s, job_id=claimed[0].id, worker_id="w1", attempt=1, result={}))
    db.write_sync(lambda s: queue.fail(s, job_id=claimed[1].id, worker_id="w1", attempt=1, error={}))
    db.write_sync(lambda s: queue.release(s, job_id=claimed[2].id, worker_id="w1", attempt=1))
    db.write_sync(lambda s: queue.cancel(s, claimed[3].id))
    db.write_sync(lambda s: queue.cancel(s, jobs[5].id))

    for job in jobs:
        row = get_job(db, job.id)
        last = events_of(db, job.id)[-1]
        assert last.to_status == row.status, (row.status, event_types(db, job.id))
