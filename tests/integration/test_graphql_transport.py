"""/graphql over HTTP as the GraphQL-over-HTTP spec describes it: GET for queries only, GraphiQL for
browsers, clear 4xx for requests that are not GraphQL requests, and masked unexpected errors."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from levqor.schema.documents import MAX_DOCUMENT_CHARS
from tests.conftest import DB_KINDS
from tests.ops_support import table_out_of_service
from tests.support import assert_error, gql, gql_error_code, row_counts, shared_server

UPSERT = 'mutation { upsertUser(input: {email: "g@example.com", name: "G"}) { user { id } } }'


@pytest.fixture(scope="module", params=DB_KINDS)
def shared(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """One server for the requests that cannot change anything."""
    workdir: Path = tmp_path_factory.mktemp("graphql-transport")
    with shared_server(request, str(request.param), workdir) as live, live.client() as http:
        yield http


def test_get_runs_a_query(client: httpx.Client) -> None:
    response = client.get("/graphql", params={"query": "{ health { ok ts } }"})
    assert response.status_code == 200
    body = response.json()
    assert body["data"]["health"]["ok"] is True
    assert isinstance(body["data"]["health"]["ts"], int)

    with_variables = client.get(
        "/graphql",
        params={
            "query": "query Q($id: ID!) { user(id: $id) { id } }",
            "variables": json.dumps({"id": "6f1c1a2e-0000-4000-8000-000000000000"}),
            "operationName": "Q",
        },
    )
    assert with_variables.status_code == 200
    assert gql_error_code(with_variables.json()) == "NOT_FOUND"


def test_get_refuses_a_mutation_with_405(client: httpx.Client, db_url: str) -> None:
    response = client.get("/graphql", params={"query": UPSERT})
    assert_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]
    assert row_counts(db_url)["users"] == 0
    # The same document over POST works.
    assert client.post("/graphql", json={"query": UPSERT}).json()["data"]["upsertUser"]["user"]["id"]


def test_graphiql_is_served_to_a_browser(shared: httpx.Client) -> None:
    response = shared.get("/graphql", headers={"Accept": "text/html,application/xhtml+xml"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()
    # Levqor's own page: every script and stylesheet from this origin, under a policy that says so.
    assert "https://" not in response.text
    assert "script-src 'self';" in response.headers["content-security-policy"]
    assert "unsafe-" not in response.headers["content-security-policy"]


def test_graphiql_files_are_served_with_their_types_and_cached(shared: httpx.Client) -> None:
    page = shared.get("/graphql", headers={"Accept": "text/html"}).text
    urls = re.findall(r'(?:src|href)="(/graphql/assets/[^"]+)"', page)
    assert len(urls) == 8  # React, ReactDOM, GraphiQL and its explorer (script and style), the page's own
    for url in urls:
        response = shared.get(url.replace("&amp;", "&"))
        assert response.status_code == 200, url
        kind = "text/css" if ".css?" in url else ("text/javascript", "application/javascript")
        assert response.headers["content-type"].startswith(kind), url
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("{ health { ok ", "GRAPHQL_PARSE_FAILED"),
        ("query {", "GRAPHQL_PARSE_FAILED"),
        ("{ health { ok } } }", "GRAPHQL_PARSE_FAILED"),
        ('{ user(id: "x" { id } }', "GRAPHQL_PARSE_FAILED"),
        ("{ nosuchField }", "GRAPHQL_VALIDATION_FAILED"),
        ("{ health }", "GRAPHQL_VALIDATION_FAILED"),
        ("{ user { id } }", "GRAPHQL_VALIDATION_FAILED"),
        ("{ user(id: 5, extra: 1) { id } }", "GRAPHQL_VALIDATION_FAILED"),
        ("mutation { health { ok } }", "GRAPHQL_VALIDATION_FAILED"),
        ("subscription { nothing }", "GRAPHQL_VALIDATION_FAILED"),
        ("query A { health { ok } } query A { health { ok } }", "GRAPHQL_VALIDATION_FAILED"),
        ("fragment F on Query { ...F } { ...F }", "GRAPHQL_VALIDATION_FAILED"),
    ],
)
def test_a_malformed_document_gets_graphql_errors_not_a_500(
    shared: httpx.Client, query: str, code: str
) -> None:
    body = gql(shared, query)
    assert body.get("data") is None
    assert gql_error_code(body) == code
    assert body["errors"][0]["message"]


def test_variables_of_the_wrong_type_are_refused(client: httpx.Client, db_url: str) -> None:
    query = "mutation M($i: UpsertUserInput!) { upsertUser(input: $i) { user { id } } }"
    for variables in ({"i": {"email": 5, "name": "x"}}, {"i": "text"}, {}):
        body = gql(client, query, variables)
        assert body.get("data") is None
        assert gql_error_code(body) in {"GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT"}
    assert row_counts(db_url)["users"] == 0


def raw(body: bytes, content_type: str = "application/json") -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": content_type}}


@pytest.mark.parametrize(
    ("method", "kwargs", "status"),
    [
        ("POST", raw(b"{bad json"), 400),
        ("POST", raw(b""), 400),
        ("POST", raw(b'{"query": "{ health { ok } }"', "text/plain"), 415),
        ("POST", raw(b"query { health { ok } }", "application/graphql"), 415),
        ("POST", raw(b"[]"), 400),
        ("POST", raw(b'[{"query": "{ health { ok } }"}]'), 400),
        ("POST", raw(b'"{ health { ok } }"'), 400),
        ("POST", raw(b"{}"), 400),
        ("POST", raw(b'{"query": 5}'), 400),
        ("POST", raw(b'{"query": "{ health { ok } }", "variables": []}'), 400),
        ("POST", raw(b'{"query": "{ health { ok } }", "variables": "x"}'), 400),
        ("POST", raw(b'{"query": "{ health { ok } }", "extensions": 1}'), 400),
        ("POST", raw(b'{"query": "{ health { ok } }", "operationName": "Nope"}'), 400),
        ("POST", raw(b'{"query": "{ health { ok } }", "variables": {"a": NaN}}'), 400),
        ("POST", raw(b'{"query": "{ health { ok } }", "variables": {"a": ' + b"9" * 5000 + b"}}"), 400),
        (
            "POST",
            raw(b'{"query": "{ health { ok } }", "variables": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
            400,
        ),
        ("POST", raw(b'{"query": "{ health { ok } }", "x": "\xff"}'), 400),
        ("GET", {"params": {"query": "{ health { ok } }", "variables": "{bad"}}, 400),
        ("GET", {"params": {}, "headers": {"Accept": "application/json"}}, 400),
        ("GET", {"params": {"query": "{ health { ok } }", "variables": "5"}}, 400),
        ("PUT", raw(b'{"query": "{ health { ok } }"}'), 405),
        ("DELETE", {}, 405),
    ],
)
def test_a_request_that_is_not_a_graphql_request_gets_the_contract_error(
    shared: httpx.Client, method: str, kwargs: dict[str, Any], status: int
) -> None:
    code = {400: "invalid_request", 405: "method_not_allowed", 415: "unsupported_media_type"}[status]
    response = shared.request(method, "/graphql", **kwargs)
    assert_error(response, status, code)


@pytest.fixture
def users_table_gone(db_url: str) -> Iterator[None]:
    """The users table renamed away for the test: a real database failure, not a mock."""
    with table_out_of_service(db_url, "users"):
        yield


def test_unexpected_errors_are_masked_with_the_request_id(
    client: httpx.Client, users_table_gone: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    query = '{ user(id: "6f1c1a2e-0000-4000-8000-000000000000") { id } }'
    response = client.post("/graphql", json={"query": query}, headers={"X-Request-Id": "trace-gql-1"})
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None or body["data"]["user"] is None
    [error] = body["errors"]
    assert error["message"] == "internal server error"
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "request_id": "trace-gql-1"}
    assert "users" not in response.text
    assert "Traceback" not in response.text

    rest = client.get(
        "/api/v1/users/6f1c1a2e-0000-4000-8000-000000000000", headers={"X-Request-Id": "trace-rest-1"}
    )
    assert rest.status_code == 500
    assert rest.json() == {
        "error": "internal_error",
        "message": "internal server error",
        "request_id": "trace-rest-1",
    }
    # Both tracebacks are in the log, with their request ids, for the operator.
    logged = {getattr(record, "request_id", None) for record in caplog.records if record.exc_info}
    assert {"trace-gql-1", "trace-rest-1"} <= logged


GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"


def post_accepting(http: httpx.Client, accept: str, body: dict[str, Any]) -> httpx.Response:
    return http.post("/graphql", json=body, headers={"Accept": accept})


@pytest.mark.parametrize(
    "accept",
    [
        GRAPHQL_RESPONSE_JSON,
        f"{GRAPHQL_RESPONSE_JSON}, application/json;q=0.9",
        "application/json, */*;q=0.5",
    ],
)
def test_the_accepted_media_type_is_answered(shared: httpx.Client, accept: str) -> None:
    response = post_accepting(shared, accept, {"query": "{ health { ok } }"})
    assert response.status_code == 200
    assert response.headers["content-type"] == accept.split(",")[0]
    assert "Accept" in response.headers["vary"]
    assert response.json() == {"data": {"health": {"ok": True}}}


@pytest.mark.parametrize(
    "accept", [None, "application/json", "*/*", f"application/json, {GRAPHQL_RESPONSE_JSON};q=0.5"]
)
def test_application_json_is_the_default(shared: httpx.Client, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    response = shared.post("/graphql", json={"query": "{ health { ok } }"}, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"


REQUEST_ERRORS = [
    ({"query": "{ health { ok "}, "GRAPHQL_PARSE_FAILED"),
    ({"query": "{ nosuchField }"}, "GRAPHQL_VALIDATION_FAILED"),
    ({"query": "query Q($id: ID!) { user(id: $id) { id } }", "variables": {"id": None}}, "BAD_USER_INPUT"),
    ({"query": "{" + " health { ok }" * 100 + " }"}, "GRAPHQL_VALIDATION_FAILED"),
]


@pytest.mark.parametrize(("body", "code"), REQUEST_ERRORS)
def test_a_request_error_is_a_400_without_data_for_graphql_response_json(
    shared: httpx.Client, body: dict[str, Any], code: str
) -> None:
    response = post_accepting(shared, GRAPHQL_RESPONSE_JSON, body)
    assert response.status_code == 400
    assert response.headers["content-type"] == GRAPHQL_RESPONSE_JSON
    answer = response.json()
    assert "data" not in answer
    assert gql_error_code(answer) == code


@pytest.mark.parametrize(("body", "code"), REQUEST_ERRORS)
def test_a_request_error_is_a_200_with_null_data_for_application_json(
    shared: httpx.Client, body: dict[str, Any], code: str
) -> None:
    response = post_accepting(shared, "application/json", body)
    assert response.status_code == 200
    answer = response.json()
    assert answer["data"] is None
    assert gql_error_code(answer) == code


def test_a_field_error_is_a_200_with_data_for_graphql_response_json(shared: httpx.Client) -> None:
    query = '{ user(id: "6f1c1a2e-0000-4000-8000-000000000000") { id } health { ok } }'
    response = post_accepting(shared, GRAPHQL_RESPONSE_JSON, {"query": query})
    assert response.status_code == 200
    answer = response.json()
    assert answer["data"] == {"user": None, "health": {"ok": True}}
    assert gql_error_code(answer) == "NOT_FOUND"


def test_get_answers_graphql_response_json_and_refuses_mutations_with_405(shared: httpx.Client) -> None:
    headers = {"Accept": GRAPHQL_RESPONSE_JSON}
    query = shared.get("/graphql", params={"query": "{ health { ok } }"}, headers=headers)
    assert query.status_code == 200
    assert query.headers["content-type"] == GRAPHQL_RESPONSE_JSON
    mutation = shared.get("/graphql", params={"query": UPSERT}, headers=headers)
    assert_error(mutation, 405, "method_not_allowed")


def test_a_document_over_the_length_limit_is_refused_before_it_is_parsed(shared: httpx.Client) -> None:
    huge = '{ user(id: "' + "x" * MAX_DOCUMENT_CHARS + '") { id } }'
    assert_error(shared.post("/graphql", json={"query": huge}), 413, "payload_too_large")
    # The same value as a variable is read as data.
    query = "query Q($id: ID!) { user(id: $id) { id } }"
    body = gql(shared, query, {"id": "x" * MAX_DOCUMENT_CHARS})
    assert gql_error_code(body) == "NOT_FOUND"
