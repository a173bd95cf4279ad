"""The overview: counts by state, the queue, pickup percentiles, throughput buckets and live workers
with their jobs, from known timestamps on both databases, over REST and GraphQL, and with the
in-process worker's own running job."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text
from sqlmodel import Session

from levqor.db.engine import Database
from levqor.db.models import JobStatus
from levqor.resolvers.overview import OverviewInput, read_overview
from tests.conftest import LiveServer
from tests.overview_support import (
    EXPECTED_3H_BUCKETS,
    EXPECTED_COUNTS,
    EXPECTED_HOUR_BUCKETS,
    EXPECTED_PICKUP_3H,
    EXPECTED_PICKUP_HOUR,
    EXPECTED_QUEUE,
    LEASE_S,
    seed_overview,
)
from tests.queue_support import wait_for
from tests.support import gql_data

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
HELD = "workers { id jobs { id workflow attempt startedAt leaseExpiresAt progress } }"


def bucket_tallies(buckets: list[Any], key: Callable[[Any, str], int]) -> dict[int, tuple[int, int, int]]:
    """The buckets that counted anything, by index."""
    tallies = {
        index: (key(b, "succeeded"), key(b, "failed"), key(b, "cancelled")) for index, b in enumerate(buckets)
    }
    return {index: tally for index, tally in tallies.items() if any(tally)}


def test_figures_from_known_timestamps(db: Database) -> None:
    seeded = seed_overview(db, NOW)
    view = db.read_sync(lambda session: read_overview(session, OverviewInput(), LEASE_S, NOW))

    assert view.generated_at == NOW
    assert view.window_s == 3600
    assert {status.value: count for status, count in view.counts.items()} == EXPECTED_COUNTS
    assert set(view.counts) == set(JobStatus)
    assert (view.queue_depth, view.scheduled) == (EXPECTED_QUEUE["queue_depth"], EXPECTED_QUEUE["scheduled"])
    assert view.oldest_queued_age_s == pytest.approx(EXPECTED_QUEUE["oldest_queued_age_s"], abs=1e-3)
    assert (view.pickup_p50_ms, view.pickup_p95_ms) == pytest.approx(EXPECTED_PICKUP_HOUR, abs=0.01)

    assert len(view.buckets) == 60
    assert view.buckets[0].start == NOW - timedelta(hours=1)
    assert view.buckets[-1].end == NOW
    assert all(b.end - b.start == timedelta(minutes=1) for b in view.buckets)
    assert all(a.end == b.start for a, b in zip(view.buckets, view.buckets[1:], strict=False))
    assert bucket_tallies(view.buckets, getattr) == EXPECTED_HOUR_BUCKETS

    assert [w.id for w in view.workers] == ["w-new", "w-older"]  # newest heartbeat first
    new, older = view.workers
    assert new.workflows == ["echo", "sleep"]
    assert [str(job.id) for job in new.jobs] == [seeded.jobs["r1"], seeded.jobs["r2"]]
    r1, r2 = new.jobs
    assert (r1.workflow, r1.attempt, r1.progress) == ("echo", 1, {"done": 3})
    assert r1.started_at == NOW - timedelta(seconds=300)
    assert r1.lease_expires_at == NOW + timedelta(seconds=LEASE_S)
    assert (r2.workflow, r2.progress) == ("sleep", None)
    assert [str(job.id) for job in older.jobs] == [seeded.jobs["r3"]]


def test_a_longer_window_in_fewer_buckets(db: Database) -> None:
    seed_overview(db, NOW)
    query = OverviewInput(window_s=3 * 3600, buckets=3)
    view = db.read_sync(lambda session: read_overview(session, query, LEASE_S, NOW))
    assert [(b.start, b.end) for b in view.buckets] == [
        (NOW - timedelta(hours=3 - i), NOW - timedelta(hours=2 - i)) for i in range(3)
    ]
    assert bucket_tallies(view.buckets, getattr) == {k: v for k, v in EXPECTED_3H_BUCKETS.items() if any(v)}
    assert (view.pickup_p50_ms, view.pickup_p95_ms) == pytest.approx(EXPECTED_PICKUP_3H, abs=0.01)


def test_one_bucket_and_an_empty_database(db: Database) -> None:
    view = db.read_sync(lambda session: read_overview(session, OverviewInput(buckets=1), LEASE_S, NOW))
    assert view.counts == dict.fromkeys(JobStatus, 0)
    assert (view.queue_depth, view.scheduled, view.oldest_queued_age_s) == (0, 0, None)
    assert (view.pickup_p50_ms, view.pickup_p95_ms) == (None, None)
    [bucket] = view.buckets
    assert (bucket.start, bucket.end, bucket.succeeded, bucket.failed, bucket.cancelled) == (
        NOW - timedelta(hours=1),
        NOW,
        0,
        0,
        0,
    )
    assert view.workers == []


def test_a_single_pickup_is_every_percentile(db: Database) -> None:
    seed_overview(db, NOW)
    # A minute to 20 s before the seed's now holds r4's first start only (50 s before it): 40 ms.
    at = NOW - timedelta(seconds=20)
    view = db.read_sync(lambda session: read_overview(session, OverviewInput(window_s=60), LEASE_S, at))
    assert (view.pickup_p50_ms, view.pickup_p95_ms) == pytest.approx((40.0, 40.0), abs=0.01)


def test_rest_figures_from_rows_written_just_now(client: httpx.Client, db: Database) -> None:
    seeded = seed_overview(db, datetime.now(UTC))
    response = client.get("/api/v1/overview")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["window_s"] == 3600
    assert body["counts"] == EXPECTED_COUNTS
    assert (body["queue_depth"], body["scheduled"]) == (2, 1)
    assert 120 <= body["oldest_queued_age_s"] < 130
    assert (body["pickup_p50_ms"], body["pickup_p95_ms"]) == pytest.approx(EXPECTED_PICKUP_HOUR, abs=0.01)
    assert len(body["buckets"]) == 60
    assert body["buckets"][-1]["end"] == body["generated_at"]
    assert bucket_tallies(body["buckets"], lambda b, k: b[k]) == EXPECTED_HOUR_BUCKETS
    assert [(w["id"], [j["id"] for j in w["jobs"]]) for w in body["workers"]] == [
        ("w-new", [seeded.jobs["r1"], seeded.jobs["r2"]]),
        ("w-older", [seeded.jobs["r3"]]),
    ]
    assert body["workers"][0]["jobs"][0]["progress"] == {"done": 3}

    wide = client.get("/api/v1/overview", params={"window_s": 3 * 3600, "buckets": "3"}).json()
    assert wide["window_s"] == 3 * 3600
    assert bucket_tallies(wide["buckets"], lambda b, k: b[k]) == {
        k: v for k, v in EXPECTED_3H_BUCKETS.items() if any(v)
    }


def test_the_in_process_worker_shows_with_the_job_it_runs(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(LEVQOR_INPROCESS_WORKER="true", LEVQOR_LEASE_S="3")  # a heartbeat a second
    with live.client() as http:
        job_id = http.post("/api/v1/intake", json={"workflow": "sleep", "payload": {"seconds": 30}}).json()[
            "job_id"
        ]

        def holding() -> dict[str, Any] | None:
            workers = gql_data(http, f"{{ overview {{ {HELD} }} }}")["overview"]["workers"]
            return next((w for w in workers if any(j["id"] == job_id for j in w["jobs"])), None)

        worker = wait_for(holding, timeout_s=20, what="the in-process worker holding the job")
        [job] = worker["jobs"]
        assert (job["workflow"], job["attempt"]) == ("sleep", 1)
        assert job["startedAt"] is not None
        assert job["leaseExpiresAt"] is not None
        assert http.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
        # The worker stops it at its next heartbeat, and then holds nothing.
        wait_for(lambda: holding() is None or None, timeout_s=20, what="the job to stop")
        overview = http.get("/api/v1/overview").json()
        assert overview["counts"] == {**dict.fromkeys(EXPECTED_COUNTS, 0), "cancelled": 1}
        assert [w["jobs"] for w in overview["workers"]] == [[]]


def test_the_window_is_read_through_the_finished_jobs_index(db: Database) -> None:
    """The throughput and pickup statements reach the window's finished jobs through
    ix_jobs_finished_at, not by reading every job (bench/README.md, bench/dashboard.py)."""
    seed_overview(db, NOW)
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if "finished_at >=" in statement:
            captured.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        db.read_sync(lambda session: read_overview(session, OverviewInput(), LEASE_S, NOW))
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    assert len(captured) == 2  # the pickup latencies and the buckets

    def plans(session: Session) -> list[str]:
        if db.dialect == "postgresql":
            # A table this small is cheaper to read whole; what matters is that the index can serve.
            session.execute(text("SET LOCAL enable_seqscan = off"))
            prefix = "EXPLAIN "
        else:
            prefix = "EXPLAIN QUERY PLAN "
        connection = session.connection()
        return [
            "\n".join(str(row[-1]) for row in connection.exec_driver_sql(prefix + sql, parameters))
            for sql, parameters in captured
        ]

    for plan in db.write_sync(plans):
        assert "ix_jobs_finished_at" in plan, plan
