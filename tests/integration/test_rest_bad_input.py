"""Bad input on every REST route and field: a 4xx with the contract's error body, never a 500, and
nothing written to the database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DB_KINDS, LiveServer
from tests.support import assert_error, row_counts, shared_server

JSON = {"content-type": "application/json"}
JOB = {"workflow": "echo", "payload": {}}
USER = {"email": "u@example.com", "name": "U"}
DEEP_ARRAY = b'{"workflow":"echo","payload":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
NESTED_70 = {"workflow": "echo", "payload": json.loads('{"a":' * 70 + "1" + "}" * 70)}
OVER_1_MIB = {"workflow": "echo", "payload": {"text": "é" * 600_000}}  # 1.2 MB of UTF-8


def raw(body: bytes, content_type: str | None = "application/json") -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": content_type} if content_type else {}}


def job(**changes: Any) -> dict[str, Any]:
    return {"json": {**JOB, **changes}}


def user(**changes: Any) -> dict[str, Any]:
    return {"json": {**USER, **changes}}


INTAKE = "/api/v1/intake"
UPSERT = "/api/v1/users/upsert"
USER_BUDGET = "/api/v1/budgets/users/{user}"
BUDGET = {"period": "day", "limit_micros": 1_000}


def budget(**changes: Any) -> dict[str, Any]:
    return {"json": {**BUDGET, **changes}}


CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}
Case = tuple[str, str, dict[str, Any], int, str | None]

# (method, path, request kwargs, status, the field `details` must name)
# `{job}` and `{user}` stand for the ids of a job and a user that exist.
CASES: list[Case] = [
    # --- the body itself, on each route that takes one
    ("POST", INTAKE, raw(b"{bad"), 400, None),
    ("POST", INTAKE, raw(b""), 400, None),
    ("POST", INTAKE, raw(json.dumps(JOB).encode(), "text/plain"), 415, None),
    ("POST", INTAKE, raw(json.dumps(JOB).encode(), None), 415, None),
    ("POST", INTAKE, raw(b"workflow=echo", "application/x-www-form-urlencoded"), 415, None),
    ("POST", INTAKE, {"json": [JOB]}, 400, None),
    ("POST", INTAKE, {"json": "echo"}, 400, None),
    ("POST", INTAKE, raw(b"null"), 400, None),
    ("POST", INTAKE, raw(b'{"workflow":"echo","payload":{"a":NaN}}'), 400, None),
    ("POST", INTAKE, raw(b'{"workflow":"echo","payload":{"a":-Infinity}}'), 400, None),
    ("POST", INTAKE, raw(b'{"workflow":"echo","payload":{"a":1e999}}'), 400, "payload.a"),
    ("POST", INTAKE, raw(b'{"workflow":"echo","payload":{"a":"\\u0000"}}'), 400, "payload.a"),
    ("POST", INTAKE, raw(b'{"workflow":"echo","payload":{"\\u0000":1}}'), 400, "payload"),
    ("POST", INTAKE, raw(b'{"workflow":"echo","payload":{"a":"\\ud800"}}'), 400, "payload.a"),
    ("POST", INTAKE, raw(b'{"workflow":"echo","payload":{"a":"\\udc00x"}}'), 400, "payload.a"),
    ("POST", INTAKE, raw(b'{"workflow":"echo","payload":{"a":"\xff\xfe"}}'), 400, None),
    ("POST", INTAKE, raw(DEEP_ARRAY), 400, None),
    ("POST", INTAKE, raw(b'{"workflow":"echo","payload":{"n":' + b"9" * 5000 + b"}}"), 400, None),
    ("POST", INTAKE, {"json": NESTED_70}, 400, None),
    ("POST", INTAKE, {"json": OVER_1_MIB}, 413, None),
    # --- each intake field
    ("POST", INTAKE, {"json": {"payload": {}}}, 400, "workflow"),
    ("POST", INTAKE, job(workflow=5), 400, "workflow"),
    ("POST", INTAKE, job(workflow=""), 400, "workflow"),
    ("POST", INTAKE, job(workflow="two words"), 400, "workflow"),
    ("POST", INTAKE, job(workflow="w" * 129), 400, "workflow"),
    ("POST", INTAKE, {"json": {"workflow": "echo"}}, 400, "payload"),
    ("POST", INTAKE, job(payload="x"), 400, "payload"),
    ("POST", INTAKE, job(payload=[1]), 400, "payload"),
    ("POST", INTAKE, job(payload=None), 400, "payload"),
    ("POST", INTAKE, job(priority=5), 400, "priority"),
    ("POST", INTAKE, job(priority="urgent"), 400, "priority"),
    ("POST", INTAKE, job(callback_url="ftp://example.com/x"), 400, "callback_url"),
    ("POST", INTAKE, job(callback_url="not a url"), 400, "callback_url"),
    ("POST", INTAKE, job(callback_url=5), 400, "callback_url"),
    ("POST", INTAKE, job(callback_url="https://example.com/" + "a" * 2100), 400, "callback_url"),
    ("POST", INTAKE, job(user_id="nope"), 400, "user_id"),
    ("POST", INTAKE, job(user_id="6f1c1a2e-0000-4000-8000-000000000000"), 400, "user_id"),
    ("POST", INTAKE, job(run_at="yesterday"), 400, "run_at"),
    ("POST", INTAKE, job(run_at=[2030]), 400, "run_at"),
    ("POST", INTAKE, job(run_at="9999-12-31T23:59:59-01:00"), 400, "run_at"),
    ("POST", INTAKE, job(max_attempts="3"), 400, "max_attempts"),
    ("POST", INTAKE, job(max_attempts=0), 400, "max_attempts"),
    ("POST", INTAKE, job(max_attempts=26), 400, "max_attempts"),
    ("POST", INTAKE, job(max_attempts=1.5), 400, "max_attempts"),
    ("POST", INTAKE, job(max_attempts=True), 400, "max_attempts"),
    ("POST", INTAKE, job(timeout_s=0), 400, "timeout_s"),
    ("POST", INTAKE, job(timeout_s="60"), 400, "timeout_s"),
    ("POST", INTAKE, job(bogus=1), 400, "bogus"),
    ("POST", INTAKE, {"json": JOB, "headers": {"Idempotency-Key": "k" * 256}}, 400, "Idempotency-Key"),
    (
        "POST",
        INTAKE,
        {"json": JOB, "headers": {"Idempotency-Key": "caf\xe9".encode("latin-1")}},
        400,
        "Idempotency-Key",
    ),
    # --- ids in paths
    ("GET", "/api/v1/status/not-a-uuid", {}, 404, None),
    ("GET", "/api/v1/status/" + "9" * 5000, {}, 404, None),
    ("GET", "/api/v1/status/6f1c1a2e-0000-4000-8000-000000000000", {}, 404, None),
    ("GET", "/api/v1/jobs/not-a-uuid", {}, 404, None),
    ("GET", "/api/v1/users/not-a-uuid", {}, 404, None),
    ("GET", "/api/v1/users/%00", {}, 404, None),
    ("PATCH", "/api/v1/users/not-a-uuid", {"json": {"name": "x"}}, 404, None),
    ("POST", "/api/v1/_dev/complete/not-a-uuid", {"json": {}}, 404, None),
    # --- dev completion body
    ("POST", "/api/v1/_dev/complete/{job}", {"json": {"result": 5}}, 400, "result"),
    ("POST", "/api/v1/_dev/complete/{job}", {"json": {"result": {}, "extra": 1}}, 400, "extra"),
    ("POST", "/api/v1/_dev/complete/{job}", {"json": [1]}, 400, None),
    ("POST", "/api/v1/_dev/complete/{job}", raw(b"{bad"), 400, None),
    ("POST", "/api/v1/_dev/complete/{job}", raw(b'{"result":{}}', "text/plain"), 415, None),
    ("POST", "/api/v1/_dev/complete/{job}", raw(b'{"result":{"a":"\\u0000"}}'), 400, "result.a"),
    # --- user upsert
    ("POST", UPSERT, raw(b"{bad"), 400, None),
    ("POST", UPSERT, raw(b'{"email":"u@example.com","name":"U"}', "text/plain"), 415, None),
    ("POST", UPSERT, {"json": [USER]}, 400, None),
    ("POST", UPSERT, {"json": {"name": "U"}}, 400, "email"),
    ("POST", UPSERT, user(email="not-an-email"), 400, "email"),
    ("POST", UPSERT, user(email="@example.com"), 400, "email"),
    ("POST", UPSERT, user(email="two words@example.com"), 400, "email"),
    ("POST", UPSERT, user(email="u@example..com"), 400, "email"),
    ("POST", UPSERT, user(email=5), 400, "email"),
    ("POST", UPSERT, user(email="u\u0000@example.com"), 400, "email"),
    ("POST", UPSERT, user(email="u" * 320 + "@example.com"), 400, "email"),
    ("POST", UPSERT, {"json": {"email": "u@example.com"}}, 400, "name"),
    ("POST", UPSERT, user(name=""), 400, "name"),
    ("POST", UPSERT, user(name=["U"]), 400, "name"),
    ("POST", UPSERT, user(name="ü" * 201), 400, "name"),
    ("POST", UPSERT, user(locale="english please"), 400, "locale"),
    ("POST", UPSERT, user(locale=44), 400, "locale"),
    ("POST", UPSERT, user(locale="x" * 40), 400, "locale"),
    ("POST", UPSERT, user(currency="JPY"), 400, "currency"),
    ("POST", UPSERT, user(currency=826), 400, "currency"),
    ("POST", UPSERT, user(meta=["a"]), 400, "meta"),
    ("POST", UPSERT, user(meta={"big": "x" * 20_000}), 400, "meta"),
    ("POST", UPSERT, raw(b'{"email":"u@example.com","name":"U","meta":{"a":NaN}}'), 400, None),
    ("POST", UPSERT, user(role="admin"), 400, "role"),
    # --- user patch body (field rules are in test_users.py)
    ("PATCH", "/api/v1/users/{user}", raw(b"{bad"), 400, None),
    ("PATCH", "/api/v1/users/{user}", raw(b'{"name":"x"}', "text/plain"), 415, None),
    ("PATCH", "/api/v1/users/{user}", {"json": ["name"]}, 400, None),
    ("PATCH", "/api/v1/users/{user}", {"json": {}}, 400, None),
    ("PATCH", "/api/v1/users/{user}", {"json": {"email": "other@example.com"}}, 400, "email"),
    # --- query strings
    ("GET", "/api/v1/users", {}, 400, "email"),
    ("GET", "/api/v1/users?email=", {}, 400, "email"),
    ("GET", "/api/v1/users?email=u@example.com&role=admin", {}, 400, "role"),
    ("GET", "/api/v1/users?email=not-an-email", {}, 404, None),
    ("GET", "/api/v1/jobs?limit=0", {}, 400, "limit"),
    ("GET", "/api/v1/jobs?limit=101", {}, 400, "limit"),
    ("GET", "/api/v1/jobs?limit=-1", {}, 400, "limit"),
    ("GET", "/api/v1/jobs?limit=abc", {}, 400, "limit"),
    ("GET", "/api/v1/jobs?limit=2.5", {}, 400, "limit"),
    ("GET", "/api/v1/jobs?limit=", {}, 400, "limit"),
    ("GET", "/api/v1/jobs?cursor=zzz", {}, 400, "cursor"),
    ("GET", "/api/v1/jobs?cursor=c2VxOmFiYw", {}, 400, "cursor"),
    ("GET", "/api/v1/jobs?cursor=%FF%FE", {}, 400, "cursor"),
    # "seq:9999999999999999999": digits of the right shape, past the largest BIGINT
    ("GET", "/api/v1/jobs?cursor=c2VxOjk5OTk5OTk5OTk5OTk5OTk5OTk", {}, 400, "cursor"),
    ("GET", "/api/v1/jobs?status=weird", {}, 400, "status"),
    ("GET", "/api/v1/jobs?workflow=two%20words", {}, 400, "workflow"),
    ("GET", "/api/v1/jobs?sort=asc", {}, 400, "sort"),
    ("GET", "/api/v1/overview?window_s=59", {}, 400, "window_s"),
    ("GET", "/api/v1/overview?window_s=604801", {}, 400, "window_s"),
    ("GET", "/api/v1/overview?window_s=1h", {}, 400, "window_s"),
    ("GET", "/api/v1/overview?buckets=0", {}, 400, "buckets"),
    ("GET", "/api/v1/overview?buckets=121", {}, 400, "buckets"),
    ("GET", "/api/v1/overview?buckets=2.5", {}, 400, "buckets"),
    ("GET", "/api/v1/overview?since=1", {}, 400, "since"),
    ("GET", "/api/v1/jobs?key_id=someone", {}, 400, "key_id"),
    ("GET", "/api/v1/jobs?user_id=nope", {}, 400, "user_id"),
    ("GET", "/api/v1/jobs?created_after=yesterday", {}, 400, "created_after"),
    ("GET", "/api/v1/jobs?created_before=1764547200", {}, 400, "created_before"),
    ("GET", "/api/v1/jobs?text=", {}, 400, "text"),
    ("GET", "/api/v1/jobs?text=" + "x" * 201, {}, 400, "text"),
    # --- budgets
    ("PUT", USER_BUDGET, raw(b"{bad"), 400, None),
    ("PUT", USER_BUDGET, raw(b'{"period":"day","limit_micros":1}', "text/plain"), 415, None),
    ("PUT", USER_BUDGET, {"json": [BUDGET]}, 400, None),
    ("PUT", USER_BUDGET, {"json": {"limit_micros": 1}}, 400, "period"),
    ("PUT", USER_BUDGET, {"json": {"period": "day"}}, 400, "limit_micros"),
    ("PUT", USER_BUDGET, budget(period="week"), 400, "period"),
    ("PUT", USER_BUDGET, budget(period=1), 400, "period"),
    ("PUT", USER_BUDGET, budget(limit_micros=-1), 400, "limit_micros"),
    ("PUT", USER_BUDGET, budget(limit_micros=1.5), 400, "limit_micros"),
    ("PUT", USER_BUDGET, budget(limit_micros="1000"), 400, "limit_micros"),
    ("PUT", USER_BUDGET, budget(limit_micros=True), 400, "limit_micros"),
    ("PUT", USER_BUDGET, budget(limit_micros=None), 400, "limit_micros"),
    ("PUT", USER_BUDGET, budget(limit_micros=10**16), 400, "limit_micros"),
    ("PUT", USER_BUDGET, raw(b'{"period":"day","limit_micros":' + b"9" * 5000 + b"}"), 400, None),
    ("PUT", USER_BUDGET, raw(b'{"period":"day","limit_micros":1e999}'), 400, None),
    ("PUT", USER_BUDGET, budget(soft_limit_micros=1_001), 400, None),
    ("PUT", USER_BUDGET, budget(soft_limit_micros=-1), 400, "soft_limit_micros"),
    ("PUT", USER_BUDGET, budget(max_job_micros=0.5), 400, "max_job_micros"),
    ("PUT", USER_BUDGET, budget(workflow_max_job_micros=[1]), 400, "workflow_max_job_micros"),
    ("PUT", USER_BUDGET, budget(workflow_max_job_micros={"echo": -1}), 400, "workflow_max_job_micros.echo"),
    ("PUT", USER_BUDGET, budget(workflow_max_job_micros={"two words": 1}), 400, None),
    ("PUT", USER_BUDGET, budget(spent_micros=0), 400, "spent_micros"),
    ("PUT", USER_BUDGET, {"json": {**BUDGET, "pad": "x" * 1_200_000}}, 413, None),
    ("PUT", "/api/v1/budgets/users/not-a-uuid", budget(), 404, None),
    ("PUT", "/api/v1/budgets/users/6f1c1a2e-0000-4000-8000-000000000000", budget(), 404, None),
    ("PUT", "/api/v1/budgets/keys/6f1c1a2e-0000-4000-8000-000000000000", budget(), 404, None),
    ("PUT", "/api/v1/budgets/keys/{user}", budget(), 404, None),  # a user's id names no key
    ("DELETE", USER_BUDGET, {}, 404, None),  # it has none
    ("DELETE", "/api/v1/budgets/keys/not-a-uuid", {}, 404, None),
    ("PUT", "/api/v1/budgets/teams/{user}", budget(), 404, None),
    ("POST", "/api/v1/budgets", {"json": BUDGET}, 405, None),
    ("PATCH", USER_BUDGET, budget(), 405, None),
    # --- usage
    ("GET", "/api/v1/usage?group_by=week", {}, 400, "group_by"),
    ("GET", "/api/v1/usage?from=yesterday", {}, 400, "from"),
    ("GET", "/api/v1/usage?from=2026-02-30", {}, 400, "from"),
    ("GET", "/api/v1/usage?to=01/02/2026", {}, 400, "to"),
    ("GET", "/api/v1/usage?to=0", {}, 400, "to"),
    ("GET", "/api/v1/usage?from=1767225600", {}, 400, "from"),
    ("GET", "/api/v1/usage?from=20260301", {}, 400, "from"),
    ("GET", "/api/v1/usage?from=2026-W09-1", {}, 400, "from"),
    ("GET", "/api/v1/usage?from=2026-03-02&to=2026-03-01", {}, 400, "from"),
    ("GET", "/api/v1/usage?from=2024-01-01&to=2026-01-01", {}, 400, "from"),
    ("GET", "/api/v1/usage?from=2000-01-01", {}, 400, "from"),
    ("GET", "/api/v1/usage?from=2999-01-01", {}, 400, "from"),
    ("GET", "/api/v1/usage?key_id=nope", {}, 400, "key_id"),
    ("GET", "/api/v1/usage?user_id=1", {}, 400, "user_id"),
    ("GET", "/api/v1/usage?sort=asc", {}, 400, "sort"),
    ("POST", "/api/v1/usage", {"json": {}}, 405, None),
    # --- routes and methods that do not exist
    ("GET", "/api/v1/nothing-here", {}, 404, None),
    ("DELETE", "/api/v1/intake", {}, 405, None),
    ("PUT", "/api/v1/users/{user}", {"json": USER}, 405, None),
    ("POST", "/api/v1/status/{job}", {"json": {}}, 405, None),
]


def case_id(case: Case) -> str:
    method, path, kwargs, status, field = case
    body = kwargs.get("json", kwargs.get("content", b""))
    summary = json.dumps(body, default=str)[:40] if not isinstance(body, bytes) else repr(body[:30])
    return f"{method} {path[:45]} {summary} -> {status} {field or ''}"


@pytest.fixture(scope="module", params=DB_KINDS)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir: Path = tmp_path_factory.mktemp("bad-input")
    with shared_server(request, str(request.param), workdir) as server:
        yield server


@pytest.fixture(scope="module")
def existing(live: LiveServer) -> dict[str, str]:
    with live.client() as http:
        job_id = http.post("/api/v1/intake", json=JOB).json()["job_id"]
        user_id = http.post("/api/v1/users/upsert", json=USER).json()["user"]["id"]
    return {"job": job_id, "user": user_id}


@pytest.mark.parametrize("case", CASES, ids=[case_id(case) for case in CASES])
def test_bad_input_gets_the_contract_error_and_writes_nothing(
    live: LiveServer, existing: dict[str, str], case: Case
) -> None:
    method, path, kwargs, status, field = case
    before = row_counts(live.settings.db_url)
    with live.client() as http:
        response = http.request(method, path.format(**existing), **kwargs)
        assert_error(response, status, CODES[status], field=field)
        # The job and the user are as they were.
        assert http.get(f"/api/v1/status/{existing['job']}").json()["status"] == "queued"
        assert http.get(f"/api/v1/users/{existing['user']}").json()["name"] == "U"
    assert row_counts(live.settings.db_url) == before


def test_refused_budgets_are_not_set(live: LiveServer, existing: dict[str, str]) -> None:
    with live.client() as http:
        for case in CASES:
            if case[1].startswith("/api/v1/budgets/"):
                http.request(case[0], case[1].format(**existing), **case[2])
        assert http.get("/api/v1/budgets").json() == {"budgets": []}


def test_chunked_body_over_the_limit_is_413(live: LiveServer) -> None:
    """No Content-Length: the limit is enforced while the body streams in."""
    chunk = b'{"workflow":"echo","payload":{"t":"' + b"x" * 1024

    def body() -> Iterator[bytes]:
        yield chunk
        for _ in range(2048):
            yield b"x" * 1024
        yield b'"}}'

    before = row_counts(live.settings.db_url)
    with live.client() as http:
        response = http.post("/api/v1/intake", content=body(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert_error(response, 413, CODES[413])
    assert row_counts(live.settings.db_url) == before


def test_a_body_just_under_the_limit_is_accepted(live: LiveServer) -> None:
    """The limit refuses what is over it, not large bodies in general."""
    text = "é" * 400_000  # 800 kB of UTF-8
    with live.client() as http:
        response = http.post("/api/v1/intake", json={"workflow": "echo", "payload": {"text": text}})
        assert response.status_code == 202, response.text[:300]
        job_id = response.json()["job_id"]
        assert http.get(f"/api/v1/jobs/{job_id}").json()["payload"]["text"] == text
