"""Results checked against their workflow's result schema, on both databases: by the in-process worker
and for what remote workers report over REST and GraphQL. A result that misfits fails the attempt with
an `invalid_result` error naming the failing paths, retried only when the workflow says so, and the
attempt's cost is kept."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from levqor.db.engine import Database
from tests.conftest import LiveServer
from tests.integration.test_parity import JOB_FIELDS as FULL_JOB_FIELDS
from tests.integration.test_parity import gql_job_as_rest, rest_job
from tests.integration.test_worker_api import WORKER
from tests.integration.test_worker_api_graphql import COMPLETE
from tests.integration.test_worker_loop import finished, running_worker
from tests.queue_support import add_job, event_types, events_of
from tests.remote_workflows import LABEL_RESULT_SCHEMA
from tests.support import gql_data

REMOTE_ENV = {"LEVQOR_WORKFLOWS": "tests.remote_workflows", "LEVQOR_RETRY_BASE_MS": "10"}
MISFIT = {"label": 7, "scores": [0.5, -1]}
MISFIT_ERROR = {
    "type": "invalid_result",
    "message": "result.label: 7 is not of type 'string' (workflow 'remote.shaped')",
    "errors": [
        {"field": "result.label", "message": "7 is not of type 'string'", "code": "schema.type"},
        {"field": "result.scores.1", "message": "-1 is less than the minimum of 0", "code": "schema.minimum"},
    ],
}
MISSING_LABEL = {
    "field": "result",
    "message": "'label' is a required property",
    "code": "schema.required",
}


# --- in-process ------------------------------------------------------------------------------------


async def test_a_misfit_result_fails_the_job_at_once_naming_the_path(db_url: str, db: Database) -> None:
    misfit = add_job(db, "test.shaped", payload={"result": {"counts": [1, "two"]}}, max_attempts=3)
    fitting = add_job(db, "test.shaped", payload={"result": {"counts": [1, 2]}})
    async with running_worker(db_url, db):
        failed = await finished(db, misfit.id)
        succeeded = await finished(db, fitting.id)

    assert (failed.status, failed.attempts, failed.result) == ("failed", 1, None)
    assert failed.error == {
        "type": "invalid_result",
        "message": "result.counts.1: 'two' is not of type 'integer' (workflow 'test.shaped')",
        "errors": [
            {"field": "result.counts.1", "message": "'two' is not of type 'integer'", "code": "schema.type"}
        ],
    }
    assert failed.cost_actual_micros == 700  # what the handler reported before its result was refused
    assert event_types(db, misfit.id) == ["submitted", "claimed", "failed"]
    assert events_of(db, misfit.id)[-1].detail == {"reason": "not retryable"}
    assert (succeeded.status, succeeded.result, succeeded.error) == ("succeeded", {"counts": [1, 2]}, None)


async def test_a_retryable_misfit_is_retried_until_attempts_run_out(db_url: str, db: Database) -> None:
    job = add_job(db, "test.shaped_retry", payload={"result": {"total": 3}}, max_attempts=2)
    async with running_worker(db_url, db):
        done = await finished(db, job.id)

    assert (done.status, done.attempts) == ("failed", 2)
    assert done.error is not None
    assert done.error["type"] == "invalid_result"
    assert done.error["errors"] == [
        {"field": "result", "message": "'counts' is a required property", "code": "schema.required"}
    ]
    assert event_types(db, job.id) == ["submitted", "claimed", "retry_scheduled", "claimed", "failed"]
    assert events_of(db, job.id)[-1].detail == {"reason": "attempts exhausted"}


# --- remote workers ----------------------------------------------------------------------------------


@pytest.fixture
def http(make_server: Callable[..., LiveServer]) -> Iterator[httpx.Client]:
    with make_server(**REMOTE_ENV).client() as client:
        yield client


def submit(http: httpx.Client, workflow: str, **fields: Any) -> str:
    response = http.post("/api/v1/intake", json={"workflow": workflow, "payload": {}, **fields})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


def claim(http: httpx.Client, workflow: str, *, attempt: int = 1, count: int = 1) -> None:
    response = http.post(
        "/api/v1/workers/claim",
        json={"worker_id": WORKER, "workflows": [workflow], "max_jobs": count, "wait_s": 5},
    )
    assert response.status_code == 200, response.text
    jobs = response.json()["jobs"]
    assert [job["attempt"] for job in jobs] == [attempt] * count, jobs


def complete(http: httpx.Client, job_id: str, result: dict[str, Any], attempt: int = 1) -> httpx.Response:
    body = {"worker_id": WORKER, "attempt": attempt, "result": result, "cost": 0.003}
    return http.post(f"/api/v1/jobs/{job_id}/complete", json=body)


def gql_complete(http: httpx.Client, job_id: str, result: dict[str, Any], attempt: int = 1) -> dict[str, Any]:
    variables = {
        "id": job_id,
        "input": {"workerId": WORKER, "attempt": attempt, "result": result, "cost": "0.003"},
    }
    payload: dict[str, Any] = gql_data(http, COMPLETE, variables)["completeJobRun"]
    assert payload["userErrors"] == []
    return payload


def test_rest_a_misfit_remote_result_fails_the_job_and_the_answer_says_why(http: httpx.Client) -> None:
    job_id = submit(http, "remote.shaped")
    claim(http, "remote.shaped")

    response = complete(http, job_id, MISFIT)

    assert response.status_code == 200, response.text
    job = response.json()
    assert (job["status"], job["attempts"], job["result"]) == ("failed", 1, None)
    assert job["error"] == MISFIT_ERROR
    assert job["cost_actual_micros"] == 3_000  # the remote attempt's cost is kept
    events = http.get(f"/api/v1/jobs/{job_id}").json()["events"]
    assert [(event["type"], event["detail"]) for event in events][-1] == (
        "failed",
        {"reason": "not retryable"},
    )
    status = http.get(f"/api/v1/status/{job_id}").json()
    assert (status["status"], status["error"]) == ("failed", MISFIT_ERROR)


def test_rest_a_retryable_misfit_puts_the_job_back_and_a_fitting_result_succeeds(http: httpx.Client) -> None:
    job_id = submit(http, "remote.shaped_retry")
    claim(http, "remote.shaped_retry")

    retried = complete(http, job_id, {"scores": []})
    assert retried.status_code == 200, retried.text
    job = retried.json()
    assert (job["status"], job["attempts"]) == ("queued", 1)
    assert job["error"]["type"] == "invalid_result"
    assert job["error"]["errors"] == [MISSING_LABEL]
    assert (
        job["error"]["message"] == "result: 'label' is a required property (workflow 'remote.shaped_retry')"
    )

    claim(http, "remote.shaped_retry", attempt=2)
    done = complete(http, job_id, {"label": "cat", "scores": [0.9]}, attempt=2)
    assert done.status_code == 200, done.text
    job = done.json()
    assert (job["status"], job["attempts"], job["result"], job["error"]) == (
        "succeeded",
        2,
        {"label": "cat", "scores": [0.9]},
        None,
    )


def test_a_stale_worker_reporting_a_misfit_changes_nothing(http: httpx.Client) -> None:
    job_id = submit(http, "remote.shaped")
    claim(http, "remote.shaped")
    stale = complete(http, job_id, MISFIT, attempt=2)
    assert stale.status_code == 409, stale.text
    assert http.get(f"/api/v1/jobs/{job_id}").json()["status"] == "running"


def test_graphql_a_misfit_remote_result_fails_the_job_and_the_answer_says_why(http: httpx.Client) -> None:
    job_id = submit(http, "remote.shaped")
    claim(http, "remote.shaped")

    job = gql_complete(http, job_id, MISFIT)["job"]

    assert (job["status"], job["attempts"], job["result"]) == ("FAILED", 1, None)
    assert job["error"] == MISFIT_ERROR
    assert job["costActual"] == "0.003"


def test_graphql_a_retryable_misfit_puts_the_job_back_and_a_fitting_result_succeeds(
    http: httpx.Client,
) -> None:
    job_id = submit(http, "remote.shaped_retry")
    claim(http, "remote.shaped_retry")

    retried = gql_complete(http, job_id, {"scores": []})["job"]
    assert (retried["status"], retried["attempts"]) == ("QUEUED", 1)
    assert retried["error"]["errors"] == [MISSING_LABEL]

    claim(http, "remote.shaped_retry", attempt=2)
    done = gql_complete(http, job_id, {"label": "cat"}, attempt=2)["job"]
    assert (done["status"], done["result"], done["error"]) == ("SUCCEEDED", {"label": "cat"}, None)


def test_both_surfaces_record_a_misfit_alike(http: httpx.Client) -> None:
    by_rest = submit(http, "remote.shaped")
    by_graphql = submit(http, "remote.shaped")
    claim(http, "remote.shaped", count=2)

    assert complete(http, by_rest, MISFIT).status_code == 200
    gql_complete(http, by_graphql, MISFIT)

    query = f"query($id: ID!) {{ job(id: $id) {{ {FULL_JOB_FIELDS} }} }}"
    over_graphql = gql_job_as_rest(gql_data(http, query, {"id": by_graphql})["job"])
    over_rest = rest_job(http, by_rest)
    instants = ("id", "created_at", "started_at", "finished_at", "run_at", "events")

    def comparable(job: dict[str, Any]) -> dict[str, Any]:
        shaped = {key: value for key, value in job.items() if key not in instants}
        shaped["events"] = [{**event, "at": None} for event in job["events"]]
        return shaped

    assert comparable(over_graphql) == comparable(over_rest)
    assert over_rest["error"] == MISFIT_ERROR


def test_both_listings_show_the_result_schema(http: httpx.Client) -> None:
    rest = {flow["name"]: flow for flow in http.get("/api/v1/workflows").json()["workflows"]}
    graphql = {
        flow["name"]: flow
        for flow in gql_data(http, "{ workflows { name resultSchema resultInvalidRetryable } }")["workflows"]
    }

    for name, retryable in (("remote.shaped", False), ("remote.shaped_retry", True)):
        assert rest[name]["result_schema"] == graphql[name]["resultSchema"] == LABEL_RESULT_SCHEMA
        assert rest[name]["result_invalid_retryable"] is graphql[name]["resultInvalidRetryable"] is retryable
    assert rest["echo"]["result_schema"] is graphql["echo"]["resultSchema"] is None
