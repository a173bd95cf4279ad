"""GET /api/v1/jobs and /api/v1/jobs/<id>: filters, limits, and cursor pages that add up to the whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DB_KINDS, LiveServer
from tests.support import assert_error, shared_server


def submit(http: httpx.Client, workflow: str = "echo", **fields: Any) -> str:
    response = http.post("/api/v1/intake", json={"workflow": workflow, "payload": {}, **fields})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def walk(http: httpx.Client, **params: Any) -> list[list[str]]:
    """Every page of the listing, following `next_cursor` until it is null."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = http.get("/api/v1/jobs", params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append([job["id"] for job in body["jobs"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 100, "the cursor never ends"


@pytest.fixture(scope="module", params=DB_KINDS)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """One server and one set of jobs for the read-only listing tests."""
    workdir: Path = tmp_path_factory.mktemp("jobs-list")
    live: LiveServer
    with shared_server(request, str(request.param), workdir) as live, live.client() as http:
        yield http


@pytest.fixture(scope="module")
def jobs(shared: httpx.Client) -> dict[str, list[str]]:
    """Seven jobs alternating echo and sleep; the first two echo jobs completed."""
    client = shared
    made: dict[str, list[str]] = {"echo": [], "sleep": [], "succeeded": [], "all": []}
    for index in range(7):
        workflow = "echo" if index % 2 == 0 else "sleep"
        job_id = submit(client, workflow)
        made[workflow].append(job_id)
        made["all"].append(job_id)
    for job_id in made["echo"][:2]:
        assert client.post(f"/api/v1/_dev/complete/{job_id}", json={}).status_code == 200
        made["succeeded"].append(job_id)
    return made


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 100])
def test_pages_cover_every_job_once_newest_first(
    shared: httpx.Client, jobs: dict[str, list[str]], limit: int
) -> None:
    pages = walk(shared, limit=limit)
    assert all(0 < len(page) <= limit for page in pages)
    assert len(pages) == -(-7 // limit)
    flat = [job_id for page in pages for job_id in page]
    assert flat == list(reversed(jobs["all"]))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"workflow": "echo"}, "echo"),
        ({"workflow": "sleep"}, "sleep"),
        ({"status": "succeeded"}, "succeeded"),
        ({"status": "queued", "workflow": "echo"}, "echo_queued"),
        ({"status": "failed"}, "none"),
        ({"workflow": "no.such.workflow"}, "none"),
    ],
)
def test_filters_select_and_paginate(
    shared: httpx.Client, jobs: dict[str, list[str]], params: dict[str, str], expected: str
) -> None:
    client = shared
    wanted = {
        "echo": set(jobs["echo"]),
        "sleep": set(jobs["sleep"]),
        "succeeded": set(jobs["succeeded"]),
        "echo_queued": set(jobs["echo"]) - set(jobs["succeeded"]),
        "none": set(),
    }[expected]
    pages = walk(client, limit=1, **params)
    flat = [job_id for page in pages for job_id in page]
    assert len(flat) == len(set(flat))
    assert set(flat) == wanted
    for job_id in flat:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        for name, value in params.items():
            assert job[name] == value


def test_jobs_arriving_between_pages_cause_no_duplicates_or_gaps(client: httpx.Client) -> None:
    before = [submit(client) for _ in range(5)]
    first = client.get("/api/v1/jobs", params={"limit": 2}).json()
    late = submit(client)  # newer than every page already served: must not appear later in this walk
    seen = [job["id"] for job in first["jobs"]]
    cursor = first["next_cursor"]
    while cursor:
        body = client.get("/api/v1/jobs", params={"limit": 2, "cursor": cursor}).json()
        seen += [job["id"] for job in body["jobs"]]
        cursor = body["next_cursor"]
    assert seen == list(reversed(before))
    assert late not in seen
    assert client.get("/api/v1/jobs", params={"limit": 1}).json()["jobs"][0]["id"] == late


def test_default_limit_is_twenty(client: httpx.Client) -> None:
    for _ in range(21):
        submit(client)
    body = client.get("/api/v1/jobs").json()
    assert len(body["jobs"]) == 20
    assert body["next_cursor"] is not None
    rest = client.get("/api/v1/jobs", params={"cursor": body["next_cursor"]}).json()
    assert len(rest["jobs"]) == 1
    assert rest["next_cursor"] is None


def test_empty_listing(client: httpx.Client) -> None:
    response = client.get("/api/v1/jobs")
    assert response.status_code == 200
    assert response.json() == {"jobs": [], "next_cursor": None}


def test_job_detail_has_every_field_and_the_event_log(client: httpx.Client) -> None:
    user = client.post("/api/v1/users/upsert", json={"email": "o@example.com", "name": "O"}).json()["user"]
    job_id = submit(
        client,
        "echo",
        priority="low",
        user_id=user["id"],
        max_attempts=5,
        timeout_s=60,
        run_at="2030-01-02T03:04:05Z",
        callback_url="https://example.com/cb",
    )
    job = client.get(f"/api/v1/jobs/{job_id}").json()
    assert job["priority"] == "low"
    assert job["user_id"] == user["id"]
    assert job["max_attempts"] == 5
    assert job["timeout_s"] == 60
    assert job["run_at"].startswith("2030-01-02T03:04:05")
    assert job["status"] == "queued"
    assert job["attempts"] == 0
    assert job["started_at"] is None
    assert job["finished_at"] is None
    assert job["result"] is None
    assert job["error"] is None
    [event] = job["events"]
    assert (event["type"], event["from_status"], event["to_status"]) == ("submitted", None, "queued")

    assert client.post(f"/api/v1/_dev/complete/{job_id}", json={"result": {"n": 1}}).status_code == 200
    done = client.get(f"/api/v1/jobs/{job_id}").json()
    assert done["status"] == "succeeded"
    assert done["result"] == {"n": 1}
    assert done["finished_at"] is not None
    assert [e["to_status"] for e in done["events"]] == ["queued", "succeeded"]
    # A finished job cannot be completed again.
    assert_error(client.post(f"/api/v1/_dev/complete/{job_id}", json={}), 409, "conflict")
