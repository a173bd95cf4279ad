"""The GraphQL worker verbs are twins of the REST routes: the same operation gives the same data, and
the same failures (lease lost, bad input) come back as user errors with the same fields."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.test_worker_api import WORKER, claim, claim_one, detail, submit
from tests.support import assert_error, gql_data

CLAIM = """
mutation Claim($input: ClaimJobsInput!) {
  claimJobs(input: $input) {
    jobs {
      id attempt workflow payload leaseExpiresAt leaseS timeoutS
      costEstimateMicros reservedMicros spentBeforeMicros runId stepKey parents
    }
    userErrors { field message code }
  }
}
"""
HEARTBEAT = """
mutation Beat($id: ID!, $input: HeartbeatJobInput!) {
  heartbeatJob(id: $id, input: $input) { leaseExpiresAt cancelRequested userErrors { field message code } }
}
"""
JOB_FIELDS = "id workflow status payload result error attempts maxAttempts costActual"
COMPLETE = f"""
mutation Complete($id: ID!, $input: CompleteJobRunInput!) {{
  completeJobRun(id: $id, input: $input) {{ job {{ {JOB_FIELDS} }} userErrors {{ field message code }} }}
}}
"""
FAIL = f"""
mutation Fail($id: ID!, $input: FailJobRunInput!) {{
  failJobRun(id: $id, input: $input) {{ job {{ {JOB_FIELDS} }} userErrors {{ field message code }} }}
}}
"""


def gql_claim(client: httpx.Client, **fields: Any) -> dict[str, Any]:
    variables = {"input": {"workerId": WORKER, "workflows": ["echo"], **fields}}
    payload: dict[str, Any] = gql_data(client, CLAIM, variables)["claimJobs"]
    return payload


def as_rest_claim(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": job["id"],
        "attempt": job["attempt"],
        "workflow": job["workflow"],
        "payload": job["payload"],
        "lease_s": job["leaseS"],
        "timeout_s": job["timeoutS"],
        "cost_estimate_micros": job["costEstimateMicros"],
        "reserved_micros": job["reservedMicros"],
        "spent_before_micros": job["spentBeforeMicros"],
        "run_id": job["runId"],
        "step_key": job["stepKey"],
        "parents": job["parents"],
    }


def test_claim_twins_hand_out_the_same_jobs(client: httpx.Client) -> None:
    first = submit(client, {"n": 1})
    second = submit(client, {"n": 2})
    over_rest = claim_one(client)
    over_graphql = gql_claim(client)
    assert over_graphql["userErrors"] == []
    [graphql_job] = over_graphql["jobs"]

    assert over_rest["id"] == first
    assert graphql_job["id"] == second
    rest_view = {key: value for key, value in over_rest.items() if key != "lease_expires_at"}
    assert as_rest_claim(graphql_job) == {**rest_view, "id": second, "payload": {"n": 2}}
    # Nothing left: REST says 204, GraphQL an empty list.
    assert claim(client).status_code == 204
    assert gql_claim(client) == {"jobs": [], "userErrors": []}


def test_heartbeat_complete_and_fail_twins_agree(client: httpx.Client) -> None:
    by_rest = submit(client, {"n": 1}, max_attempts=1)
    by_graphql = submit(client, {"n": 2}, max_attempts=1)
    claim(client, max_jobs=2)

    rest_beat = client.post(f"/api/v1/jobs/{by_rest}/heartbeat", json={"worker_id": WORKER, "attempt": 1})
    graphql_beat = gql_data(
        client, HEARTBEAT, {"id": by_graphql, "input": {"workerId": WORKER, "attempt": 1}}
    )["heartbeatJob"]
    assert rest_beat.json()["cancel_requested"] is graphql_beat["cancelRequested"] is False
    assert graphql_beat["leaseExpiresAt"]
    assert graphql_beat["userErrors"] == []

    rest_done = client.post(
        f"/api/v1/jobs/{by_rest}/complete",
        json={"worker_id": WORKER, "attempt": 1, "result": {"r": 1}, "cost": 0.5},
    ).json()
    graphql_done = gql_data(
        client,
        COMPLETE,
        {"id": by_graphql, "input": {"workerId": WORKER, "attempt": 1, "result": {"r": 1}, "cost": "0.5"}},
    )["completeJobRun"]
    assert graphql_done["userErrors"] == []
    job = graphql_done["job"]
    assert (job["status"], job["result"], job["attempts"]) == ("SUCCEEDED", {"r": 1}, 1)
    assert (rest_done["status"], rest_done["result"], rest_done["attempts"]) == ("succeeded", {"r": 1}, 1)
    assert rest_done["cost_actual_micros"] == 500_000
    assert job["costActual"] == "0.5"
    assert [e["type"] for e in detail(client, by_rest)["events"]] == [
        e["type"] for e in detail(client, by_graphql)["events"]
    ]


def test_fail_twin_and_lease_lost_as_user_error(client: httpx.Client) -> None:
    job_id = submit(client, max_attempts=3)
    claim_one(client)

    stale = gql_data(
        client, FAIL, {"id": job_id, "input": {"workerId": "someone-else", "attempt": 1, "error": "x"}}
    )["failJobRun"]
    assert stale["job"] is None
    assert [error["code"] for error in stale["userErrors"]] == ["CONFLICT"]
    rest_stale = client.post(
        f"/api/v1/jobs/{job_id}/fail", json={"worker_id": "someone-else", "attempt": 1, "error": "x"}
    )
    assert_error(rest_stale, 409, "conflict")
    assert stale["userErrors"][0]["message"] == rest_stale.json()["message"]

    failed = gql_data(
        client,
        FAIL,
        {"id": job_id, "input": {"workerId": WORKER, "attempt": 1, "error": "bad", "retryable": False}},
    )["failJobRun"]
    assert failed["userErrors"] == []
    assert (failed["job"]["status"], failed["job"]["error"]) == ("FAILED", {"message": "bad"})
    assert detail(client, job_id)["status"] == "failed"


def test_bad_input_gives_the_same_fields_on_both_surfaces(client: httpx.Client) -> None:
    # Each surface names the field as its clients spell it: `maxJobs` in GraphQL, `max_jobs` in JSON.
    for fields, rest_fields, graphql_field, rest_field in [
        ({"maxJobs": 0}, {"max_jobs": 0}, "maxJobs", "max_jobs"),
        ({"waitS": 31}, {"wait_s": 31}, "waitS", "wait_s"),
        ({"workflows": ["nope"]}, {"workflows": ["nope"]}, "workflows", "workflows"),
    ]:
        payload = gql_claim(client, **fields)
        assert payload["jobs"] == []
        body = assert_error(claim(client, **rest_fields), 400, "invalid_request", field=rest_field)
        # The same code on both surfaces.
        rest_code = body["details"][0]["code"]
        assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [(graphql_field, rest_code)]
        assert payload["userErrors"][0]["message"] == body["details"][0]["message"]

    unknown = gql_data(
        client,
        HEARTBEAT,
        {"id": "6f1c1a2e-0000-4000-8000-000000000000", "input": {"workerId": WORKER, "attempt": 1}},
    )["heartbeatJob"]
    assert [error["code"] for error in unknown["userErrors"]] == ["NOT_FOUND"]
