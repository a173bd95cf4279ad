"""Helpers for the queue and worker tests: seeding jobs, reading rows and events, worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlmodel import Session, col, select

from levqor import queue
from levqor.db.engine import Database
from levqor.db.models import Job, JobEvent
from tests.conftest import ROOT

T = TypeVar("T")

TEST_WORKFLOWS = "tests.support_workflows"


def add_job(db: Database, workflow: str = "echo", **fields: Any) -> Job:
    """Enqueue one job the way intake does (with its `submitted` event)."""
    fields.setdefault("payload", {})
    return db.write_sync(lambda session: queue.enqueue(session, Job(workflow=workflow, **fields)))


def get_job(db: Database, job_id: uuid.UUID) -> Job:
    def run(session: Session) -> Job:
        job = session.exec(select(Job).where(col(Job.id) == job_id)).one()
        return job

    return db.read_sync(run)


def events_of(db: Database, job_id: uuid.UUID) -> list[JobEvent]:
    return db.read_sync(
        lambda session: list(
            session.exec(select(JobEvent).where(col(JobEvent.job_id) == job_id).order_by(col(JobEvent.id)))
        )
    )


def event_types(db: Database, job_id: uuid.UUID) -> list[str]:
    return [event.type for event in events_of(db, job_id)]


def wait_for(check: Callable[[], T | None], *, timeout_s: float = 30, what: str = "condition") -> T:
    """Poll until `check` returns something truthy; fail with `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_for_status(db: Database, job_id: uuid.UUID, *statuses: str, timeout_s: float = 30) -> Job:
    return wait_for(
        lambda: job if (job := get_job(db, job_id)).status in statuses else None,
        timeout_s=timeout_s,
        what=f"job {job_id} to be {' or '.join(statuses)}",
    )


def exactly_once_figures(session: Session) -> dict[str, int]:
    """What the job event log says about delivery: jobs, claims, attempts claimed twice, successes,
    jobs that succeeded twice, jobs retried and the workers that ran them."""

    def one(sql: str) -> int:
        return int(session.execute(text(sql)).scalar_one())

    return {
        "jobs": one("SELECT count(*) FROM jobs"),
        "claims": one("SELECT count(*) FROM job_events WHERE type = 'claimed'"),
        "double_claims": one(
            "SELECT count(*) FROM (SELECT job_id, attempt FROM job_events WHERE type = 'claimed' "
            "GROUP BY job_id, attempt HAVING count(*) > 1) AS twice"
        ),
        "successes": one("SELECT count(*) FROM job_events WHERE type = 'succeeded'"),
        "double_successes": one(
            "SELECT count(*) FROM (SELECT job_id FROM job_events WHERE type = 'succeeded' "
            "GROUP BY job_id HAVING count(*) > 1) AS twice"
        ),
        "retried": one("SELECT count(*) FROM jobs WHERE attempts <> 1"),
        "workers": one("SELECT count(DISTINCT worker_id) FROM jobs"),
    }


def db_env(db_url: str) -> dict[str, str]:
    """The environment that points a `levqor` process at the test database."""
    if db_url.startswith("sqlite"):
        return {"SQLITE_PATH": make_url(db_url).database or ""}
    return {"LEVQOR_DATABASE_URL": db_url}


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout_s: float = 60) -> int:
        return self.process.wait(timeout=timeout_s)


def start_worker_process(db_url: str, log_path: Path, *args: str, **env: str) -> WorkerProcess:
    """`levqor worker` as an operator runs it, with the test workflows importable."""
    full_env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "LEVQOR_LOG_FORMAT": "json",
        "LEVQOR_WORKFLOWS": TEST_WORKFLOWS,
        **db_env(db_url),
        **env,
    }
    with log_path.open("wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(
            [sys.executable, "-m", "levqor", "worker", *args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_path.parent,
        )
    return WorkerProcess(process=process, log_path=log_path)


@contextmanager
def worker_processes(
    db_url: str, directory: Path, count: int, *args: str, **env: str
) -> Iterator[list[WorkerProcess]]:
    """Start `count` worker processes; at exit stop any still running (SIGTERM, then SIGKILL)."""
    started = [
        start_worker_process(db_url, directory / f"worker-{index}.log", *args, **env)
        for index in range(count)
    ]
    try:
        yield started
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.signal(signal.SIGTERM)
        for worker in started:
            try:
                worker.wait(timeout_s=30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.wait()
