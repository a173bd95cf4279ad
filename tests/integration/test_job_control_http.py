"""Client verbs and workflows over a real server, on both surfaces and both databases: cancel, retry,
the workflow list, intake validation against each workflow's schema, and Idempotency-Key races."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from levqor import queue
from levqor.db.engine import Database
from levqor.errors import Conflict
from tests.conftest import LiveServer
from tests.queue_support import TEST_WORKFLOWS, get_job
from tests.support import gql, gql_data

VERB_MUTATION = """
mutation($id: ID!) {{
  {verb}(id: $id) {{ job {{ id status attempts cancelRequested }} userErrors {{ field message code }} }}
}}
"""


def submit(
    http: httpx.Client, workflow: str = "echo", payload: dict[str, Any] | None = None, **extra: Any
) -> str:
    response = http.post("/api/v1/intake", json={"workflow": workflow, "payload": payload or {}, **extra})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def claim_all(db: Database, worker_id: str = "w1") -> list[queue.ClaimedJob]:
    return db.write_sync(
        lambda s: queue.claim_jobs(s, worker_id=worker_id, workflows=None, max_jobs=100, lease_s=30)
    )


def rest_verb(http: httpx.Client, verb: str, job_id: str) -> httpx.Response:
    return http.post(f"/api/v1/jobs/{job_id}/{verb}")


def graphql_verb(http: httpx.Client, verb: str, job_id: str) -> dict[str, Any]:
    name = {"cancel": "cancelJob", "retry": "retryJob"}[verb]
    payload: dict[str, Any] = gql_data(http, VERB_MUTATION.format(verb=name), {"id": job_id})[name]
    return payload


def test_cancel_a_queued_job_on_both_surfaces(client: httpx.Client) -> None:
    by_rest, by_graphql = submit(client), submit(client)

    response = rest_verb(client, "cancel", by_rest)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["id"] == by_rest
    payload = graphql_verb(client, "cancel", by_graphql)
    assert payload["userErrors"] == []
    assert payload["job"]["status"] == "CANCELLED"

    for job_id in (by_rest, by_graphql):
        assert client.get(f"/api/v1/status/{job_id}").json()["status"] == "cancelled"


def test_cancel_a_running_job_asks_its_worker(client: httpx.Client, db: Database) -> None:
    job_id = submit(client)
    claim_all(db)

    response = rest_verb(client, "cancel", job_id)

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("running", True)
    payload = graphql_verb(client, "cancel", job_id)
    assert payload["job"]["cancelRequested"] is True
    beat = db.write_sync(
        lambda s: queue.heartbeat(s, job_id=uuid.UUID(job_id), worker_id="w1", attempt=1, lease_s=30)
    )
    assert beat.cancel_requested is True


def test_retry_a_failed_job_on_both_surfaces(client: httpx.Client, db: Database) -> None:
    ids = [submit(client, max_attempts=1), submit(client, max_attempts=1)]
    for claimed in claim_all(db):
        db.write_sync(
            lambda s, c=claimed: queue.fail(s, job_id=c.id, worker_id="w1", attempt=1, error={"e": 1})
        )

    response = rest_verb(client, "retry", ids[0])
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["attempts"]) == ("queued", 0)
    payload = graphql_verb(client, "retry", ids[1])
    assert payload["userErrors"] == []
    assert (payload["job"]["status"], payload["job"]["attempts"]) == ("QUEUED", 0)
    assert {str(c.id) for c in claim_all(db)} == set(ids)


@pytest.mark.parametrize(
    ("verb", "state"), [("retry", "queued"), ("retry", "running"), ("cancel", "succeeded")]
)
def test_a_verb_the_state_does_not_allow_is_409_on_both_surfaces(
    client: httpx.Client, db: Database, verb: str, state: str
) -> None:
    job_id = submit(client)
    if state != "queued":
        claim_all(db)
    if state == "succeeded":
        db.write_sync(
            lambda s: queue.complete(s, job_id=uuid.UUID(job_id), worker_id="w1", attempt=1, result={})
        )
    before = client.get(f"/api/v1/jobs/{job_id}").json()

    response = rest_verb(client, verb, job_id)
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert state in response.json()["message"]
    payload = graphql_verb(client, verb, job_id)
    assert payload["job"] is None
    assert [error["code"] for error in payload["userErrors"]] == ["CONFLICT"]
    assert client.get(f"/api/v1/jobs/{job_id}").json() == before


@pytest.mark.parametrize("verb", ["cancel", "retry"])
def test_a_verb_on_an_unknown_job_is_404(client: httpx.Client, verb: str) -> None:
    for job_id in (str(uuid.uuid4()), "not-a-uuid"):
        response = rest_verb(client, verb, job_id)
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"
    payload = graphql_verb(client, verb, str(uuid.uuid4()))
    assert [error["code"] for error in payload["userErrors"]] == ["NOT_FOUND"]


def test_dev_complete_finishes_a_running_job_and_its_worker_loses_the_lease(
    client: httpx.Client, db: Database
) -> None:
    job_id = submit(client)
    claim_all(db)

    assert client.post(f"/api/v1/_dev/complete/{job_id}", json={"result": {"a": 1}}).json() == {"ok": True}
    assert client.post(f"/api/v1/_dev/complete/{job_id}", json={"result": {}}).status_code == 409

    with pytest.raises(Conflict, match="lease lost"):
        db.write_sync(
            lambda s: queue.complete(s, job_id=uuid.UUID(job_id), worker_id="w1", attempt=1, result={})
        )
    events = [event["type"] for event in client.get(f"/api/v1/jobs/{job_id}").json()["events"]]
    assert events == ["submitted", "claimed", "dev_completed"]


# --- workflows and intake validation -------------------------------------------------------------


@pytest.fixture
def workflow_server(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(LEVQOR_WORKFLOWS=TEST_WORKFLOWS)


def test_workflows_are_listed_the_same_on_both_surfaces(workflow_server: LiveServer) -> None:
    with workflow_server.client() as http:
        rest = http.get("/api/v1/workflows")
        graphql = gql_data(
            http,
            "{ workflows { name description payloadSchema resultSchema resultInvalidRetryable timeoutS"
            " maxAttempts remoteOnly costModel } }",
        )["workflows"]

    assert rest.status_code == 200
    listed = rest.json()["workflows"]
    names = [flow["name"] for flow in listed]
    assert {"echo", "sleep", "http.request", "test.remote", "test.fail_once"} <= set(names)
    assert names == sorted(names)
    remote = next(flow for flow in listed if flow["name"] == "test.remote")
    assert remote["remote_only"] is True
    assert remote["payload_schema"]["required"] == ["size"]
    assert [
        {
            "name": flow["name"],
            "description": flow["description"],
            "payload_schema": flow["payloadSchema"],
            "result_schema": flow["resultSchema"],
            "result_invalid_retryable": flow["resultInvalidRetryable"],
            "timeout_s": flow["timeoutS"],
            "max_attempts": flow["maxAttempts"],
            "remote_only": flow["remoteOnly"],
            "cost_model": flow["costModel"],
        }
        for flow in graphql
    ] == listed


def test_intake_refuses_an_unknown_workflow_naming_it(client: httpx.Client) -> None:
    response = client.post("/api/v1/intake", json={"workflow": "no.such.flow", "payload": {}})

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_request"
    assert "no.such.flow" in body["message"]
    assert body["details"][0]["field"] == "workflow"
    graphql = gql(
        client,
        'mutation { submitJob(input: {workflow: "no.such.flow", payload: {}}) '
        "{ job { id } userErrors { field code } } }",
    )
    code = body["details"][0]["code"]
    assert code == "enum"
    assert graphql["data"]["submitJob"]["userErrors"] == [{"field": "workflow", "code": code}]


@pytest.mark.parametrize(
    ("workflow", "payload", "field"),
    [
        ("sleep", {"seconds": "ten"}, "payload.seconds"),
        ("sleep", {"seconds": 3601}, "payload.seconds"),
        ("sleep", {"minutes": 1}, "payload"),
        ("http.request", {"url": "ftp://example.com/"}, "payload.url"),
        ("http.request", {"url": "https://example.com/", "headers": {"X": 1}}, "payload.headers.X"),
        ("test.remote", {"size": 0}, "payload.size"),
        ("test.remote", {}, "payload"),
    ],
)
def test_intake_validates_the_payload_against_the_workflow_schema(
    workflow_server: LiveServer, workflow: str, payload: dict[str, Any], field: str
) -> None:
    with workflow_server.client() as http:
        response = http.post("/api/v1/intake", json={"workflow": workflow, "payload": payload})
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"] == "invalid_request"
        assert body["details"][0]["field"] == field
        assert body["message"].startswith(f"{field}:")
        assert http.get("/api/v1/jobs").json()["jobs"] == []


def test_intake_applies_the_workflow_defaults(workflow_server: LiveServer) -> None:
    with workflow_server.client() as http:
        defaulted = submit(http, "test.remote", {"size": 3})
        chosen = submit(http, "test.remote", {"size": 3}, max_attempts=2, timeout_s=7)
        echoed = submit(http, "echo", {"any": ["thing", 1]})
        jobs = {job_id: http.get(f"/api/v1/jobs/{job_id}").json() for job_id in (defaulted, chosen, echoed)}

    assert (jobs[defaulted]["max_attempts"], jobs[defaulted]["timeout_s"]) == (5, 42)
    assert (jobs[chosen]["max_attempts"], jobs[chosen]["timeout_s"]) == (2, 7)
    assert jobs[echoed]["payload"] == {"any": ["thing", 1]}


# --- idempotency under concurrency ---------------------------------------------------------------

PARALLEL_SUBMITS = 50


def test_parallel_submits_with_one_idempotency_key_create_one_job(server: LiveServer, db: Database) -> None:
    body = {"workflow": "echo", "payload": {"order": 1}}
    headers = {"Idempotency-Key": f"order-{uuid.uuid4()}"}

    def post(_: int) -> httpx.Response:
        with server.client() as http:
            return http.post("/api/v1/intake", json=body, headers=headers)

    with ThreadPoolExecutor(max_workers=PARALLEL_SUBMITS) as pool:
        responses = list(pool.map(post, range(PARALLEL_SUBMITS)))

    assert [response.status_code for response in responses] == [202] * PARALLEL_SUBMITS
    job_ids = {response.json()["job_id"] for response in responses}
    assert len(job_ids) == 1
    replayed = [response.headers.get("Idempotent-Replayed") for response in responses]
    assert replayed.count(None) == 1  # exactly one request created the job
    with server.client() as http:
        listed = http.get("/api/v1/jobs", params={"limit": 100}).json()["jobs"]
    assert [job["id"] for job in listed] == list(job_ids)
    assert get_job(db, uuid.UUID(job_ids.pop())).payload == {"order": 1}
