"""One logic, two surfaces: each REST route and its GraphQL twin give the same data for the same request,
and the same error for the same bad request (REST timestamps in the seed routes are unix seconds,
GraphQL's are ISO-8601; both are compared as instants)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from levqor.db.engine import Database
from levqor.errors import FieldCode
from levqor.schema.errors import graphql_field_name
from tests.conftest import DB_KINDS, LiveServer
from tests.overview_support import seed_overview
from tests.support import UNKNOWN_ID, gql, gql_data, shared_server

EVENT_FIELDS = "at type fromStatus toStatus attempt workerId detail"
JOB_FIELDS = (
    "id workflow status priority payload result error callbackUrl userId createdAt startedAt finishedAt "
    f"runAt attempts maxAttempts timeoutS costEstimate costActual events {{ {EVENT_FIELDS} }} "
    "costEstimateMicros costActualMicros costEstimated reservedMicros deferReason "
    "tokens { promptTokens completionTokens cachedTokens reasoningTokens totalTokens }"
)
USER_FIELDS = "id email name locale currency meta createdAt updatedAt"
ERRORS = "userErrors { field message code }"
SUBMIT = f"""mutation($i: SubmitJobInput!, $k: String) {{
  submitJob(input: $i, idempotencyKey: $k) {{ job {{ {JOB_FIELDS} }} replayed {ERRORS} }} }}"""
COMPLETE = f"""mutation($id: ID!, $r: JSON) {{
  completeJob(id: $id, result: $r) {{ job {{ {JOB_FIELDS} }} {ERRORS} }} }}"""
UPSERT = f"""mutation($i: UpsertUserInput!) {{
  upsertUser(input: $i) {{ user {{ {USER_FIELDS} }} created {ERRORS} }} }}"""
UPDATE = f"""mutation($id: ID!, $i: UpdateUserInput!) {{
  updateUser(id: $id, input: $i) {{ user {{ {USER_FIELDS} }} {ERRORS} }} }}"""
JOB = f"query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}"
USER = f"query($id: ID!) {{ user(id: $id) {{ {USER_FIELDS} }} }}"
BY_EMAIL = f"query($e: String!) {{ userByEmail(email: $e) {{ {USER_FIELDS} }} }}"
JOBS = """query($f: JobFilter, $n: Int, $a: String) {
  jobs(filter: $f, first: $n, after: $a) {
    edges { cursor node { id } }
    pageInfo { hasNextPage endCursor } } }"""

OVERVIEW = """query($w: Int, $b: Int) {
  overview(windowS: $w, buckets: $b) {
    generatedAt windowS counts { queued running succeeded failed cancelled }
    queueDepth scheduled oldestQueuedAgeS pickupP50Ms pickupP95Ms
    buckets { start end succeeded failed cancelled }
    workers { id workflows startedAt lastSeenAt
      jobs { id workflow attempt startedAt leaseExpiresAt progress } } } }"""

CODES = {"invalid_request": "BAD_USER_INPUT", "not_found": "NOT_FOUND", "conflict": "CONFLICT"}


def instant(value: str | int | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, int):
        return float(value)
    return datetime.fromisoformat(value).timestamp()


def micros(usd: str | None) -> int | None:
    return None if usd is None else int(Decimal(usd) * 1_000_000)


def snake_keys(record: dict[str, Any]) -> dict[str, Any]:
    """`{"promptTokens": 1}` as REST spells it, `{"prompt_tokens": 1}`."""
    return {re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower(): value for key, value in record.items()}


def gql_job_as_rest(job: dict[str, Any]) -> dict[str, Any]:
    """A GraphQL `Job` in the shape of REST's GET /api/v1/jobs/<id>. The deprecated Decimal USD
    fields must say what the Micros fields say."""
    assert micros(job["costEstimate"]) == job["costEstimateMicros"], job
    assert micros(job["costActual"]) == job["costActualMicros"], job
    return {
        "id": job["id"],
        "workflow": job["workflow"],
        "status": job["status"].lower(),
        "priority": job["priority"].lower(),
        "payload": job["payload"],
        "result": job["result"],
        "error": job["error"],
        "callback_url": job["callbackUrl"],
        "user_id": job["userId"],
        "created_at": instant(job["createdAt"]),
        "started_at": instant(job["startedAt"]),
        "finished_at": instant(job["finishedAt"]),
        "run_at": instant(job["runAt"]),
        "attempts": job["attempts"],
        "max_attempts": job["maxAttempts"],
        "timeout_s": job["timeoutS"],
        "cost_estimate_micros": job["costEstimateMicros"],
        "cost_actual_micros": job["costActualMicros"],
        "cost_estimated": job["costEstimated"],
        "reserved_micros": job["reservedMicros"],
        "defer_reason": job["deferReason"],
        "tokens": None if job["tokens"] is None else snake_keys(job["tokens"]),
        "events": [
            {
                "at": instant(event["at"]),
                "type": event["type"],
                "from_status": event["fromStatus"].lower() if event["fromStatus"] else None,
                "to_status": event["toStatus"].lower(),
                "attempt": event["attempt"],
                "worker_id": event["workerId"],
                "detail": event["detail"],
            }
            for event in job["events"]
        ],
    }


REST_JOB_KEYS = [
    "id",
    "workflow",
    "status",
    "priority",
    "payload",
    "result",
    "error",
    "callback_url",
    "user_id",
    "created_at",
    "started_at",
    "finished_at",
    "run_at",
    "attempts",
    "max_attempts",
    "timeout_s",
    "cost_estimate_micros",
    "cost_actual_micros",
    "cost_estimated",
    "reserved_micros",
    "defer_reason",
    "tokens",
]


def rest_job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    """GET /api/v1/jobs/<id>, with the fields a GraphQL `Job` has and timestamps as instants."""
    response = http.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    body = response.json()
    shaped = {key: body[key] for key in REST_JOB_KEYS}
    for key in ("created_at", "started_at", "finished_at", "run_at"):
        shaped[key] = instant(body[key])
    shaped["events"] = [{**event, "at": instant(event["at"])} for event in body["events"]]
    return shaped


def without(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key not in keys}


def gql_user_as_rest(user: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": user["id"],
        "email": user["email"],
        "name": user["name"],
        "locale": user["locale"],
        "currency": user["currency"],
        "meta": user["meta"],
        "created_at": int(instant(user["createdAt"]) or 0),
        "updated_at": int(instant(user["updatedAt"]) or 0),
    }


# --- the same request gives the same data -----------------------------------------------------


def test_submit_job_and_intake_store_the_same_job(client: httpx.Client) -> None:
    user = client.post("/api/v1/users/upsert", json={"email": "p@example.com", "name": "P"}).json()["user"]
    rest_in = {
        "workflow": "echo",
        "payload": {"text": "same ✓", "n": [1, 2.5, None, True]},
        "callback_url": "https://example.com/hook",
        "priority": "high",
        "user_id": user["id"],
        "run_at": "2030-05-06T07:08:09Z",
        "max_attempts": 4,
        "timeout_s": 90,
    }
    gql_in = {
        "workflow": "echo",
        "payload": rest_in["payload"],
        "callbackUrl": rest_in["callback_url"],
        "priority": "HIGH",
        "userId": user["id"],
        "runAt": "2030-05-06T07:08:09+00:00",
        "maxAttempts": 4,
        "timeoutS": 90,
    }
    accepted = client.post("/api/v1/intake", json=rest_in)
    assert accepted.status_code == 202
    submitted = gql_data(client, SUBMIT, {"i": gql_in})["submitJob"]
    assert submitted["userErrors"] == []
    assert submitted["replayed"] is False
    assert (accepted.json()["status"], submitted["job"]["status"]) == ("queued", "QUEUED")

    from_rest = rest_job(client, accepted.json()["job_id"])
    from_gql = rest_job(client, submitted["job"]["id"])
    instants = ("id", "created_at", "events")
    assert without(from_rest, *instants) == without(from_gql, *instants)
    assert [without(e, "at") for e in from_rest["events"]] == [without(e, "at") for e in from_gql["events"]]

    # The mutation's answer is the stored job, as REST shows it.
    assert gql_job_as_rest(submitted["job"]) == from_gql


def test_job_and_status_and_job_detail_agree(client: httpx.Client) -> None:
    job_id = client.post("/api/v1/intake", json={"workflow": "echo", "payload": {"x": 1}}).json()["job_id"]
    client.post(f"/api/v1/_dev/complete/{job_id}", json={"result": {"y": 2}})

    job = gql_data(client, JOB, {"id": job_id})["job"]
    assert gql_job_as_rest(job) == rest_job(client, job_id)

    status = client.get(f"/api/v1/status/{job_id}").json()
    assert status == {
        "job_id": job["id"],
        "status": job["status"].lower(),
        "created_at": int(instant(job["createdAt"]) or 0),
        "result": job["result"],
        "error": job["error"],
        "attempts": job["attempts"],
        "started_at": None if job["startedAt"] is None else int(instant(job["startedAt"]) or 0),
        "finished_at": int(instant(job["finishedAt"]) or 0),
    }


def test_complete_job_and_dev_complete_do_the_same(client: httpx.Client) -> None:
    ids = [
        client.post("/api/v1/intake", json={"workflow": "echo", "payload": {}}).json()["job_id"]
        for _ in range(2)
    ]
    assert client.post(f"/api/v1/_dev/complete/{ids[0]}", json={"result": {"ok": 1}}).json() == {"ok": True}
    completed = gql_data(client, COMPLETE, {"id": ids[1], "r": {"ok": 1}})["completeJob"]
    assert completed["userErrors"] == []
    first, second = (rest_job(client, job_id) for job_id in ids)
    assert gql_job_as_rest(completed["job"]) == second
    differs = ("id", "created_at", "finished_at", "run_at", "events")
    assert without(first, *differs) == without(second, *differs)
    assert [without(e, "at") for e in first["events"]] == [without(e, "at") for e in second["events"]]


def test_jobs_connection_and_job_listing_page_alike(client: httpx.Client) -> None:
    ids = []
    for index in range(5):
        workflow = "echo" if index % 2 == 0 else "sleep"
        payload = {} if workflow == "echo" else {"seconds": 1}
        ids.append(
            client.post("/api/v1/intake", json={"workflow": workflow, "payload": payload}).json()["job_id"]
        )
    client.post(f"/api/v1/_dev/complete/{ids[0]}", json={})

    for rest_filter, gql_filter in [
        ({}, None),
        ({"workflow": "echo"}, {"workflow": "echo"}),
        ({"status": "queued"}, {"status": "QUEUED"}),
        ({"status": "succeeded", "workflow": "echo"}, {"status": "SUCCEEDED", "workflow": "echo"}),
    ]:
        rest_cursor: str | None = None
        gql_cursor: str | None = None
        while True:
            params = {**rest_filter, "limit": 2, **({"cursor": rest_cursor} if rest_cursor else {})}
            page = client.get("/api/v1/jobs", params=params).json()
            variables: dict[str, Any] = {"f": gql_filter, "n": 2, "a": gql_cursor}
            connection = gql_data(client, JOBS, variables)["jobs"]
            assert [job["id"] for job in page["jobs"]] == [edge["node"]["id"] for edge in connection["edges"]]
            assert page["next_cursor"] == connection["pageInfo"]["endCursor"]
            assert (page["next_cursor"] is not None) == connection["pageInfo"]["hasNextPage"]
            rest_cursor = gql_cursor = page["next_cursor"]
            if rest_cursor is None:
                break


def test_upsert_user_and_upsert_route_agree(client: httpx.Client) -> None:
    fields = {"name": "Same", "locale": "pt_br", "currency": "EUR", "meta": {"a": 1, "b": None}}
    rest = client.post("/api/v1/users/upsert", json={"email": " Rest@Example.com", **fields})
    assert rest.status_code == 201
    created = gql_data(client, UPSERT, {"i": {"email": " Gql@Example.com", **fields}})["upsertUser"]
    assert created["created"] is True
    assert created["userErrors"] == []
    rest_user, gql_user = rest.json()["user"], gql_user_as_rest(created["user"])
    assert (rest_user["email"], gql_user["email"]) == ("rest@example.com", "gql@example.com")
    assert without(rest_user, "id", "email", "created_at", "updated_at") == without(
        gql_user, "id", "email", "created_at", "updated_at"
    )
    assert gql_user["locale"] == "pt-BR"
    assert gql_user["meta"] == {"a": 1}

    again_rest = client.post("/api/v1/users/upsert", json={"email": "REST@example.com", "name": "Again"})
    again_gql = gql_data(client, UPSERT, {"i": {"email": "GQL@example.com", "name": "Again"}})["upsertUser"]
    assert again_rest.status_code == 200
    assert again_gql["created"] is False
    assert again_rest.json()["user"]["id"] == rest_user["id"]
    assert again_gql["user"]["id"] == gql_user["id"]

    # Reads: by id and by email, on both surfaces, give the same user.
    for user_id, email in ((rest_user["id"], "rest@EXAMPLE.com "), (gql_user["id"], " gql@example.COM")):
        by_id = client.get(f"/api/v1/users/{user_id}").json()
        assert gql_user_as_rest(gql_data(client, USER, {"id": user_id})["user"]) == by_id
        by_email = client.get("/api/v1/users", params={"email": email}).json()
        assert gql_user_as_rest(gql_data(client, BY_EMAIL, {"e": email})["userByEmail"]) == by_email
        assert by_email == by_id


def test_update_user_and_patch_agree(client: httpx.Client) -> None:
    ids = [
        client.post(
            "/api/v1/users/upsert", json={"email": f"{n}@example.com", "name": n, "meta": {"k": 1}}
        ).json()["user"]["id"]
        for n in ("one", "two")
    ]
    change = {"name": "Changed", "locale": "fr-ca", "currency": "USD", "meta": {"k": None, "new": "v"}}
    patched = client.patch(f"/api/v1/users/{ids[0]}", json=change)
    assert patched.status_code == 200
    updated = gql_data(client, UPDATE, {"id": ids[1], "i": change})["updateUser"]
    assert updated["userErrors"] == []
    keep = ("id", "email", "created_at", "updated_at")
    assert without(patched.json()["user"], *keep) == without(gql_user_as_rest(updated["user"]), *keep)
    assert gql_user_as_rest(updated["user"]) == client.get(f"/api/v1/users/{ids[1]}").json()


def test_health_and_public_metrics_agree(client: httpx.Client) -> None:
    client.post("/api/v1/intake", json={"workflow": "echo", "payload": {}})
    rest_health = client.get("/health").json()
    rest_metrics = client.get("/public/metrics").json()
    data = gql_data(
        client,
        "{ health { ok ts } publicMetrics { uptimeRolling7d jobsToday auditCoverage lastUpdated } }",
    )
    assert data["health"]["ok"] is rest_health["ok"] is True
    assert abs(data["health"]["ts"] - rest_health["ts"]) <= 5
    metrics = data["publicMetrics"]
    assert {
        "uptime_rolling_7d": metrics["uptimeRolling7d"],
        "jobs_today": metrics["jobsToday"],
        "audit_coverage": metrics["auditCoverage"],
        "last_updated": metrics["lastUpdated"],
    } == rest_metrics
    assert rest_metrics["jobs_today"] == 1


OVERVIEW_TIMES = {"generated_at", "start", "end", "started_at", "last_seen_at", "lease_expires_at"}


def comparable(value: Any) -> Any:
    """An overview as REST spells it (snake_case at every level), its timestamps as instants."""
    if isinstance(value, list):
        return [comparable(item) for item in value]
    if not isinstance(value, dict):
        return value
    record = snake_keys(value)
    return {
        key: instant(item) if key in OVERVIEW_TIMES else item if key == "progress" else comparable(item)
        for key, item in record.items()
    }


def test_overview_and_its_route_agree(client: httpx.Client, db: Database) -> None:
    seed_overview(db, datetime.now(UTC))
    for params, variables in (({}, {}), ({"window_s": 10800, "buckets": 3}, {"w": 10800, "b": 3})):
        rest = comparable(client.get("/api/v1/overview", params=params).json())
        graphql = comparable(gql_data(client, OVERVIEW, variables)["overview"])
        # Read a moment apart: the window slides by that moment, and the ages grow by it.
        moment = graphql["generated_at"] - rest["generated_at"]
        assert 0 <= moment < 5
        assert graphql["oldest_queued_age_s"] == pytest.approx(rest["oldest_queued_age_s"] + moment, abs=0.01)
        for mine, theirs in zip(graphql["buckets"], rest["buckets"], strict=True):
            assert mine["start"] == pytest.approx(theirs["start"] + moment, abs=1e-3)
        moving = ("generated_at", "oldest_queued_age_s", "buckets")
        assert without(graphql, *moving) == without(rest, *moving)
        assert [without(b, "start", "end") for b in graphql["buckets"]] == [
            without(b, "start", "end") for b in rest["buckets"]
        ]
        assert rest["counts"]["running"] == 4
        assert [worker["id"] for worker in rest["workers"]] == ["w-new", "w-older"]


# --- the same bad request gives the equivalent error --------------------------------------------


@pytest.fixture(scope="module", params=DB_KINDS)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir: Path = tmp_path_factory.mktemp("parity-errors")
    with shared_server(request, str(request.param), workdir) as server:
        yield server


@pytest.fixture(scope="module")
def existing(live: LiveServer) -> dict[str, str]:
    with live.client() as http:
        queued = http.post("/api/v1/intake", json={"workflow": "echo", "payload": {}}).json()["job_id"]
        done = http.post("/api/v1/intake", json={"workflow": "echo", "payload": {}}).json()["job_id"]
        http.post(f"/api/v1/_dev/complete/{done}", json={})
        user = http.post("/api/v1/users/upsert", json={"email": "e@example.com", "name": "E"}).json()["user"]
        for name in ("taken", "other"):
            body = {"name": name, "every_s": 3600, "enabled": False, "job": JOB_IN}
            made = http.post("/api/v1/schedules", json=body)
            assert made.status_code == 201, made.text
        schedule = made.json()["schedule"]["id"]
    return {"queued": queued, "done": done, "user": user["id"], "schedule": schedule}


JOB_IN = {"workflow": "echo", "payload": {}}
SCHEDULE_PAGE = "query($n: Int, $a: String) { schedules(first: $n, after: $a) { edges { cursor } } }"
NEW_SCHEDULE = """mutation($i: CreateScheduleInput!) {
  createSchedule(input: $i) { schedule { id } userErrors { field message code } } }"""
RENAME_SCHEDULE = """mutation($id: ID!, $i: UpdateScheduleInput!) {
  updateSchedule(id: $id, input: $i) { schedule { id } userErrors { field message code } } }"""
# (REST method, path, kwargs) and (GraphQL document, variables), the same request on each surface.
ERROR_CASES: list[tuple[tuple[str, str, dict[str, Any]], tuple[str, dict[str, Any]]]] = [
    (
        ("POST", "/api/v1/intake", {"json": {**JOB_IN, "payload": "x"}}),
        (SUBMIT, {"i": {**JOB_IN, "payload": "x"}}),
    ),
    (
        ("POST", "/api/v1/intake", {"json": {**JOB_IN, "max_attempts": 0}}),
        (SUBMIT, {"i": {**JOB_IN, "maxAttempts": 0}}),
    ),
    (
        ("POST", "/api/v1/intake", {"json": {**JOB_IN, "callback_url": "ftp://x.example"}}),
        (SUBMIT, {"i": {**JOB_IN, "callbackUrl": "ftp://x.example"}}),
    ),
    (
        ("POST", "/api/v1/intake", {"json": {**JOB_IN, "user_id": UNKNOWN_ID}}),
        (SUBMIT, {"i": {**JOB_IN, "userId": UNKNOWN_ID}}),
    ),
    (
        ("POST", "/api/v1/intake", {"json": JOB_IN, "headers": {"Idempotency-Key": "k" * 300}}),
        (SUBMIT, {"i": JOB_IN, "k": "k" * 300}),
    ),
    (
        ("POST", "/api/v1/users/upsert", {"json": {"email": "bad", "name": "x"}}),
        (UPSERT, {"i": {"email": "bad", "name": "x"}}),
    ),
    (
        ("POST", "/api/v1/users/upsert", {"json": {"email": "a@example.com", "name": "x", "locale": "??"}}),
        (UPSERT, {"i": {"email": "a@example.com", "name": "x", "locale": "??"}}),
    ),
    (
        ("POST", "/api/v1/users/upsert", {"json": {"email": "a@example.com", "name": "x", "meta": [1]}}),
        (UPSERT, {"i": {"email": "a@example.com", "name": "x", "meta": [1]}}),
    ),
    (("PATCH", "/api/v1/users/{user}", {"json": {}}), (UPDATE, {"id": "{user}", "i": {}})),
    (
        ("PATCH", "/api/v1/users/{user}", {"json": {"name": ""}}),
        (UPDATE, {"id": "{user}", "i": {"name": ""}}),
    ),
    (
        ("PATCH", f"/api/v1/users/{UNKNOWN_ID}", {"json": {"name": "x"}}),
        (UPDATE, {"id": UNKNOWN_ID, "i": {"name": "x"}}),
    ),
    (("PATCH", "/api/v1/users/nope", {"json": {"name": "x"}}), (UPDATE, {"id": "nope", "i": {"name": "x"}})),
    (("GET", f"/api/v1/users/{UNKNOWN_ID}", {}), (USER, {"id": UNKNOWN_ID})),
    (
        ("GET", "/api/v1/users", {"params": {"email": "nobody@example.com"}}),
        (BY_EMAIL, {"e": "nobody@example.com"}),
    ),
    (("GET", "/api/v1/users", {"params": {"email": ""}}), (BY_EMAIL, {"e": ""})),
    (("GET", f"/api/v1/status/{UNKNOWN_ID}", {}), (JOB, {"id": UNKNOWN_ID})),
    (("GET", f"/api/v1/jobs/{UNKNOWN_ID}", {}), (JOB, {"id": UNKNOWN_ID})),
    (("GET", "/api/v1/jobs", {"params": {"limit": 0}}), (JOBS, {"n": 0})),
    (("GET", "/api/v1/jobs", {"params": {"limit": 101}}), (JOBS, {"n": 101})),
    (("GET", "/api/v1/jobs", {"params": {"cursor": "zzz"}}), (JOBS, {"a": "zzz"})),
    (("GET", "/api/v1/jobs", {"params": {"key_id": "someone"}}), (JOBS, {"f": {"keyId": "someone"}})),
    (("GET", "/api/v1/overview", {"params": {"window_s": 59}}), (OVERVIEW, {"w": 59})),
    (("GET", "/api/v1/overview", {"params": {"buckets": 121}}), (OVERVIEW, {"b": 121})),
    (("GET", "/api/v1/jobs", {"params": {"user_id": "nope"}}), (JOBS, {"f": {"userId": "nope"}})),
    (("GET", "/api/v1/jobs", {"params": {"text": ""}}), (JOBS, {"f": {"text": ""}})),
    (("GET", "/api/v1/schedules", {"params": {"limit": 0}}), (SCHEDULE_PAGE, {"n": 0})),
    (("GET", "/api/v1/schedules", {"params": {"limit": 101}}), (SCHEDULE_PAGE, {"n": 101})),
    (("GET", "/api/v1/schedules", {"params": {"cursor": "zzz"}}), (SCHEDULE_PAGE, {"a": "zzz"})),
    (
        ("POST", "/api/v1/schedules", {"json": {"name": "taken", "every_s": 60, "job": JOB_IN}}),
        (NEW_SCHEDULE, {"i": {"name": "taken", "everyS": 60, "job": JOB_IN}}),
    ),
    (
        ("PATCH", "/api/v1/schedules/{schedule}", {"json": {"name": "taken"}}),
        (RENAME_SCHEDULE, {"id": "{schedule}", "i": {"name": "taken"}}),
    ),
    (("POST", "/api/v1/_dev/complete/{done}", {"json": {}}), (COMPLETE, {"id": "{done}"})),
    (
        ("POST", "/api/v1/_dev/complete/{queued}", {"json": {"result": 5}}),
        (COMPLETE, {"id": "{queued}", "r": 5}),
    ),
    (("POST", f"/api/v1/_dev/complete/{UNKNOWN_ID}", {"json": {}}), (COMPLETE, {"id": UNKNOWN_ID})),
]


def fill(value: Any, existing: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(**existing) if "{" in value and "}" in value and " " not in value else value
    if isinstance(value, dict):
        return {key: fill(item, existing) for key, item in value.items()}
    return value


@pytest.mark.parametrize(
    ("rest", "graphql"), ERROR_CASES, ids=[f"{r[0]} {r[1][:40]} {str(r[2])[:40]}" for r, _ in ERROR_CASES]
)
def test_the_same_bad_request_gives_the_same_error(
    live: LiveServer,
    existing: dict[str, str],
    rest: tuple[str, str, dict[str, Any]],
    graphql: tuple[str, dict[str, Any]],
) -> None:
    method, path, kwargs = rest
    document, variables = graphql
    with live.client() as http:
        response = http.request(method, path.format(**existing), **kwargs)
        body = gql(http, document, fill(variables, existing))
    assert 400 <= response.status_code < 500
    rest_error = response.json()
    expected_code = CODES[rest_error["error"]]
    rest_fields = [(d["field"], d["message"]) for d in rest_error.get("details", [])]

    payload = next(iter((body.get("data") or {}).values()), None)
    assert {d["code"] for d in rest_error.get("details", [])} <= FIELD_CODES
    if isinstance(payload, dict) and payload.get("userErrors"):
        errors = payload["userErrors"]
        graphql_fields = [(e["field"], e["message"]) for e in errors if e["field"] is not None]
        # The same field, spelt as each surface's clients spell it (`max_attempts` / `maxAttempts`).
        assert graphql_fields == [(graphql_field_name(field), message) for field, message in rest_fields]
        if not rest_fields:
            # Not about a field: the coarse code (per-field codes: test_one_set_of_field_codes).
            assert {error["code"] for error in errors} == {expected_code}
            assert [e["message"] for e in errors] == [rest_error["message"]]
    else:
        [error] = body["errors"]
        assert error["extensions"]["code"] == expected_code
        assert error["message"] == rest_error["message"]
        graphql_details = error["extensions"].get("details", [])
        rest_details = [(d["field"], d["message"], d["code"]) for d in rest_error.get("details", [])]
        assert [(d["field"], d["message"], d["code"]) for d in graphql_details] == rest_details


FIELD_CODES = {code.value for code in FieldCode}
# An invalid submission on each surface and the per-field codes REST answers (one set, CONTRACT.md §4
# keeps the body's top-level `error`; the codes in `details` are `levqor.errors.FieldCode`).
FIELD_CODE_CASES: list[tuple[tuple[str, str, dict[str, Any]], tuple[str, dict[str, Any]], list[str]]] = [
    (
        ("POST", "/api/v1/intake", {"json": {"workflow": "nope", "payload": {}}}),
        (SUBMIT, {"i": {"workflow": "nope", "payload": {}}}),
        ["enum"],
    ),
    (
        ("POST", "/api/v1/intake", {"json": {"workflow": "sleep", "payload": {"seconds": "1"}}}),
        (SUBMIT, {"i": {"workflow": "sleep", "payload": {"seconds": "1"}}}),
        ["type"],
    ),
    (
        ("POST", "/api/v1/intake", {"json": {"workflow": "sleep", "payload": {"seconds": -1}}}),
        (SUBMIT, {"i": {"workflow": "sleep", "payload": {"seconds": -1}}}),
        ["out_of_range"],
    ),
    (
        ("POST", "/api/v1/intake", {"json": {**JOB_IN, "max_attempts": 0}}),
        (SUBMIT, {"i": {**JOB_IN, "maxAttempts": 0}}),
        ["out_of_range"],
    ),
    (
        ("POST", "/api/v1/users/upsert", {"json": {"email": "a@example.com", "name": "x", "locale": "??"}}),
        (UPSERT, {"i": {"email": "a@example.com", "name": "x", "locale": "??"}}),
        ["pattern"],
    ),
    (
        ("PATCH", "/api/v1/users/{user}", {"json": {"name": ""}}),
        (UPDATE, {"id": "{user}", "i": {"name": ""}}),
        ["too_short"],
    ),
]


@pytest.mark.parametrize(
    ("rest", "graphql", "codes"), FIELD_CODE_CASES, ids=[c[2][0] for c in FIELD_CODE_CASES]
)
def test_one_set_of_field_codes(
    live: LiveServer,
    existing: dict[str, str],
    rest: tuple[str, str, dict[str, Any]],
    graphql: tuple[str, dict[str, Any]],
    codes: list[str],
) -> None:
    """`details[].code` on REST and `userErrors[].code` on GraphQL, for the same bad submission."""
    method, path, kwargs = rest
    document, variables = graphql
    with live.client() as http:
        response = http.request(method, path.format(**existing), **kwargs)
        body = gql(http, document, fill(variables, existing))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"
    assert [d["code"] for d in response.json()["details"]] == codes
    rest_codes = [(d["field"], d["code"]) for d in response.json()["details"]]
    payload = next(iter((body.get("data") or {}).values()))
    graphql_codes = [(e["field"], e["code"]) for e in payload["userErrors"]]
    assert graphql_codes == [(graphql_field_name(field), code) for field, code in rest_codes]


# --- budgets and usage --------------------------------------------------------------------------

ADMIN_KEY = "parity-admin-key-0123456789"
BUDGET_FIELDS = (
    "id subject subjectId period limitMicros softLimitMicros maxJobMicros workflowMaxJobMicros "
    "periodStart resetsAt spentMicros reservedMicros remainingMicros softLimitCrossed createdAt updatedAt"
)
BUDGETS = f"{{ budgets {{ {BUDGET_FIELDS} }} }}"
SET_BUDGET = f"""mutation($i: SetBudgetInput!) {{
  setBudget(input: $i) {{ budget {{ {BUDGET_FIELDS} }} {ERRORS} }} }}"""
DELETE_BUDGET = f"""mutation($s: BudgetSubject!, $id: ID!) {{
  deleteBudget(subject: $s, subjectId: $id) {{ budget {{ {BUDGET_FIELDS} }} {ERRORS} }} }}"""
USAGE_ROW = (
    "group jobs succeeded failed cancelled spentMicros reservedMicros estimatedMicros tokens "
    "promptTokens completionTokens cachedTokens reasoningTokens"
)
USAGE = f"""query($f: Date, $t: Date, $g: UsageGroup, $k: ID, $u: ID) {{
  usage(from: $f, to: $t, groupBy: $g, keyId: $k, userId: $u) {{
    from to groupBy rows {{ {USAGE_ROW} }} }} }}"""
LLM_JOB = {
    "workflow": "llm.chat",
    "payload": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100},
}


def gql_budget_as_rest(budget: dict[str, Any]) -> dict[str, Any]:
    shaped = snake_keys(budget)
    shaped["subject"] = budget["subject"].lower()
    shaped["period"] = budget["period"].lower()
    for key in ("period_start", "resets_at", "created_at", "updated_at"):
        shaped[key] = instant(shaped[key])
    return shaped


def rest_budget(budget: dict[str, Any]) -> dict[str, Any]:
    return {
        **budget,
        **{key: instant(budget[key]) for key in ("period_start", "resets_at", "created_at", "updated_at")},
    }


def gql_usage_as_rest(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "from": report["from"],
        "to": report["to"],
        "group_by": report["groupBy"].lower(),
        "usage": [snake_keys(row) for row in report["rows"]],
    }


@pytest.fixture
def admin(make_server: Any) -> Iterator[httpx.Client]:
    """A server with keys configured, and a client with the all-scope static key."""
    live = make_server(API_KEYS=ADMIN_KEY)
    with live.client(headers={"X-Api-Key": ADMIN_KEY}) as http:
        yield http


def managed_key(http: httpx.Client, scopes: list[str] | None = None) -> tuple[str, str]:
    body = {"name": "budgeted", "scopes": scopes or ["jobs:read", "jobs:write"]}
    response = http.post("/api/v1/keys", json=body)
    assert response.status_code == 201, response.text
    return response.json()["key"]["id"], response.json()["secret"]


def test_a_budget_set_on_either_surface_reads_the_same_on_both(admin: httpx.Client) -> None:
    key_id, _ = managed_key(admin)
    user_id = admin.post("/api/v1/users/upsert", json={"email": "b@example.com", "name": "B"}).json()["user"][
        "id"
    ]
    put = admin.put(
        f"/api/v1/budgets/keys/{key_id}",
        json={
            "period": "day",
            "limit_micros": 5_000_000,
            "soft_limit_micros": 4_000_000,
            "max_job_micros": 1_000_000,
            "workflow_max_job_micros": {"llm.chat": 900_000},
        },
    )
    assert put.status_code == 200, put.text
    key_budget = put.json()
    assert (key_budget["subject"], key_budget["subject_id"]) == ("key", key_id)
    assert (key_budget["spent_micros"], key_budget["reserved_micros"]) == (0, 0)
    assert key_budget["remaining_micros"] == 5_000_000
    set_user = gql_data(
        admin,
        SET_BUDGET,
        {"i": {"subject": "USER", "subjectId": user_id, "period": "MONTH", "limitMicros": 7_000_000_000}},
    )["setBudget"]
    assert set_user["userErrors"] == []
    user_budget = gql_budget_as_rest(set_user["budget"])
    # Past GraphQL Int's 32 bits: the Micros scalar carries it exactly.
    assert user_budget["limit_micros"] == 7_000_000_000
    assert user_budget["soft_limit_micros"] is None
    assert user_budget["workflow_max_job_micros"] == {}

    listed = admin.get("/api/v1/budgets").json()["budgets"]
    assert [rest_budget(b) for b in listed] == [rest_budget(key_budget), user_budget]
    assert [gql_budget_as_rest(b) for b in gql_data(admin, BUDGETS)["budgets"]] == [
        rest_budget(b) for b in listed
    ]

    # Removing: each surface answers the budget as it was, and then neither has it.
    removed = gql_data(admin, DELETE_BUDGET, {"s": "KEY", "id": key_id})["deleteBudget"]
    assert gql_budget_as_rest(removed["budget"]) == rest_budget(key_budget)
    deleted = admin.delete(f"/api/v1/budgets/users/{user_id}")
    assert deleted.status_code == 200, deleted.text
    assert rest_budget(deleted.json()) == user_budget
    assert admin.get("/api/v1/budgets").json() == {"budgets": []}
    assert gql_data(admin, BUDGETS) == {"budgets": []}
    again = admin.delete(f"/api/v1/budgets/keys/{key_id}")
    assert again.status_code == 404
    gone = gql_data(admin, DELETE_BUDGET, {"s": "USER", "id": user_id})["deleteBudget"]
    assert gone["budget"] is None
    assert gone["userErrors"] == [
        {
            "field": None,
            "message": again.json()["message"].replace(f"API key '{key_id}'", f"user '{user_id}'"),
            "code": "NOT_FOUND",
        }
    ]


def test_usage_is_the_same_on_both_surfaces_and_matches_the_budget(admin: httpx.Client) -> None:
    key_id, secret = managed_key(admin)
    _, other_secret = managed_key(admin)
    assert (
        admin.put(
            f"/api/v1/budgets/keys/{key_id}", json={"period": "total", "limit_micros": 10**9}
        ).status_code
        == 200
    )
    user_id = admin.post("/api/v1/users/upsert", json={"email": "u@example.com", "name": "U"}).json()["user"][
        "id"
    ]
    as_key = {"X-Api-Key": secret}
    ids = [
        admin.post("/api/v1/intake", json={**LLM_JOB, "user_id": user_id}, headers=as_key).json()["job_id"],
        admin.post("/api/v1/intake", json=LLM_JOB, headers=as_key).json()["job_id"],
        admin.post("/api/v1/intake", json={"workflow": "echo", "payload": {}}, headers=as_key).json()[
            "job_id"
        ],
    ]
    submitted = gql(admin, SUBMIT, {"i": {**LLM_JOB, "budgetPolicy": "REJECT"}})
    ids.append(submitted["data"]["submitJob"]["job"]["id"])
    admin.post("/api/v1/intake", json=LLM_JOB, headers={"X-Api-Key": other_secret})
    estimate = rest_job(admin, ids[0])["cost_estimate_micros"]
    assert estimate
    assert rest_job(admin, ids[0])["reserved_micros"] == estimate

    # One finishes with its cost reported by a worker, one is cancelled.
    claimed = admin.post(
        "/api/v1/workers/claim", json={"worker_id": "w", "workflows": ["llm.chat"], "max_jobs": 1}
    ).json()["jobs"][0]
    assert claimed["id"] == ids[0]
    done = admin.post(
        f"/api/v1/jobs/{ids[0]}/complete",
        json={"worker_id": "w", "attempt": claimed["attempt"], "result": {}, "cost": "0.000123"},
    )
    assert done.status_code == 200, done.text
    assert admin.post(f"/api/v1/jobs/{ids[1]}/cancel").status_code == 200
    finished = rest_job(admin, ids[0])
    assert finished["cost_actual_micros"] == 123
    assert gql_job_as_rest(gql_data(admin, JOB, {"id": ids[0]})["job"]) == finished

    for group_by in ("day", "workflow", "key", "user"):
        for extra in ({}, {"key_id": key_id}, {"user_id": user_id}):
            rest = admin.get("/api/v1/usage", params={"group_by": group_by, **extra})
            assert rest.status_code == 200, rest.text
            variables = {"g": group_by.upper(), "k": extra.get("key_id"), "u": extra.get("user_id")}
            assert gql_usage_as_rest(gql_data(admin, USAGE, variables)["usage"]) == rest.json()
    [own] = admin.get("/api/v1/usage", params={"group_by": "key", "key_id": key_id}).json()["usage"]
    assert own == {
        "group": key_id,
        "jobs": 3,
        "succeeded": 1,
        "failed": 0,
        "cancelled": 1,
        "spent_micros": 123,
        "reserved_micros": 0,
        "estimated_micros": 2 * estimate,
        "tokens": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "cached_tokens": 0,
        "reasoning_tokens": 0,
    }
    # A key without `admin` sees its own usage, with or without naming itself.
    for params in ({"group_by": "key"}, {"group_by": "key", "key_id": key_id}):
        assert admin.get("/api/v1/usage", params=params, headers=as_key).json()["usage"] == [own]
    by_workflow = {
        row["group"]: row
        for row in admin.get("/api/v1/usage", params={"group_by": "workflow"}).json()["usage"]
    }
    # Four llm.chat jobs, two of them still queued but under no budget (the static key's, the other
    # key's): estimated, and nothing held.
    assert by_workflow["llm.chat"]["jobs"] == 4
    assert (by_workflow["llm.chat"]["estimated_micros"], by_workflow["llm.chat"]["reserved_micros"]) == (
        4 * estimate,
        0,
    )
    # The budget agrees with the usage of its key to the micro-dollar.
    [budget] = admin.get("/api/v1/budgets").json()["budgets"]
    assert (budget["spent_micros"], budget["reserved_micros"]) == (
        own["spent_micros"],
        own["reserved_micros"],
    )


def test_a_refusal_reads_the_same_on_both_surfaces(admin: httpx.Client) -> None:
    key_id, secret = managed_key(admin)
    as_key = {"X-Api-Key": secret}
    first = admin.post("/api/v1/intake", json=LLM_JOB, headers=as_key)
    assert first.status_code == 202
    estimate = rest_job(admin, first.json()["job_id"])["cost_estimate_micros"]
    limit = estimate * 3 // 2
    assert (
        admin.put(f"/api/v1/budgets/keys/{key_id}", json={"period": "day", "limit_micros": limit}).status_code
        == 200
    )
    held = admin.post("/api/v1/intake", json=LLM_JOB, headers=as_key)
    assert held.status_code == 202  # the first job was submitted before the budget: not held
    refused = admin.post("/api/v1/intake", json=LLM_JOB, headers=as_key)
    assert refused.status_code == 402, refused.text
    body = refused.json()
    assert body["error"] == "budget_exceeded"
    [detail] = body["details"]
    remaining = limit - estimate
    assert detail | {"resets_at": None} == {
        "field": "budget",
        "code": "budget_exceeded",
        "message": body["message"],
        "budget_id": admin.get("/api/v1/budgets").json()["budgets"][0]["id"],
        "subject": "key",
        "subject_id": key_id,
        "period": "day",
        "limit_micros": limit,
        "remaining_micros": remaining,
        "estimate_micros": estimate,
        "resets_at": None,
    }
    assert detail["resets_at"] is not None
    assert f"{remaining} of {limit} micro-USD left" in body["message"]
    assert key_id in body["message"]

    with_key = httpx.Client(base_url=str(admin.base_url), headers=as_key, timeout=30)
    with with_key:
        payload = gql_data(with_key, SUBMIT, {"i": LLM_JOB})["submitJob"]
    assert payload["job"] is None
    assert payload["userErrors"] == [{"field": None, "message": body["message"], "code": "BUDGET_EXCEEDED"}]


def test_a_deferred_job_says_why_and_when_on_both_surfaces(admin: httpx.Client) -> None:
    key_id, secret = managed_key(admin)
    as_key = {"X-Api-Key": secret}
    first = admin.post("/api/v1/intake", json=LLM_JOB, headers=as_key).json()["job_id"]
    estimate = rest_job(admin, first)["cost_estimate_micros"]
    # Room for one job today: the first to come after the budget holds it, the next ones wait.
    budget = admin.put(
        f"/api/v1/budgets/keys/{key_id}", json={"period": "day", "limit_micros": estimate * 3 // 2}
    ).json()
    assert admin.post("/api/v1/intake", json=LLM_JOB, headers=as_key).status_code == 202
    accepted = admin.post("/api/v1/intake", json={**LLM_JOB, "budget_policy": "defer"}, headers=as_key)
    assert accepted.status_code == 202, accepted.text
    with httpx.Client(base_url=str(admin.base_url), headers=as_key, timeout=30) as with_key:
        submitted = gql_data(with_key, SUBMIT, {"i": {**LLM_JOB, "budgetPolicy": "DEFER"}})["submitJob"]
        rejected = gql_data(with_key, SUBMIT, {"i": LLM_JOB})["submitJob"]
    assert submitted["userErrors"] == []
    assert [error["code"] for error in rejected["userErrors"]] == ["BUDGET_EXCEEDED"]
    from_rest = rest_job(admin, accepted.json()["job_id"])
    from_gql = gql_job_as_rest(submitted["job"])
    # Tomorrow has room for one of them: the second waits a day more.
    reset = instant(budget["resets_at"]) or 0
    for job, run_at in ((from_rest, reset), (from_gql, reset + 86_400)):
        assert job["status"] == "queued"
        assert job["run_at"] == run_at
        assert key_id in (job["defer_reason"] or "")
        assert job["reserved_micros"] == estimate
    assert from_gql == rest_job(admin, submitted["job"]["id"])


# --- schedules -----------------------------------------------------------------------------------

SCHEDULE_FIELDS = """id name cron everyS timezone job onMissed enabled nextFireAt nextFireTimes
  fires { fireTime kind ticks jobId error firedAt } createdAt updatedAt"""
CREATE_SCHEDULE = f"""mutation($i: CreateScheduleInput!) {{
  createSchedule(input: $i) {{ schedule {{ {SCHEDULE_FIELDS} }} userErrors {{ field message code }} }} }}"""
SCHEDULE = f"query($id: ID!) {{ schedule(id: $id) {{ {SCHEDULE_FIELDS} }} }}"
SCHEDULES = f"""query($n: Int!, $a: String) {{
  schedules(first: $n, after: $a) {{
    edges {{ node {{ {SCHEDULE_FIELDS} }} }} pageInfo {{ endCursor }} }} }}"""
RUN_SCHEDULE = f"""mutation($id: ID!) {{ runSchedule(id: $id) {{
  fire {{ fireTime kind ticks jobId error firedAt }} jobId schedule {{ {SCHEDULE_FIELDS} }}
  userErrors {{ field message code }} }} }}"""


def gql_fire_as_rest(fire: dict[str, Any]) -> dict[str, Any]:
    shaped = snake_keys(fire)
    shaped["kind"] = fire["kind"].lower()
    shaped["fire_time"], shaped["fired_at"] = instant(fire["fireTime"]), instant(fire["firedAt"])
    return shaped


def rest_fire(fire: dict[str, Any]) -> dict[str, Any]:
    return {**fire, "fire_time": instant(fire["fire_time"]), "fired_at": instant(fire["fired_at"])}


def gql_schedule_as_rest(schedule: dict[str, Any]) -> dict[str, Any]:
    shaped = snake_keys(schedule)
    shaped["on_missed"] = schedule["onMissed"].lower()
    shaped["fires"] = [gql_fire_as_rest(fire) for fire in schedule["fires"]]
    shaped["next_fire_times"] = [instant(at) for at in schedule["nextFireTimes"]]
    for key in ("next_fire_at", "created_at", "updated_at"):
        shaped[key] = instant(shaped[key])
    return shaped


def rest_schedule(schedule: dict[str, Any]) -> dict[str, Any]:
    return {
        **schedule,
        "fires": [rest_fire(fire) for fire in schedule["fires"]],
        "next_fire_times": [instant(at) for at in schedule["next_fire_times"]],
        **{key: instant(schedule[key]) for key in ("next_fire_at", "created_at", "updated_at")},
    }


def test_a_schedule_made_on_either_surface_reads_the_same_on_both(admin: httpx.Client) -> None:
    job = {"workflow": "echo", "payload": {"report": "nightly"}, "priority": "high"}
    made = admin.post(
        "/api/v1/schedules",
        json={"name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/London", "job": job},
    )
    assert made.status_code == 201, made.text
    by_rest = made.json()["schedule"]
    created = gql_data(
        admin,
        CREATE_SCHEDULE,
        {
            "i": {
                "name": "nightly-too",  # names are unique
                "cron": "30 2 * * *",
                "timezone": "Europe/London",
                "job": {**job, "priority": "HIGH"},
            }
        },
    )["createSchedule"]
    assert created["userErrors"] == []
    by_gql = gql_schedule_as_rest(created["schedule"])
    # The same schedule but for its id, name and instants of making: the same job, cadence and ticks.
    differs = {"id", "name", "created_at", "updated_at"}
    assert {k: v for k, v in by_gql.items() if k not in differs} == {
        k: v for k, v in rest_schedule(by_rest).items() if k not in differs
    }
    assert by_rest["job"]["workflow"] == "echo"
    assert len(by_rest["next_fire_times"]) > 1

    # Each reads the other's alike.
    read = gql_data(admin, SCHEDULE, {"id": by_rest["id"]})["schedule"]
    assert gql_schedule_as_rest(read) == rest_schedule(by_rest)
    got = admin.get(f"/api/v1/schedules/{by_gql['id']}")
    assert got.status_code == 200, got.text
    assert rest_schedule(got.json()["schedule"]) == by_gql
    # The listing, a page of one at a time on each.
    rest_page = admin.get("/api/v1/schedules", params={"limit": 1}).json()
    gql_page = gql_data(admin, SCHEDULES, {"n": 1})["schedules"]
    assert [gql_schedule_as_rest(edge["node"]) for edge in gql_page["edges"]] == [
        rest_schedule(s) for s in rest_page["schedules"]
    ]
    assert rest_page["next_cursor"] == gql_page["pageInfo"]["endCursor"] is not None
    rest_last = admin.get("/api/v1/schedules", params={"limit": 1, "cursor": rest_page["next_cursor"]}).json()
    gql_last = gql_data(admin, SCHEDULES, {"n": 1, "a": gql_page["pageInfo"]["endCursor"]})["schedules"]
    assert [gql_schedule_as_rest(edge["node"]) for edge in gql_last["edges"]] == [
        rest_schedule(s) for s in rest_last["schedules"]
    ]
    assert rest_last["next_cursor"] is gql_last["pageInfo"]["endCursor"] is None
    assert {s["id"] for s in rest_page["schedules"] + rest_last["schedules"]} == {by_rest["id"], by_gql["id"]}

    # "Run now" on each surface: a manual fire with its job, recorded alike.
    ran = admin.post(f"/api/v1/schedules/{by_rest['id']}/run")
    assert ran.status_code == 202, ran.text
    run = gql_data(admin, RUN_SCHEDULE, {"id": by_gql["id"]})["runSchedule"]
    assert run["userErrors"] == []
    rest_run, gql_run = ran.json(), run
    assert rest_run["fire"]["kind"] == gql_fire_as_rest(gql_run["fire"])["kind"] == "manual"
    assert rest_run["fire"]["job_id"] == rest_run["job_id"]
    assert gql_run["fire"]["jobId"] == gql_run["jobId"]
    for job_id in (rest_run["job_id"], gql_run["jobId"]):
        stored = admin.get(f"/api/v1/jobs/{job_id}").json()
        assert (stored["workflow"], stored["payload"], stored["priority"]) == ("echo", job["payload"], "high")
    after = gql_data(admin, SCHEDULE, {"id": by_rest["id"]})["schedule"]
    assert gql_schedule_as_rest(after) == rest_schedule(
        admin.get(f"/api/v1/schedules/{by_rest['id']}").json()["schedule"]
    )
    assert [fire["job_id"] for fire in gql_schedule_as_rest(after)["fires"]] == [rest_run["job_id"]]


# --- runs ----------------------------------------------------------------------------------------

RUN_FIELDS = """id status cancelRequested callbackUrl stepsTotal
  counts { queued running succeeded failed cancelled }
  costEstimateMicros costActualMicros reservedMicros
  steps { key waitingOn dependsOn { key onFailure } job { id workflow status attempts result error } }
  events { type fromStatus toStatus detail }"""
SUBMIT_RUN = f"""mutation($i: SubmitRunInput!) {{
  submitRun(input: $i) {{ run {{ {RUN_FIELDS} }} userErrors {{ field message code }} }} }}"""
RUN = f"query($id: ID!) {{ run(id: $id) {{ {RUN_FIELDS} }} }}"
CANCEL_RUN = f"""mutation($id: ID!) {{
  cancelRun(id: $id) {{ run {{ {RUN_FIELDS} }} userErrors {{ field message code }} }} }}"""


def gql_run_as_rest(run: dict[str, Any]) -> dict[str, Any]:
    """The fields a GraphQL `Run` shares with REST's GET /api/v1/runs/<id>, as REST spells them."""
    return {
        "run_id": run["id"],
        "status": run["status"].lower(),
        "cancel_requested": run["cancelRequested"],
        "callback_url": run["callbackUrl"],
        "steps_total": run["stepsTotal"],
        "counts": run["counts"],
        "cost_estimate_micros": run["costEstimateMicros"],
        "cost_actual_micros": run["costActualMicros"],
        "reserved_micros": run["reservedMicros"],
        "steps": [
            {
                "key": step["key"],
                "job_id": step["job"]["id"],
                "workflow": step["job"]["workflow"],
                "status": step["job"]["status"].lower(),
                "depends_on": [
                    {"key": edge["key"], "on_failure": edge["onFailure"].lower()}
                    for edge in step["dependsOn"]
                ],
                "waiting_on": step["waitingOn"],
                "attempts": step["job"]["attempts"],
                "result": step["job"]["result"],
                "error": step["job"]["error"],
            }
            for step in run["steps"]
        ],
        "events": [snake_keys(event) for event in run["events"]],
    }


def rest_run(run: dict[str, Any]) -> dict[str, Any]:
    step_fields = (
        "key",
        "job_id",
        "workflow",
        "status",
        "depends_on",
        "waiting_on",
        "attempts",
        "result",
        "error",
    )
    return {
        "run_id": run["run_id"],
        "status": run["status"],
        "cancel_requested": run["cancel_requested"],
        "callback_url": run["callback_url"],
        "steps_total": run["steps_total"],
        "counts": run["counts"],
        "cost_estimate_micros": run["cost_estimate_micros"],
        "cost_actual_micros": run["cost_actual_micros"],
        "reserved_micros": run["reserved_micros"],
        "steps": [{field: step[field] for field in step_fields} for step in run["steps"]],
        "events": [
            {key: event[key] for key in ("type", "from_status", "to_status", "detail")}
            for event in run["events"]
        ],
    }


def test_a_run_submitted_on_either_surface_reads_and_cancels_the_same_on_both(admin: httpx.Client) -> None:
    steps = [
        {"key": "fetch", "workflow": "echo", "payload": {"url": "a"}, "priority": "high"},
        {"key": "parse", "workflow": "echo", "payload": {}, "depends_on": ["fetch"]},
        {
            "key": "notify",
            "workflow": "echo",
            "payload": {},
            "depends_on": [{"key": "parse", "on_failure": "run"}],
        },
    ]
    made = admin.post("/api/v1/runs", json={"steps": steps})
    assert made.status_code == 202, made.text
    gql_steps = [
        {**steps[0], "priority": "HIGH"},
        {"key": "parse", "workflow": "echo", "payload": {}, "dependsOn": [{"key": "fetch"}]},
        {
            "key": "notify",
            "workflow": "echo",
            "payload": {},
            "dependsOn": [{"key": "parse", "onFailure": "RUN"}],
        },
    ]
    submitted = gql_data(admin, SUBMIT_RUN, {"i": {"steps": gql_steps}})["submitRun"]
    assert submitted["userErrors"] == []
    by_gql = gql_run_as_rest(submitted["run"])
    by_rest = rest_run(admin.get(f"/api/v1/runs/{made.json()['run_id']}").json())

    # The same run but for its ids.
    def without_ids(run: dict[str, Any]) -> dict[str, Any]:
        return {**run, "run_id": None, "steps": [{**step, "job_id": None} for step in run["steps"]]}

    assert without_ids(by_gql) == without_ids(by_rest)
    assert [step["waiting_on"] for step in by_rest["steps"]] == [0, 1, 1]

    # Each reads the other's alike, and cancels it alike.
    for run_id in (by_rest["run_id"], by_gql["run_id"]):
        read = gql_run_as_rest(gql_data(admin, RUN, {"id": run_id})["run"])
        assert read == rest_run(admin.get(f"/api/v1/runs/{run_id}").json())
    rest_cancelled = rest_run(admin.post(f"/api/v1/runs/{by_gql['run_id']}/cancel").json())
    gql_cancelled = gql_data(admin, CANCEL_RUN, {"id": by_rest["run_id"]})["cancelRun"]
    assert gql_cancelled["userErrors"] == []
    assert without_ids(gql_run_as_rest(gql_cancelled["run"])) == without_ids(rest_cancelled)
    assert rest_cancelled["status"] == "cancelled"
    assert rest_cancelled["counts"]["cancelled"] == 3

    # The same refusal on both: a cycle, named.
    cycle = [
        {"key": "x", "workflow": "echo", "payload": {}, "depends_on": ["y"]},
        {"key": "y", "workflow": "echo", "payload": {}, "depends_on": ["x"]},
    ]
    refused = admin.post("/api/v1/runs", json={"steps": cycle}).json()
    gql_refused = gql_data(
        admin,
        SUBMIT_RUN,
        {
            "i": {
                "steps": [
                    {"key": "x", "workflow": "echo", "payload": {}, "dependsOn": [{"key": "y"}]},
                    {"key": "y", "workflow": "echo", "payload": {}, "dependsOn": [{"key": "x"}]},
                ]
            }
        },
    )["submitRun"]
    assert gql_refused["run"] is None
    assert [(e["field"], e["message"], e["code"]) for e in gql_refused["userErrors"]] == [
        (d["field"], d["message"], d["code"]) for d in refused["details"]
    ]
