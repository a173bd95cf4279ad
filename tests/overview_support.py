"""A set of jobs and workers whose overview is known, written straight to the database around a
given `now`: the figures in `EXPECTED` follow from the timestamps below."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from levqor.db.engine import Database
from levqor.db.models import Job, JobStatus, Worker

LEASE_S = 30  # the test settings' LEVQOR_LEASE_S default: workers live for three leases


@dataclass
class Seeded:
    """The ids of what was written, by name."""

    jobs: dict[str, str] = field(default_factory=dict)


def _ago(now: datetime, seconds: float) -> datetime:
    return now - timedelta(seconds=seconds)


def _job(now: datetime, status: JobStatus, **times: Any) -> Job:
    """A job with its times given in seconds before `now` (negative: after), and its other fields."""
    values = {k: v for k, v in times.items() if not k.endswith("_ago")}
    for name in ("created_at", "run_at", "started_at", "finished_at"):
        if f"{name}_ago" in times:
            values[name] = _ago(now, times[f"{name}_ago"])
    values.setdefault("created_at", now - timedelta(hours=3))
    values.setdefault("run_at", values["created_at"])
    return Job(workflow=values.pop("workflow", "echo"), status=status.value, **values)


def _started(now: datetime, status: JobStatus, started_ago: float, pickup_ms: float, **extra: Any) -> Job:
    """A job due `pickup_ms` before it first started, `started_ago` seconds before `now`."""
    due = started_ago + pickup_ms / 1000
    return _job(now, status, created_at_ago=due, run_at_ago=due, started_at_ago=started_ago, **extra)


def seed_overview(db: Database, now: datetime) -> Seeded:
    seeded = Seeded()
    running = {"attempts": 1, "lease_expires_at": now + timedelta(seconds=LEASE_S)}
    jobs = {
        # Queued: two due, one waiting on a parent step, one scheduled later.
        "q1": _job(now, JobStatus.QUEUED, created_at_ago=130, run_at_ago=120),
        "q2": _job(now, JobStatus.QUEUED, created_at_ago=30, run_at_ago=30),
        "q3": _job(now, JobStatus.QUEUED, created_at_ago=500, run_at_ago=500, waiting_on=1),
        "s1": _job(now, JobStatus.QUEUED, created_at_ago=10, run_at_ago=-600),
        # Running, on a worker seen a second ago, one seen 20 s ago, and one gone silent.
        "r1": _started(now, JobStatus.RUNNING, 300, 10, worker_id="w-new", progress={"done": 3}, **running),
        "r2": _started(now, JobStatus.RUNNING, 200, 20, worker_id="w-new", workflow="sleep", **running),
        "r3": _started(now, JobStatus.RUNNING, 100, 30, worker_id="w-older", **running),
        "r4": _started(now, JobStatus.RUNNING, 50, 40, worker_id="w-silent", **running),
        # Finished within the last hour.
        "f1": _started(now, JobStatus.SUCCEEDED, 1900, 1000, finished_at_ago=1830, attempts=1),
        "f2": _started(now, JobStatus.FAILED, 95, 20, finished_at_ago=90, attempts=1),
        # First started in the window, but a retry moved its run_at past that start: no pickup.
        "rt": _job(
            now,
            JobStatus.SUCCEEDED,
            created_at_ago=500,
            run_at_ago=100,
            started_at_ago=400,
            finished_at_ago=50,
            attempts=1,
        ),
        # Finished earlier than the hour: in a three-hour window only.
        "f3": _job(now, JobStatus.CANCELLED, created_at_ago=7100, finished_at_ago=7000),
        "o1": _started(now, JobStatus.SUCCEEDED, 5000, 5, finished_at_ago=4000, attempts=1),
    }
    workers = [
        Worker(id="w-new", workflows=["echo", "sleep"], started_at=_ago(now, 900), last_seen_at=_ago(now, 1)),
        Worker(id="w-older", workflows=["echo"], started_at=_ago(now, 800), last_seen_at=_ago(now, 20)),
        Worker(id="w-silent", workflows=["echo"], started_at=_ago(now, 900), last_seen_at=_ago(now, 3600)),
        Worker(
            id="w-stopped",
            workflows=["echo"],
            started_at=_ago(now, 900),
            last_seen_at=_ago(now, 1),
            stopped_at=_ago(now, 1),
        ),
    ]

    def write(session: Session) -> None:
        for name, job in jobs.items():  # one at a time, so `seq` follows this order
            session.add(job)
            session.flush()
            seeded.jobs[name] = str(job.id)
        for worker in workers:
            session.add(worker)

    db.write_sync(write)
    return seeded


# The overview of the seed at its `now`, for the default window (an hour in 60 buckets).
EXPECTED_COUNTS = {"queued": 4, "running": 4, "succeeded": 3, "failed": 1, "cancelled": 1}
EXPECTED_QUEUE = {"queue_depth": 2, "scheduled": 1, "oldest_queued_age_s": 120.0}
# Pickups in the hour: 10, 20, 20, 30, 40 and 1000 ms; p50 at rank 2.5, p95 at rank 4.75.
EXPECTED_PICKUP_HOUR = (25.0, 760.0)
# In three hours o1's 5 ms joins: 5, 10, 20, 20, 30, 40, 1000; p50 at rank 3, p95 at rank 5.7.
EXPECTED_PICKUP_3H = (20.0, 40 + 0.7 * 960)
# Bucket index: (succeeded, failed, cancelled), the others all 0.
EXPECTED_HOUR_BUCKETS = {29: (1, 0, 0), 58: (0, 1, 0), 59: (1, 0, 0)}
EXPECTED_3H_BUCKETS = {0: (0, 0, 0), 1: (1, 0, 1), 2: (2, 1, 0)}
