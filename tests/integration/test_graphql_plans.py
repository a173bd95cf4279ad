"""Compiled plans answer exactly what the general path answers (levqor.schema.plans, issue 2).

Every document the test suite and the bench send, and the error cases, goes through both paths of a
real server, one after the other; the two responses must match in status, headers and body bytes.
Values that differ between any two requests (new ids, timestamps) are replaced by placeholders in
the bodies of both before comparing; everything else, key order and separators included, must be
the same bytes.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from levqor.http.graphql import LevqorGraphQL
from levqor.schema import schema
from levqor.schema.plans import operation_plan
from tests.conftest import LiveServer
from tests.ops_support import table_out_of_service
from tests.support import UNKNOWN_ID

JOB_FIELDS = (
    "id workflow status priority payload result error callbackUrl userId createdAt startedAt finishedAt "
    "runAt attempts maxAttempts timeoutS costEstimate costActual cancelRequested __typename"
)
USER_FIELDS = "id email name locale currency meta createdAt updatedAt"
ERRORS = "userErrors { field message code }"
BENCH_SUBMIT = (
    "mutation Submit($input: SubmitJobInput!) { submitJob(input: $input) "
    "{ job { id status } userErrors { field message code } } }"
)
SUBMIT_FULL = (
    "mutation($i: SubmitJobInput!, $k: String) { submitJob(input: $i, idempotencyKey: $k) "
    f"{{ job {{ {JOB_FIELDS} }} replayed {ERRORS} }} }}"
)
JOB_IN = {"workflow": "echo", "payload": {"message": "hi"}}
VOLATILE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # ids
    r"|\d{4}-\d\d-\d\dT[0-9:.]+(?:\+00:00|Z)?"  # timestamps
    r"|(?<=\"ts\":)\d+|(?<=\"lastUpdated\":)\d+"  # unix seconds
    r"|lvq_[A-Za-z0-9_\-]+"  # new key secrets
)
# Headers whose values change from one request to the next.
VOLATILE_HEADERS = {"date", "x-request-id", "ratelimit-remaining", "ratelimit-reset", "content-length"}

Request = tuple[str, dict[str, Any] | None]  # the document and its variables


def normalised(response: httpx.Response) -> tuple[int, dict[str, str], str]:
    headers = {name: value for name, value in response.headers.items() if name not in VOLATILE_HEADERS}
    return response.status_code, headers, VOLATILE.sub("<v>", response.text)


@pytest.fixture
def general_path_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records each request the general path (Strawberry's view) answers, and still answers it."""
    calls: list[str] = []
    original = LevqorGraphQL.run

    async def run(self: LevqorGraphQL, request: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(request.method)
        return await original(self, request, *args, **kwargs)

    monkeypatch.setattr(LevqorGraphQL, "run", run)
    return calls


@pytest.fixture
def compare(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch, general_path_spy: list[str]
) -> Callable[..., httpx.Response]:
    """Send one request down each path and assert the answers match; the compiled path's answer."""

    def send(
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        operation_name: str | None = None,
        fresh: Callable[[], dict[str, Any]] | None = None,
        method: str = "POST",
    ) -> httpx.Response:
        plan = operation_plan(schema, query, operation_name)
        # GET never runs a mutation: the general path refuses it.
        compiled = plan is not None and (method == "POST" or not plan.is_mutation)
        answers = []
        for plans in (True, False):
            monkeypatch.setattr(LevqorGraphQL, "compiled_plans", plans)
            general_path_spy.clear()
            values = fresh() if fresh is not None else variables
            answers.append(request(client, method, query, values, operation_name))
            assert general_path_spy == ([] if plans and compiled else [method])
        fast, general = answers
        assert normalised(fast) == normalised(general), (fast.text, general.text)
        return fast

    return send


def request(
    http: httpx.Client, method: str, query: str, variables: dict[str, Any] | None, operation_name: str | None
) -> httpx.Response:
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    if operation_name is not None:
        body["operationName"] = operation_name
    headers = {"X-Request-Id": "plan-diff-1"}
    if method == "GET":
        params = {key: json.dumps(value) if key == "variables" else value for key, value in body.items()}
        return http.get("/graphql", params=params, headers=headers)
    return http.post(
        "/graphql", content=json.dumps(body), headers={**headers, "Content-Type": "application/json"}
    )


def submitted(http: httpx.Client) -> str:
    response = http.post("/api/v1/intake", json=JOB_IN)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["job_id"]
    return job_id


@pytest.fixture
def existing(client: httpx.Client) -> dict[str, str]:
    """A job and a user to read."""
    user = client.post("/api/v1/users/upsert", json={"email": "plan@example.com", "name": "Plan"})
    assert user.status_code == 201, user.text
    return {"job": submitted(client), "user": user.json()["user"]["id"]}


READS: list[Any] = [
    ("{ health { ok } }", None),
    ("{ health { ok ts } publicMetrics { uptimeRolling7d jobsToday auditCoverage lastUpdated } }", None),
    ("{ a: health { ok } b: health { ok } }", None),
    ("{ __typename health { __typename ok } }", None),
    ("{ workflows { name description payloadSchema timeoutS maxAttempts remoteOnly costModel } }", None),
    ("{ workflows { name } }", None),
    ("{ jobs(first: 1) { edges { cursor node { id status } } pageInfo { hasNextPage endCursor } } }", None),
    ("{ apiKeys { id name prefix scopes } }", None),
    ("query($id: ID!) { job(id: $id) { id status } }", "job"),
    (f"query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}", "job"),
    (f"query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} events {{ toStatus }} }} }}", "job"),
    ("query($id: ID!) { job(id: $id) { id events { type } } }", "job"),
    ("query($id: ID!) { job(id: $id) { id } }", UNKNOWN_ID),
    ("query($id: ID!) { job(id: $id) { id } }", "not-a-uuid"),
    (f"query($id: ID!) {{ user(id: $id) {{ {USER_FIELDS} }} }}", "user"),
    ("query Q($id: ID!) { user(id: $id) { id } }", "user"),
    ("query($e: String!) { userByEmail(email: $e) { id } }", "email"),
    ("{ user(id: 5, extra: 1) { id } }", None),
    ("{ health { ok ", None),
    ("{ health { ...H } } fragment H on Health { ok ts }", None),
]


@pytest.mark.parametrize(("query", "variable"), READS)
def test_reads_match(
    compare: Callable[..., httpx.Response], existing: dict[str, str], query: str, variable: str | None
) -> None:
    variables: dict[str, Any] | None = None
    if variable == "email":
        variables = {"e": "PLAN@example.com "}
    elif variable is not None:
        variables = {"id": existing.get(variable, variable)}
    compare(query, variables)


def test_queries_over_get_match(compare: Callable[..., httpx.Response], existing: dict[str, str]) -> None:
    compare("query($id: ID!) { job(id: $id) { id status } }", {"id": existing["job"]}, method="GET")
    compare("{ health { ok } }", method="GET")
    refused = compare(BENCH_SUBMIT, {"input": JOB_IN}, method="GET")
    assert refused.status_code == 405


def test_operation_name_chooses_one_of_several(compare: Callable[..., httpx.Response]) -> None:
    document = "query A { health { ok } } query B { workflows { name } }"
    assert "workflows" in compare(document, operation_name="B").json()["data"]
    assert "health" in compare(document, operation_name="A").json()["data"]
    compare(document)  # no name: the general path's own choice
    compare(document, operation_name="C")


def test_variable_errors_match(compare: Callable[..., httpx.Response]) -> None:
    for variables in (
        None,  # missing
        {"e": 5},  # wrong type
        {"e": None},  # null for a non-null variable
    ):
        body = compare("query($e: String!) { userByEmail(email: $e) { id } }", variables).json()
        assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    unknown_field = compare(BENCH_SUBMIT, {"input": {**JOB_IN, "bogus": 1}}).json()
    assert unknown_field["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


def test_mutations_match(compare: Callable[..., httpx.Response], client: httpx.Client) -> None:
    assert compare(BENCH_SUBMIT, {"input": JOB_IN}).json()["data"]["submitJob"]["job"]["status"] == "QUEUED"
    compare(SUBMIT_FULL, {"i": {**JOB_IN, "priority": "HIGH", "maxAttempts": 2}, "k": None})
    # An expected failure: the payload's userErrors.
    invalid = compare(SUBMIT_FULL, {"i": {"workflow": "no-such-flow", "payload": {}}}).json()
    assert invalid["data"]["submitJob"]["userErrors"]
    compare(
        'mutation { a: submitJob(input: {workflow: "echo", payload: {}}) { job { status } } '
        'b: submitJob(input: {workflow: "echo", payload: 1}) { job { status } userErrors { code } } }'
    )
    compare(
        "mutation($i: UpsertUserInput!) { upsertUser(input: $i) "
        f"{{ user {{ {USER_FIELDS} }} created {ERRORS} }} }}",
        fresh=lambda: {"i": {"email": f"{uuid.uuid4()}@example.com", "name": "U"}},
    )
    for verb in ("cancelJob", "retryJob", "completeJob"):
        compare(
            f"mutation($id: ID!) {{ {verb}(id: $id) {{ job {{ status }} userErrors {{ code }} }} }}",
            fresh=lambda: {"id": submitted(client)},
        )
    not_found = compare(
        "mutation($id: ID!) { revokeApiKey(id: $id) { apiKey { active } userErrors { code } } }",
        {"id": UNKNOWN_ID},
    )
    assert not_found.json()["data"]["revokeApiKey"]["userErrors"][0]["code"] == "NOT_FOUND"


@pytest.fixture
def users_table_gone(db_url: str) -> Iterator[None]:
    """The users table renamed away: a real failure inside the resolvers."""
    with table_out_of_service(db_url, "users"):
        yield


def test_unexpected_errors_are_masked_alike(
    compare: Callable[..., httpx.Response], users_table_gone: None
) -> None:
    # A nullable root field: its own null.
    nullable = compare("query($id: ID!) { user(id: $id) { id } }", {"id": UNKNOWN_ID}).json()
    assert nullable["data"] == {"user": None}
    assert nullable["errors"][0]["extensions"] == {
        "code": "INTERNAL_SERVER_ERROR",
        "request_id": "plan-diff-1",
    }
    # A non-null root field: the null reaches the whole of `data`.
    non_null = compare(
        "mutation($i: UpsertUserInput!) { upsertUser(input: $i) { user { id } } }",
        {"i": {"email": "gone@example.com", "name": "Gone"}},
    ).json()
    assert non_null["data"] is None
    assert non_null["errors"][0]["path"] == ["upsertUser"]


def test_a_refused_aliased_batch_matches(
    make_server: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    live = make_server(RATE_BURST="4/day", RATE_GLOBAL="1000/day")
    batch = (
        "mutation { "
        + " ".join(
            f'j{n}: submitJob(input: {{workflow: "echo", payload: {{}}}}) {{ job {{ id }} }}'
            for n in range(6)
        )
        + " }"
    )
    answers = []
    with live.client() as http:
        for plans in (True, False):
            monkeypatch.setattr(LevqorGraphQL, "compiled_plans", plans)
            answers.append(request(http, "POST", batch, None, None))
    fast, general = answers
    assert fast.status_code == 429
    assert fast.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert normalised(fast) == normalised(general)
