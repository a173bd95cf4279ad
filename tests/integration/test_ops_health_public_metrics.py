"""`/api/v1/ops/health` and `/public/metrics` computed from rows the test writes, on both databases."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import httpx
import pytest
from sqlmodel import Session, select

from levqor.db.engine import Database
from levqor.db.models import Job, JobEvent, JobStatus, UptimeSample, Worker
from levqor.db.types import utcnow
from levqor.resolvers.context import Context
from levqor.resolvers.health import PUBLIC_METRICS_TTL_S, PublicMetricsCache
from tests.conftest import settings_for
from tests.ops_support import table_out_of_service

LEASE_S = 30  # the default LEVQOR_LEASE_S the test servers run with


def add_job(
    db: Database,
    status: JobStatus,
    *,
    created_at: datetime | None = None,
    events: tuple[JobStatus, ...] | None = None,
) -> None:
    """A job in `status` whose event log records `events` (by default: queued, then `status`)."""
    job = Job(workflow="echo", payload={}, status=status.value, created_at=created_at or utcnow())
    trail = events if events is not None else tuple(dict.fromkeys((JobStatus.QUEUED, status)))

    def write(session: Session) -> None:
        session.add(job)
        session.flush()
        previous: JobStatus | None = None
        for state in trail:
            session.add(JobEvent(job_id=job.id, type="test", from_status=previous, to_status=state.value))
            session.flush()  # ids in order: the newest event is the one with the highest id
            previous = state

    db.write_sync(write)


def wait_for_first_sample(db: Database) -> int:
    """The minute the server marked at start (its sampler runs beside the startup, not before it)."""
    deadline = time.monotonic() + 10
    while not (minutes := db.read_sync(lambda s: s.exec(select(UptimeSample.minute)).all())):
        assert time.monotonic() < deadline, "the server recorded no uptime sample"
        time.sleep(0.02)
    (minute,) = minutes
    return minute


def add_worker(db: Database, worker_id: str, *, seen_ago: timedelta, stopped: bool = False) -> None:
    now = utcnow()
    seen = now - seen_ago
    worker = Worker(id=worker_id, last_seen_at=seen, started_at=seen, stopped_at=now if stopped else None)
    db.write_sync(lambda session: session.add(worker))


# --- ops health ----------------------------------------------------------------------------------


def test_ops_health_reports_the_database_the_queue_and_the_live_workers(
    client: httpx.Client, db: Database
) -> None:
    for status in (JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED):
        add_job(db, status)
    add_worker(db, "live", seen_ago=timedelta(seconds=5))
    add_worker(db, "slow but live", seen_ago=timedelta(seconds=3 * LEASE_S - 10))
    add_worker(db, "silent", seen_ago=timedelta(seconds=3 * LEASE_S + 10))
    add_worker(db, "stopped", seen_ago=timedelta(seconds=1), stopped=True)

    response = client.get("/api/v1/ops/health")
    assert response.status_code == 200
    body = response.json()
    assert body.pop("ts") == pytest.approx(utcnow().timestamp(), abs=60)
    assert body == {"ok": True, "db": True, "queue_depth": 2, "workers": 2}


def test_ops_health_says_so_when_the_database_does_not_answer(client: httpx.Client, db_url: str) -> None:
    with table_out_of_service(db_url, "jobs"):
        response = client.get("/api/v1/ops/health")
    assert response.status_code == 503
    body = response.json()
    assert body["ok"] is False
    assert body["db"] is False
    assert body["queue_depth"] is None
    assert body["workers"] is None
    assert isinstance(body["ts"], int)


# --- public metrics ------------------------------------------------------------------------------


def test_jobs_today_counts_the_jobs_created_since_midnight_utc(client: httpx.Client, db: Database) -> None:
    now = utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    add_job(db, JobStatus.QUEUED, created_at=midnight - timedelta(seconds=1))
    add_job(db, JobStatus.SUCCEEDED, created_at=midnight - timedelta(days=3))
    add_job(db, JobStatus.QUEUED, created_at=midnight)
    add_job(db, JobStatus.FAILED, created_at=now)
    accepted = client.post("/api/v1/intake", json={"workflow": "echo", "payload": {}})
    assert accepted.status_code == 202

    assert client.get("/public/metrics").json()["jobs_today"] == 3


def test_audit_coverage_is_the_share_of_jobs_whose_last_event_is_their_state(
    client: httpx.Client, db: Database
) -> None:
    add_job(db, JobStatus.QUEUED)
    add_job(db, JobStatus.SUCCEEDED, events=(JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED))
    add_job(db, JobStatus.FAILED)
    # Running, but its log stops at queued: a state change without its event.
    add_job(db, JobStatus.RUNNING, events=(JobStatus.QUEUED,))
    # Outside the seven-day window, so it does not count either way.
    add_job(db, JobStatus.RUNNING, created_at=utcnow() - timedelta(days=8), events=())

    assert client.get("/public/metrics").json()["audit_coverage"] == 75.0


def test_audit_coverage_of_jobs_submitted_through_the_api_is_complete(client: httpx.Client) -> None:
    for n in range(3):
        accepted = client.post("/api/v1/intake", json={"workflow": "echo", "payload": {"n": n}})
        assert accepted.status_code == 202
    body = client.get("/public/metrics").json()
    assert body["audit_coverage"] == 100.0
    assert body["jobs_today"] == 3


def test_uptime_is_the_share_of_minutes_with_a_sample_since_the_first_in_the_window(
    client: httpx.Client, db: Database
) -> None:
    # The server marked its start minute; before it, 10 minutes of which 4 were up, and a sample
    # older than the window that must not stretch it.
    started = wait_for_first_sample(db)
    marked = [started - 10, started - 9, started - 5, started - 2, started - 8 * 24 * 60]
    db.write_sync(lambda s: s.add_all([UptimeSample(minute=minute) for minute in marked]))

    body = client.get("/public/metrics").json()
    now_minute = body["last_updated"] // 60
    in_window = [m for m in [*marked, started] if m > now_minute - 7 * 24 * 60]
    expected = round(100 * len(in_window) / (now_minute - min(in_window) + 1), 2)
    assert body["uptime_rolling_7d"] == expected
    assert expected < 50  # 5 of 11 or 12 minutes: the old sample did not count


def test_public_metrics_are_cached_and_graphql_reads_the_same_figures(
    client: httpx.Client, db: Database
) -> None:
    first = client.get("/public/metrics").json()
    add_job(db, JobStatus.QUEUED)
    again = client.get("/public/metrics").json()
    assert again == first  # a new job shows only once the cache expires
    query = "{ publicMetrics { uptimeRolling7d jobsToday auditCoverage lastUpdated } }"
    data = client.post("/graphql", json={"query": query}).json()["data"]["publicMetrics"]
    assert data == {
        "uptimeRolling7d": first["uptime_rolling_7d"],
        "jobsToday": first["jobs_today"],
        "auditCoverage": first["audit_coverage"],
        "lastUpdated": first["last_updated"],
    }


class SteppedClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


@pytest.fixture
def context(db: Database, db_url: str) -> Context:
    return Context(db=db, settings=settings_for(db_url))


async def test_the_cache_recomputes_once_its_ten_seconds_are_over(context: Context, db: Database) -> None:
    clock = SteppedClock()
    cache = PublicMetricsCache(clock=clock)
    assert PUBLIC_METRICS_TTL_S <= 10  # CONTRACT.md §2: cache at most 10 s
    assert (await cache.get(context)).jobs_today == 0
    add_job(db, JobStatus.QUEUED)
    clock.now_s += PUBLIC_METRICS_TTL_S - 0.001
    assert (await cache.get(context)).jobs_today == 0
    clock.now_s += 0.001
    assert (await cache.get(context)).jobs_today == 1
