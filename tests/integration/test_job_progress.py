"""`Job.progress`: a heartbeat's report is the job's on both surfaces, and the in-process worker writes
its handlers' reports promptly (not with the next heartbeat) and before their outcome."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from levqor.db.engine import Database
from tests.conftest import LiveServer
from tests.progress_workflows import PROGRESS_WORKFLOWS
from tests.queue_support import wait_for
from tests.support import gql_data

PROGRESS_QUERY = "query($id: ID!) { job(id: $id) { status progress } }"


def submit(http: httpx.Client, workflow: str = "echo", payload: dict[str, object] | None = None) -> str:
    response = http.post("/api/v1/intake", json={"workflow": workflow, "payload": payload or {}})
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def test_a_heartbeat_s_progress_is_the_job_s_on_both_surfaces(client: httpx.Client) -> None:
    job_id = submit(client)
    claim = client.post("/api/v1/workers/claim", json={"worker_id": "w-1", "workflows": ["echo"]})
    attempt = claim.json()["jobs"][0]["attempt"]
    assert client.get(f"/api/v1/jobs/{job_id}").json()["progress"] is None
    beat = {"worker_id": "w-1", "attempt": attempt}
    assert client.post(f"/api/v1/jobs/{job_id}/heartbeat", json={**beat, "progress": {"pct": 40}}).is_success
    assert client.post(f"/api/v1/jobs/{job_id}/heartbeat", json=beat).is_success  # keeps it
    assert client.get(f"/api/v1/jobs/{job_id}").json()["progress"] == {"pct": 40}
    assert gql_data(client, PROGRESS_QUERY, {"id": job_id})["job"] == {
        "status": "RUNNING",
        "progress": {"pct": 40},
    }

    done = client.post(f"/api/v1/jobs/{job_id}/complete", json={**beat, "result": {}})
    assert done.json()["progress"] == {"pct": 40}  # the job body of every route carries it
    detail = client.get(f"/api/v1/jobs/{job_id}").json()
    assert [event["type"] for event in detail["events"]] == ["submitted", "claimed", "progress", "succeeded"]
    assert detail["events"][2]["detail"] == {"pct": 40}
    listed = client.get("/api/v1/jobs").json()["jobs"]
    assert [job["progress"] for job in listed if job["id"] == job_id] == [{"pct": 40}]


def test_the_in_process_worker_writes_progress_well_before_a_heartbeat(
    make_server: Callable[..., LiveServer], db: Database
) -> None:
    # Heartbeats every 10 s (lease 30 s): only the prompt progress write can show step 1 while the
    # job runs, and the report made just before the handler returns lands before its success.
    server = make_server(LEVQOR_INPROCESS_WORKER="true", LEVQOR_WORKFLOWS=PROGRESS_WORKFLOWS)
    with server.client() as http:
        job_id = submit(http, "test.progress", {"steps": 2, "pause_s": 1.5})
        running = wait_for(
            lambda: (job := http.get(f"/api/v1/jobs/{job_id}").json())["progress"] and job,
            timeout_s=10,
            what="the first report",
        )
        assert (running["status"], running["progress"]) == ("running", {"step": 1, "of": 2})
        wait_for(
            lambda: http.get(f"/api/v1/status/{job_id}").json()["status"] == "succeeded",
            what="the job to finish",
        )
        job = http.get(f"/api/v1/jobs/{job_id}").json()
    assert job["progress"] == {"step": 2, "of": 2}
    types = [event["type"] for event in job["events"]]
    assert types == ["submitted", "claimed", "progress", "progress", "succeeded"]
