"""Bad input on every GraphQL field: a typed error (`userErrors` or `extensions.code`), never a 500, and
nothing written to the database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DB_KINDS, LiveServer
from tests.support import UNKNOWN_ID, gql, gql_error_code, row_counts, shared_server

ERRORS = "userErrors { field message code }"
SUBMIT = f"""mutation($i: SubmitJobInput!, $k: String) {{
  submitJob(input: $i, idempotencyKey: $k) {{ job {{ id }} {ERRORS} }} }}"""
UPSERT = f"mutation($i: UpsertUserInput!) {{ upsertUser(input: $i) {{ user {{ id }} {ERRORS} }} }}"
UPDATE = f"""mutation($id: ID!, $i: UpdateUserInput!) {{
  updateUser(id: $id, input: $i) {{ user {{ id }} {ERRORS} }} }}"""
COMPLETE = f"mutation($id: ID!, $r: JSON) {{ completeJob(id: $id, result: $r) {{ job {{ id }} {ERRORS} }} }}"
JOB = "query($id: ID!) { job(id: $id) { id } }"
USER = "query($id: ID!) { user(id: $id) { id } }"
BY_EMAIL = "query($e: String!) { userByEmail(email: $e) { id } }"
JOBS = """query($f: JobFilter, $n: Int, $a: String) {
  jobs(filter: $f, first: $n, after: $a) { edges { cursor } } }"""

SET_BUDGET = f"""mutation($i: SetBudgetInput!) {{
  setBudget(input: $i) {{ budget {{ id }} {ERRORS} }} }}"""
DELETE_BUDGET = f"""mutation($s: BudgetSubject!, $id: ID!) {{
  deleteBudget(subject: $s, subjectId: $id) {{ budget {{ id }} {ERRORS} }} }}"""
USAGE = """query($f: Date, $t: Date, $g: UsageGroup, $k: ID) {
  usage(from: $f, to: $t, groupBy: $g, keyId: $k) { rows { jobs } } }"""
BUDGET_IN = {"subject": "USER", "subjectId": "{user}", "period": "DAY", "limitMicros": 1000}


def budget_in(**changes: Any) -> dict[str, Any]:
    return {"i": {**BUDGET_IN, **changes}}


JOB_IN = {"workflow": "echo", "payload": {}}
USER_IN = {"email": "g@example.com", "name": "G"}


def job_in(**changes: Any) -> dict[str, Any]:
    return {"i": {**JOB_IN, **changes}}


def user_in(**changes: Any) -> dict[str, Any]:
    return {"i": {**USER_IN, **changes}}


# (document, variables, expected): `("user", field, code)` is one entry in the mutation's userErrors;
# `("error", code)` is a GraphQL error with that `extensions.code` and no data for the field.
# `{job}` and `{user}` stand for the ids of a job and a user that exist.
CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    # --- submitJob
    (SUBMIT, job_in(payload="x"), ("user", "payload", "type")),
    (SUBMIT, job_in(payload=[1]), ("user", "payload", "type")),
    (SUBMIT, job_in(payload=None), ("error", "BAD_USER_INPUT")),
    (SUBMIT, job_in(payload={"a": "\u0000"}), ("user", "payload.a", "invalid")),
    (SUBMIT, job_in(payload={"a": "\ud800"}), ("user", "payload.a", "invalid")),
    (SUBMIT, {**job_in(), "k": "k" * 300}, ("user", "idempotencyKey", "invalid")),
    (SUBMIT, {**job_in(), "k": ""}, ("user", "idempotencyKey", "invalid")),
    (SUBMIT, job_in(workflow=""), ("user", "workflow", "too_short")),
    (SUBMIT, job_in(workflow="two words"), ("user", "workflow", "pattern")),
    (SUBMIT, job_in(workflow=5), ("error", "BAD_USER_INPUT")),
    (SUBMIT, job_in(priority="URGENT"), ("error", "BAD_USER_INPUT")),
    (SUBMIT, job_in(priority="high"), ("error", "BAD_USER_INPUT")),
    (SUBMIT, job_in(maxAttempts=0), ("user", "maxAttempts", "out_of_range")),
    (SUBMIT, job_in(maxAttempts=26), ("user", "maxAttempts", "out_of_range")),
    (SUBMIT, job_in(maxAttempts=1.5), ("error", "BAD_USER_INPUT")),
    (SUBMIT, job_in(maxAttempts="3"), ("error", "BAD_USER_INPUT")),
    (SUBMIT, job_in(maxAttempts=2**40), ("error", "BAD_USER_INPUT")),
    (SUBMIT, job_in(timeoutS=0), ("user", "timeoutS", "out_of_range")),
    (SUBMIT, job_in(callbackUrl="ftp://example.com/x"), ("user", "callbackUrl", "format")),
    (SUBMIT, job_in(callbackUrl="not a url"), ("user", "callbackUrl", "format")),
    (SUBMIT, job_in(userId="nope"), ("user", "userId", "format")),
    (SUBMIT, job_in(userId=UNKNOWN_ID), ("user", "userId", "not_found")),
    (SUBMIT, job_in(runAt="yesterday"), ("error", "BAD_USER_INPUT")),
    (SUBMIT, job_in(runAt="9999-12-31T23:59:59-01:00"), ("user", "runAt", "invalid")),
    (SUBMIT, job_in(bogus=1), ("error", "BAD_USER_INPUT")),
    (SUBMIT, {"i": {"payload": {}}}, ("error", "BAD_USER_INPUT")),
    (SUBMIT, {}, ("error", "BAD_USER_INPUT")),
    # --- upsertUser
    (UPSERT, user_in(email="not-an-email"), ("user", "email", "invalid")),
    (UPSERT, user_in(email="two words@example.com"), ("user", "email", "invalid")),
    (UPSERT, user_in(email="u\u0000@example.com"), ("user", "email", "invalid")),
    (UPSERT, user_in(email=5), ("error", "BAD_USER_INPUT")),
    (UPSERT, user_in(name=""), ("user", "name", "too_short")),
    (UPSERT, user_in(name="ü" * 201), ("user", "name", "too_long")),
    (UPSERT, user_in(locale="english please"), ("user", "locale", "pattern")),
    (UPSERT, user_in(locale=None), ("user", "locale", "type")),
    (UPSERT, user_in(currency="JPY"), ("error", "BAD_USER_INPUT")),
    (UPSERT, user_in(currency="usd"), ("error", "BAD_USER_INPUT")),
    (UPSERT, user_in(meta=["a"]), ("user", "meta", "type")),
    (UPSERT, user_in(meta="x"), ("user", "meta", "type")),
    (UPSERT, user_in(meta={"big": "x" * 20_000}), ("user", "meta", "invalid")),
    (UPSERT, user_in(role="admin"), ("error", "BAD_USER_INPUT")),
    # --- updateUser
    (UPDATE, {"id": "{user}", "i": {}}, ("user", None, "BAD_USER_INPUT")),
    (UPDATE, {"id": "{user}", "i": {"name": ""}}, ("user", "name", "too_short")),
    (UPDATE, {"id": "{user}", "i": {"name": None}}, ("user", "name", "type")),
    (UPDATE, {"id": "{user}", "i": {"locale": "x y"}}, ("user", "locale", "pattern")),
    (UPDATE, {"id": "{user}", "i": {"currency": "JPY"}}, ("error", "BAD_USER_INPUT")),
    (UPDATE, {"id": "{user}", "i": {"meta": 5}}, ("user", "meta", "type")),
    (UPDATE, {"id": "{user}", "i": {"email": "x@example.com"}}, ("error", "BAD_USER_INPUT")),
    (UPDATE, {"id": "not-a-uuid", "i": {"name": "x"}}, ("user", None, "NOT_FOUND")),
    (UPDATE, {"id": UNKNOWN_ID, "i": {"name": "x"}}, ("user", None, "NOT_FOUND")),
    # --- completeJob
    (COMPLETE, {"id": "not-a-uuid"}, ("user", None, "NOT_FOUND")),
    (COMPLETE, {"id": UNKNOWN_ID, "r": {}}, ("user", None, "NOT_FOUND")),
    (COMPLETE, {"id": "{job}", "r": [1]}, ("user", "result", "type")),
    (COMPLETE, {"id": "{job}", "r": "done"}, ("user", "result", "type")),
    (COMPLETE, {"id": "{job}", "r": {"a": "\u0000"}}, ("user", "result.a", "invalid")),
    # --- setBudget, deleteBudget
    (SUBMIT, job_in(budgetPolicy="WAIT"), ("error", "BAD_USER_INPUT")),
    (SUBMIT, job_in(budgetPolicy="defer"), ("error", "BAD_USER_INPUT")),
    (SET_BUDGET, budget_in(limitMicros=-1), ("user", "limitMicros", "out_of_range")),
    (SET_BUDGET, budget_in(limitMicros=10**14), ("user", "limitMicros", "out_of_range")),
    (SET_BUDGET, budget_in(limitMicros=1.5), ("error", "BAD_USER_INPUT")),
    (SET_BUDGET, budget_in(limitMicros=1000.0), ("error", "BAD_USER_INPUT")),
    (SET_BUDGET, budget_in(limitMicros="1000"), ("error", "BAD_USER_INPUT")),
    (SET_BUDGET, budget_in(limitMicros=True), ("error", "BAD_USER_INPUT")),
    (SET_BUDGET, budget_in(limitMicros=2**60), ("error", "BAD_USER_INPUT")),
    (SET_BUDGET, budget_in(limitMicros=None), ("error", "BAD_USER_INPUT")),
    (SET_BUDGET, budget_in(softLimitMicros=1001), ("user", None, "invalid")),
    (SET_BUDGET, budget_in(maxJobMicros=-5), ("user", "maxJobMicros", "out_of_range")),
    (SET_BUDGET, budget_in(workflowMaxJobMicros=[1]), ("user", "workflowMaxJobMicros", "type")),
    (
        SET_BUDGET,
        budget_in(workflowMaxJobMicros={"echo": -1}),
        ("user", "workflowMaxJobMicros.echo", "out_of_range"),
    ),
    (SET_BUDGET, budget_in(period="WEEK"), ("error", "BAD_USER_INPUT")),
    (SET_BUDGET, budget_in(period="day"), ("error", "BAD_USER_INPUT")),
    (SET_BUDGET, budget_in(subject="TEAM"), ("error", "BAD_USER_INPUT")),
    (SET_BUDGET, budget_in(spentMicros=0), ("error", "BAD_USER_INPUT")),
    (SET_BUDGET, budget_in(subjectId="not-a-uuid"), ("user", None, "NOT_FOUND")),
    (SET_BUDGET, budget_in(subjectId=UNKNOWN_ID), ("user", None, "NOT_FOUND")),
    (SET_BUDGET, budget_in(subject="KEY"), ("user", None, "NOT_FOUND")),  # a user's id names no key
    (DELETE_BUDGET, {"s": "USER", "id": "{user}"}, ("user", None, "NOT_FOUND")),  # it has none
    (DELETE_BUDGET, {"s": "KEY", "id": "nope"}, ("user", None, "NOT_FOUND")),
    # --- queries
    (USAGE, {"g": "WEEK"}, ("error", "BAD_USER_INPUT")),
    (USAGE, {"f": "2026-02-30"}, ("error", "BAD_USER_INPUT")),
    (USAGE, {"f": "2026-03-02", "t": "2026-03-01"}, ("error", "BAD_USER_INPUT")),
    (USAGE, {"f": "2024-01-01", "t": "2026-01-01"}, ("error", "BAD_USER_INPUT")),
    (USAGE, {"f": "2000-01-01"}, ("error", "BAD_USER_INPUT")),
    (USAGE, {"t": "0"}, ("error", "BAD_USER_INPUT")),
    (USAGE, {"k": "nope"}, ("error", "BAD_USER_INPUT")),
    (JOB, {"id": "not-a-uuid"}, ("error", "NOT_FOUND")),
    (JOB, {"id": UNKNOWN_ID}, ("error", "NOT_FOUND")),
    (JOB, {"id": 5.5}, ("error", "BAD_USER_INPUT")),
    (USER, {"id": "not-a-uuid"}, ("error", "NOT_FOUND")),
    (USER, {"id": UNKNOWN_ID}, ("error", "NOT_FOUND")),
    (BY_EMAIL, {"e": ""}, ("error", "BAD_USER_INPUT")),
    (BY_EMAIL, {"e": "nobody@example.com"}, ("error", "NOT_FOUND")),
    (BY_EMAIL, {"e": "not-an-email"}, ("error", "NOT_FOUND")),
    (JOBS, {"n": 0}, ("error", "BAD_USER_INPUT")),
    (JOBS, {"n": 101}, ("error", "BAD_USER_INPUT")),
    (JOBS, {"n": -1}, ("error", "BAD_USER_INPUT")),
    (JOBS, {"n": "ten"}, ("error", "BAD_USER_INPUT")),
    (JOBS, {"a": "zzz"}, ("error", "BAD_USER_INPUT")),
    (JOBS, {"a": "c2VxOjk5OTk5OTk5OTk5OTk5OTk5OTk"}, ("error", "BAD_USER_INPUT")),
    (JOBS, {"f": {"status": "weird"}}, ("error", "BAD_USER_INPUT")),
    (JOBS, {"f": {"workflow": "two words"}}, ("error", "BAD_USER_INPUT")),
    (JOBS, {"f": {"sort": "asc"}}, ("error", "BAD_USER_INPUT")),
]


def case_id(case: tuple[str, dict[str, Any], tuple[str, ...]]) -> str:
    document, variables, expected = case
    name = document.split("{", 2)[1].split("(")[0].strip()
    return f"{name} {str(variables)[:50]} -> {expected[-1]} {expected[1] if len(expected) == 3 else ''}"


def fill(value: Any, existing: dict[str, str]) -> Any:
    if isinstance(value, str) and value in ("{job}", "{user}"):
        return existing[value[1:-1]]
    if isinstance(value, dict):
        return {key: fill(item, existing) for key, item in value.items()}
    return value


@pytest.fixture(scope="module", params=DB_KINDS)
def live(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir: Path = tmp_path_factory.mktemp("graphql-bad-input")
    with shared_server(request, str(request.param), workdir) as server:
        yield server


@pytest.fixture(scope="module")
def existing(live: LiveServer) -> dict[str, str]:
    with live.client() as http:
        job_id = http.post("/api/v1/intake", json=JOB_IN).json()["job_id"]
        user_id = http.post("/api/v1/users/upsert", json=USER_IN).json()["user"]["id"]
    return {"job": job_id, "user": user_id}


@pytest.mark.parametrize("case", CASES, ids=[case_id(case) for case in CASES])
def test_bad_input_gets_a_typed_error_and_writes_nothing(
    live: LiveServer, existing: dict[str, str], case: tuple[str, dict[str, Any], tuple[str, ...]]
) -> None:
    document, variables, expected = case
    before = row_counts(live.settings.db_url)
    with live.client() as http:
        body = gql(http, document, fill(variables, existing))
        assert "Traceback" not in str(body)
        if expected[0] == "user":
            _kind, field, code = expected
            [payload] = body["data"].values()
            assert not body.get("errors"), body
            assert payload["userErrors"], body
            assert (field, code) in [(e["field"], e["code"]) for e in payload["userErrors"]], body
            assert all(e["message"] for e in payload["userErrors"])
            assert next(value for key, value in payload.items() if key != "userErrors") is None
        else:
            assert gql_error_code(body) == expected[1]
            assert not any((body.get("data") or {}).values()), body
        assert http.get(f"/api/v1/status/{existing['job']}").json()["status"] == "queued"
        assert http.get(f"/api/v1/users/{existing['user']}").json()["name"] == "G"
    assert row_counts(live.settings.db_url) == before


def test_micros_refusals_say_what_a_micros_is(live: LiveServer, existing: dict[str, str]) -> None:
    with live.client() as http:
        for value, kind in ((1.5, "a number with a fraction"), ("7", "a string"), (True, "a boolean")):
            body = gql(http, SET_BUDGET, fill(budget_in(limitMicros=value), existing))
            [error] = body["errors"]
            assert "Micros must be a whole number of USD micro-dollars as a JSON integer" in error["message"]
            assert kind in error["message"]
        assert http.get("/api/v1/budgets").json() == {"budgets": []}


def test_error_messages_name_the_problem(live: LiveServer) -> None:
    with live.client() as http:
        body = gql(http, SUBMIT, job_in(maxAttempts=0))
    [error] = body["data"]["submitJob"]["userErrors"]
    assert "greater than or equal to 1" in error["message"]
