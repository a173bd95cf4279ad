"""Workers as operators run them: `levqor worker` and `levqor serve` processes on SQLite and PostgreSQL,
drained under load, killed with SIGKILL, stopped with SIGTERM."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from levqor import queue
from levqor.db.engine import Database
from levqor.db.models import Job
from levqor.db.models import Worker as WorkerRow
from levqor.errors import Conflict
from tests.conftest import LiveServer, start_server_process, stop_server_process
from tests.queue_support import (
    add_job,
    db_env,
    event_types,
    events_of,
    exactly_once_figures,
    get_job,
    wait_for,
    wait_for_status,
    worker_processes,
)

DRAIN_JOBS = 20_000
DRAIN_PROCESSES = 8
ENQUEUE_BATCH = 5_000
DRAIN_DEADLINE_S = 240


def count_where(db: Database, *conditions: object) -> int:
    statement = select(func.count()).select_from(Job).where(*conditions)  # type: ignore[arg-type]
    return int(db.read_sync(lambda s: s.execute(statement).scalar_one()))


def test_eight_worker_processes_drain_20000_jobs_exactly_once(
    db_url: str, db: Database, tmp_path: Path
) -> None:
    for start in range(0, DRAIN_JOBS, ENQUEUE_BATCH):
        batch = [Job(workflow="echo", payload={"n": n}) for n in range(start, start + ENQUEUE_BATCH)]
        db.write_sync(lambda s, b=batch: queue.enqueue_many(s, b))
    assert count_where(db, Job.status == "queued") == DRAIN_JOBS

    with worker_processes(db_url, tmp_path, DRAIN_PROCESSES, "--concurrency", "50") as workers:
        wait_for(
            lambda: count_where(db, Job.status != "succeeded") == 0,
            timeout_s=DRAIN_DEADLINE_S,
            what="every job to succeed",
        )
        assert all(worker.process.poll() is None for worker in workers)

    figures = db.read_sync(exactly_once_figures)
    assert figures["jobs"] == DRAIN_JOBS  # none lost, none made up
    assert figures["double_claims"] == 0  # no attempt claimed twice
    assert figures["successes"] == DRAIN_JOBS  # each succeeded once
    assert figures["double_successes"] == 0
    assert figures["claims"] == DRAIN_JOBS
    assert figures["retried"] == 0
    assert figures["workers"] > 1  # the processes shared the work
    results = db.read_sync(lambda s: s.execute(select(Job.payload, Job.result)).all())
    assert all(result == payload for payload, result in results)


def test_a_killed_worker_s_job_is_retried_elsewhere_and_succeeds_once(
    db_url: str, db: Database, tmp_path: Path, server: LiveServer
) -> None:
    env = {"LEVQOR_LEASE_S": "2", "LEVQOR_RETRY_BASE_MS": "100"}
    job = add_job(db, "sleep", payload={"seconds": 3})
    with worker_processes(db_url, tmp_path, 1, "--concurrency", "1", **env) as (doomed,):
        running = wait_for_status(db, job.id, "running")
        killed_worker, killed_attempt = running.worker_id, running.attempts
        doomed.signal(signal.SIGKILL)
        doomed.wait()

    (tmp_path / "second").mkdir()
    with worker_processes(db_url, tmp_path / "second", 1, **env):
        done = wait_for_status(db, job.id, "succeeded", "failed")

    assert (done.status, done.attempts, done.result) == ("succeeded", 2, {"slept_s": 3})
    assert done.worker_id != killed_worker
    events = events_of(db, job.id)
    assert [event.type for event in events] == [
        "submitted",
        "claimed",
        "lease_expired",
        "claimed",
        "succeeded",
    ]
    assert [event.worker_id for event in events if event.type == "claimed"] == [killed_worker, done.worker_id]

    # A completion from the killed attempt, arriving late, changes nothing.
    assert killed_worker is not None
    late = {"worker_id": killed_worker, "attempt": killed_attempt, "result": {"late": True}}
    with pytest.raises(Conflict):
        db.write_sync(lambda s: queue.complete(s, job_id=job.id, **late))  # type: ignore[arg-type]
    with server.client() as http:
        response = http.post(f"/api/v1/jobs/{job.id}/complete", json=late)
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert get_job(db, job.id).result == {"slept_s": 3}


def test_sigterm_hands_running_jobs_back_without_spending_an_attempt(
    db_url: str, db: Database, tmp_path: Path
) -> None:
    env = {"LEVQOR_SHUTDOWN_GRACE_S": "1"}
    jobs = [add_job(db, "sleep", payload={"seconds": 4}) for _ in range(3)]
    quick = add_job(db, "echo", payload={"quick": True})
    with worker_processes(db_url, tmp_path, 1, "--concurrency", "4", **env) as (worker,):
        for job in jobs:
            wait_for_status(db, job.id, "running")
        worker.signal(signal.SIGTERM)
        assert worker.wait(timeout_s=30) == 0, worker.log()

    assert get_job(db, quick.id).status == "succeeded"
    for job in jobs:
        handed_back = get_job(db, job.id)
        assert (handed_back.status, handed_back.attempts) == ("queued", 0)
        assert event_types(db, job.id) == ["submitted", "claimed", "released"]
    stopped = db.read_sync(lambda s: s.execute(select(WorkerRow.stopped_at)).scalars().all())
    assert all(at is not None for at in stopped)

    (tmp_path / "next").mkdir()
    with worker_processes(db_url, tmp_path / "next", 1, "--concurrency", "4"):
        for job in jobs:
            done = wait_for_status(db, job.id, "succeeded", "failed")
            assert (done.status, done.attempts) == ("succeeded", 1)


def test_a_worker_in_another_process_is_woken_for_new_jobs(db_url: str, db: Database, tmp_path: Path) -> None:
    """PostgreSQL: polling an hour apart, so only LISTEN/NOTIFY can deliver the job. SQLite has no
    cross-process notification; its short polling delivers it."""
    poll_ms = "3600000" if db_url.startswith("postgresql") else "50"
    with worker_processes(db_url, tmp_path, 1, LEVQOR_POLL_INTERVAL_MS=poll_ms) as (worker,):
        wait_for(
            lambda: db.read_sync(
                lambda s: s.execute(select(func.count()).select_from(WorkerRow)).scalar_one()
            ),
            what="the worker to start",
        )
        time.sleep(0.5)  # let it finish its first, empty claim and go idle
        job = add_job(db, "echo", payload={"woken": True})
        done = wait_for_status(db, job.id, "succeeded", timeout_s=20)
        assert done.result == {"woken": True}, worker.log()


def test_levqor_serve_runs_submitted_jobs_in_process(db_url: str, tmp_path: Path) -> None:
    env = {
        **db_env(db_url),
        "LEVQOR_LOG_FORMAT": "json",
        "RATE_BURST": "1000000",
        "RATE_GLOBAL": "1000000",
        "LEVQOR_INPROCESS_WORKER": "true",
    }
    proc = start_server_process(env, tmp_path / "server.log")
    try:
        payload = {"text": "héllo", "nested": {"list": [1, 2, 3]}}
        accepted = httpx.post(f"{proc.url}/api/v1/intake", json={"workflow": "echo", "payload": payload})
        assert accepted.status_code == 202
        job_id = accepted.json()["job_id"]

        def finished() -> dict[str, object] | None:
            status: dict[str, object] = httpx.get(f"{proc.url}/api/v1/status/{job_id}").json()
            return status if status["status"] in ("succeeded", "failed") else None

        status = wait_for(finished, what="the in-process worker to run the job")
        assert status["status"] == "succeeded", proc.log()
        assert status["result"] == payload
        detail = httpx.get(f"{proc.url}/api/v1/jobs/{job_id}").json()
        assert [event["type"] for event in detail["events"]] == ["submitted", "claimed", "succeeded"]
        health = httpx.get(f"{proc.url}/api/v1/ops/health").json()
        assert health["workers"] == 1
    finally:
        stop_server_process(proc)
    assert "worker stopped" in proc.log()  # the lifespan stopped the worker on SIGTERM


def test_levqor_serve_without_a_worker_leaves_jobs_queued(db_url: str, tmp_path: Path) -> None:
    env = {
        **db_env(db_url),
        "RATE_BURST": "1000000",
        "RATE_GLOBAL": "1000000",
        "LEVQOR_INPROCESS_WORKER": "true",
    }
    proc = start_server_process(env, tmp_path / "server.log", "--no-worker")
    try:
        job_id = httpx.post(f"{proc.url}/api/v1/intake", json={"workflow": "echo", "payload": {}}).json()[
            "job_id"
        ]
        time.sleep(1)
        assert httpx.get(f"{proc.url}/api/v1/status/{job_id}").json()["status"] == "queued"
        assert httpx.get(f"{proc.url}/api/v1/ops/health").json()["workers"] == 0
    finally:
        stop_server_process(proc)
