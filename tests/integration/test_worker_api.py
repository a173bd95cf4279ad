"""The remote worker API over a real server on both databases: claim, long-poll, heartbeat, fencing,
complete and fail (CONTRACT.md §2 and §7)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.support import UNKNOWN_ID, assert_error

WORKER = "worker-a"
CLAIMED_JOB_FIELDS = {
    "id",
    "attempt",
    "workflow",
    "payload",
    "lease_expires_at",
    "lease_s",
    "timeout_s",
    "cost_estimate_micros",
    "reserved_micros",
    "spent_before_micros",
    # null for a job on its own; a step of a run names its run, its key and its parents.
    "run_id",
    "step_key",
    "parents",
}


def submit(client: httpx.Client, payload: dict[str, Any] | None = None, **fields: Any) -> str:
    response = client.post("/api/v1/intake", json={"workflow": "echo", "payload": payload or {}, **fields})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def claim(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/api/v1/workers/claim", json={"worker_id": WORKER, "workflows": ["echo"], **body})


def claim_one(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = claim(client, **body)
    assert response.status_code == 200, response.text
    jobs: list[dict[str, Any]] = response.json()["jobs"]
    assert len(jobs) == 1, jobs
    return jobs[0]


def detail(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def event_types(client: httpx.Client, job_id: str) -> list[str]:
    return [event["type"] for event in detail(client, job_id)["events"]]


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_claim_hands_out_jobs_by_priority_then_arrival(client: httpx.Client) -> None:
    low = submit(client, {"n": 1}, priority="low")
    normal = submit(client, {"n": 2})
    high_first = submit(client, {"n": 3}, priority="high")
    high_second = submit(client, {"n": 4}, priority="high")

    before = datetime.now(UTC)
    response = claim(client, max_jobs=10)
    assert response.status_code == 200, response.text
    jobs = response.json()["jobs"]
    assert [job["id"] for job in jobs] == [high_first, high_second, normal, low]
    for job, n in zip(jobs, (3, 4, 2, 1), strict=True):
        assert set(job) == CLAIMED_JOB_FIELDS
        assert job["attempt"] == 1
        assert job["workflow"] == "echo"
        assert job["payload"] == {"n": n}
        assert job["lease_s"] == 30  # LEVQOR_LEASE_S's default
        assert at(job["lease_expires_at"]) > before + timedelta(seconds=25)

    running = detail(client, high_first)
    assert running["status"] == "running"
    assert running["attempts"] == 1
    claimed = running["events"][-1]
    assert (claimed["type"], claimed["from_status"], claimed["to_status"]) == ("claimed", "queued", "running")
    assert (claimed["attempt"], claimed["worker_id"]) == (1, WORKER)

    # Everything is taken: the next claim gets nothing, at once.
    empty = claim(client)
    assert empty.status_code == 204
    assert empty.content == b""


def test_claim_takes_at_most_max_jobs(client: httpx.Client) -> None:
    ids = [submit(client, {"n": n}) for n in range(3)]
    first = claim(client, max_jobs=2).json()["jobs"]
    assert [job["id"] for job in first] == ids[:2]
    assert [job["id"] for job in claim(client, max_jobs=2).json()["jobs"]] == ids[2:]


def test_claim_waits_wait_s_then_answers_204(client: httpx.Client) -> None:
    started = time.monotonic()
    response = claim(client, wait_s=1)
    elapsed_s = time.monotonic() - started
    assert response.status_code == 204
    assert elapsed_s >= 0.9  # it held the request for wait_s instead of answering at once


def test_long_poll_returns_when_a_job_arrives(client: httpx.Client, server: LiveServer) -> None:
    wait_s = 10

    def long_poll() -> tuple[httpx.Response, float]:
        with server.client() as own:
            started = time.monotonic()
            response = claim(own, wait_s=wait_s)
            return response, time.monotonic() - started

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(long_poll)
        time.sleep(0.5)  # the claim is now waiting on an empty queue
        job_id = submit(client, {"late": True})
        response, elapsed_s = pending.result(timeout=30)

    assert response.status_code == 200, response.text
    assert [job["id"] for job in response.json()["jobs"]] == [job_id]
    assert elapsed_s < wait_s / 2


def test_heartbeat_extends_the_lease_and_records_progress(client: httpx.Client) -> None:
    job_id = submit(client)
    job = claim_one(client, lease_s=5)
    first_expiry = at(job["lease_expires_at"])

    beat = client.post(
        f"/api/v1/jobs/{job_id}/heartbeat",
        json={"worker_id": WORKER, "attempt": 1, "lease_s": 120, "progress": {"done": 3, "of": 10}},
    )
    assert beat.status_code == 200, beat.text
    body = beat.json()
    assert set(body) == {"lease_expires_at", "cancel_requested"}
    assert body["cancel_requested"] is False
    assert at(body["lease_expires_at"]) > first_expiry + timedelta(seconds=100)

    progress = [event for event in detail(client, job_id)["events"] if event["type"] == "progress"]
    assert [event["detail"] for event in progress] == [{"done": 3, "of": 10}]
    assert detail(client, job_id)["status"] == "running"


def test_a_stale_worker_or_attempt_gets_409_and_changes_nothing(client: httpx.Client) -> None:
    job_id = submit(client, {"x": 1})
    claim_one(client)
    before = detail(client, job_id)

    stale = [
        ("heartbeat", {"worker_id": "someone-else", "attempt": 1}),
        ("heartbeat", {"worker_id": WORKER, "attempt": 2}),
        ("complete", {"worker_id": "someone-else", "attempt": 1, "result": {"bad": True}}),
        ("complete", {"worker_id": WORKER, "attempt": 2, "result": {"bad": True}}),
        ("fail", {"worker_id": "someone-else", "attempt": 1, "error": "stale"}),
        ("fail", {"worker_id": WORKER, "attempt": 2, "error": "stale", "retryable": False}),
    ]
    for verb, body in stale:
        response = client.post(f"/api/v1/jobs/{job_id}/{verb}", json=body)
        assert_error(response, 409, "conflict")
    assert detail(client, job_id) == before

    done = client.post(
        f"/api/v1/jobs/{job_id}/complete", json={"worker_id": WORKER, "attempt": 1, "result": {"ok": 1}}
    )
    assert done.status_code == 200, done.text
    finished = detail(client, job_id)

    # A second report of the same attempt, or a heartbeat after the end, is late: 409, nothing moves.
    for verb, body in [
        ("complete", {"worker_id": WORKER, "attempt": 1, "result": {"again": True}}),
        ("fail", {"worker_id": WORKER, "attempt": 1, "error": "late"}),
        ("heartbeat", {"worker_id": WORKER, "attempt": 1}),
    ]:
        assert_error(client.post(f"/api/v1/jobs/{job_id}/{verb}", json=body), 409, "conflict")
    assert detail(client, job_id) == finished


def test_complete_records_the_result_cost_and_event(client: httpx.Client) -> None:
    job_id = submit(client, {"text": "hi"})
    claim_one(client)
    response = client.post(
        f"/api/v1/jobs/{job_id}/complete",
        json={"worker_id": WORKER, "attempt": 1, "result": {"text": "HI"}, "cost": 0.0125},
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["id"] == job_id
    assert job["status"] == "succeeded"
    assert job["result"] == {"text": "HI"}
    assert job["cost_actual_micros"] == 12_500
    assert job["finished_at"] is not None
    assert event_types(client, job_id) == ["submitted", "claimed", "succeeded"]
    assert client.get(f"/api/v1/status/{job_id}").json()["status"] == "succeeded"


def test_fail_retries_until_max_attempts_then_fails(client: httpx.Client) -> None:
    job_id = submit(client, max_attempts=2)
    claim_one(client)
    retried = client.post(
        f"/api/v1/jobs/{job_id}/fail",
        json={"worker_id": WORKER, "attempt": 1, "error": {"type": "boom"}, "retry_after_s": 0},
    )
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "queued"
    assert retried.json()["attempts"] == 1

    second = claim_one(client)
    assert (second["id"], second["attempt"]) == (job_id, 2)
    # The first attempt is over: its worker cannot report on the second.
    late = client.post(
        f"/api/v1/jobs/{job_id}/complete", json={"worker_id": WORKER, "attempt": 1, "result": {}}
    )
    assert_error(late, 409, "conflict")

    final = client.post(
        f"/api/v1/jobs/{job_id}/fail", json={"worker_id": WORKER, "attempt": 2, "error": {"type": "boom"}}
    )
    assert final.status_code == 200, final.text
    job = final.json()
    assert (job["status"], job["attempts"]) == ("failed", 2)
    assert job["error"] == {"type": "boom"}
    assert job["finished_at"] is not None
    assert event_types(client, job_id) == [
        "submitted",
        "claimed",
        "retry_scheduled",
        "claimed",
        "failed",
    ]


def test_retry_after_s_schedules_the_next_attempt(client: httpx.Client) -> None:
    job_id = submit(client)
    claim_one(client)
    response = client.post(
        f"/api/v1/jobs/{job_id}/fail",
        json={"worker_id": WORKER, "attempt": 1, "error": "rate limited upstream", "retry_after_s": 3600},
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert job["error"] == {"message": "rate limited upstream"}
    assert at(job["run_at"]) > datetime.now(UTC) + timedelta(minutes=55)
    assert claim(client).status_code == 204  # not claimable before its run_at


def test_fail_not_retryable_fails_at_once(client: httpx.Client) -> None:
    job_id = submit(client, max_attempts=5)
    claim_one(client)
    response = client.post(
        f"/api/v1/jobs/{job_id}/fail",
        json={"worker_id": WORKER, "attempt": 1, "error": {"type": "bad_input"}, "retryable": False},
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["status"], job["attempts"], job["error"]) == ("failed", 1, {"type": "bad_input"})
    assert detail(client, job_id)["events"][-1]["detail"] == {"reason": "not retryable"}
    assert claim(client).status_code == 204


def test_cancel_reaches_the_worker_through_its_heartbeat(client: httpx.Client) -> None:
    job_id = submit(client)
    claim_one(client)
    cancel = client.post(f"/api/v1/jobs/{job_id}/cancel")
    assert cancel.status_code == 200, cancel.text

    beat = client.post(f"/api/v1/jobs/{job_id}/heartbeat", json={"worker_id": WORKER, "attempt": 1})
    assert beat.status_code == 200, beat.text
    assert beat.json()["cancel_requested"] is True

    stopped = client.post(
        f"/api/v1/jobs/{job_id}/fail",
        json={"worker_id": WORKER, "attempt": 1, "error": {"type": "cancelled"}, "retryable": False},
    )
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_jobs": 0}, "max_jobs"),
        ({"max_jobs": 101}, "max_jobs"),
        ({"max_jobs": "2"}, "max_jobs"),
        ({"wait_s": 31}, "wait_s"),
        ({"wait_s": -1}, "wait_s"),
        ({"lease_s": 0}, "lease_s"),
        ({"workflows": []}, "workflows"),
        ({"workflows": "echo"}, "workflows"),
        ({"workflows": ["no-such-workflow"]}, "workflows"),
        ({"worker_id": ""}, "worker_id"),
        ({"worker_id": "has a space"}, "worker_id"),
        ({"worker_id": "x" * 201}, "worker_id"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_claim_rejects_bad_input(client: httpx.Client, body: dict[str, Any], field: str) -> None:
    submit(client)
    assert_error(claim(client, **body), 400, "invalid_request", field=field)
    assert claim(client).status_code == 200  # nothing was claimed by the rejected request


@pytest.mark.parametrize(
    ("verb", "body", "field"),
    [
        ("heartbeat", {"attempt": 1}, "worker_id"),
        ("heartbeat", {"worker_id": WORKER, "attempt": 0}, "attempt"),
        ("heartbeat", {"worker_id": WORKER, "attempt": "1"}, "attempt"),
        ("heartbeat", {"worker_id": WORKER, "attempt": 1, "progress": [1]}, "progress"),
        ("heartbeat", {"worker_id": WORKER, "attempt": 1, "lease_s": 3601}, "lease_s"),
        ("complete", {"worker_id": WORKER, "attempt": 1}, "result"),
        ("complete", {"worker_id": WORKER, "attempt": 1, "result": [1]}, "result"),
        ("complete", {"worker_id": WORKER, "attempt": 1, "result": {}, "cost": -1}, "cost"),
        ("complete", {"worker_id": WORKER, "attempt": 1, "result": {}, "cost": True}, "cost"),
        ("complete", {"worker_id": WORKER, "attempt": 1, "result": {}, "extra": 1}, "extra"),
        ("fail", {"worker_id": WORKER, "attempt": 1}, "error"),
        ("fail", {"worker_id": WORKER, "attempt": 1, "error": 5}, "error"),
        ("fail", {"worker_id": WORKER, "attempt": 1, "error": "x", "retryable": "no"}, "retryable"),
        ("fail", {"worker_id": WORKER, "attempt": 1, "error": "x", "retry_after_s": -1}, "retry_after_s"),
    ],
)
def test_fenced_verbs_reject_bad_input(
    client: httpx.Client, verb: str, body: dict[str, Any], field: str
) -> None:
    job_id = submit(client)
    claim_one(client)
    before = detail(client, job_id)
    assert_error(client.post(f"/api/v1/jobs/{job_id}/{verb}", json=body), 400, "invalid_request", field=field)
    assert detail(client, job_id) == before


@pytest.mark.parametrize("verb", ["heartbeat", "complete", "fail"])
@pytest.mark.parametrize("job_id", ["not-a-uuid", UNKNOWN_ID])
def test_fenced_verbs_on_an_id_that_names_no_job_are_404(
    client: httpx.Client, verb: str, job_id: str
) -> None:
    body = {"worker_id": WORKER, "attempt": 1, "result": {}} if verb == "complete" else {}
    body = {"worker_id": WORKER, "attempt": 1, **body}
    if verb == "fail":
        body["error"] = "x"
    assert_error(client.post(f"/api/v1/jobs/{job_id}/{verb}", json=body), 404, "not_found")


def test_worker_routes_need_a_json_object(client: httpx.Client) -> None:
    job_id = submit(client)
    assert_error(
        client.post("/api/v1/workers/claim", content=b"worker_id=a", headers={"Content-Type": "text/plain"}),
        415,
        "unsupported_media_type",
    )
    assert_error(
        client.post("/api/v1/workers/claim", content=b"{", headers={"Content-Type": "application/json"}),
        400,
        "invalid_request",
    )
    assert_error(client.post(f"/api/v1/jobs/{job_id}/heartbeat", json=[1, 2]), 400, "invalid_request")


def test_an_expired_lease_is_taken_back_by_a_later_claim(make_server: Callable[..., LiveServer]) -> None:
    """No Levqor worker process runs here (remote workers only): claims reap the dead worker's lease."""
    server = make_server(LEVQOR_RETRY_BASE_MS="1")
    with server.client() as client:
        job_id = submit(client, {"n": 1})
        claim_one(client, lease_s=1)  # worker-a dies: it never heartbeats
        time.sleep(1.2)
        taken = client.post(
            "/api/v1/workers/claim", json={"worker_id": "worker-b", "workflows": ["echo"], "wait_s": 5}
        )
        assert taken.status_code == 200, taken.text
        [job] = taken.json()["jobs"]
        assert (job["id"], job["attempt"]) == (job_id, 2)

        late = client.post(
            f"/api/v1/jobs/{job_id}/complete", json={"worker_id": WORKER, "attempt": 1, "result": {}}
        )
        assert_error(late, 409, "conflict")
        done = client.post(
            f"/api/v1/jobs/{job_id}/complete",
            json={"worker_id": "worker-b", "attempt": 2, "result": {"n": 1}},
        )
        assert done.json()["status"] == "succeeded"
        assert event_types(client, job_id) == [
            "submitted",
            "claimed",
            "lease_expired",
            "claimed",
            "succeeded",
        ]


def test_a_remote_worker_counts_as_live_in_ops_health(client: httpx.Client) -> None:
    assert client.get("/api/v1/ops/health").json()["workers"] == 0  # no worker runs in the test server
    assert claim(client, max_jobs=5).status_code == 204
    assert client.get("/api/v1/ops/health").json()["workers"] == 1
    claim(client)  # the same worker again: still one
    assert client.get("/api/v1/ops/health").json()["workers"] == 1
