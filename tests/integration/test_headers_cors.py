"""Security headers, request ids and CORS on every kind of answer (CONTRACT.md §4, seed "Security & CORS")."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest

from tests.conftest import LiveServer
from tests.ops_support import table_out_of_service

SEED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Permissions-Policy": "geolocation=(), microphone=()",
}
ORIGIN = "https://levqor.ai"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "PATCH",
    "Access-Control-Request-Headers": "Content-Type, Authorization, X-Api-Key, Idempotency-Key",
}
UNKNOWN_JOB = "6f1c1a2e-0000-4000-8000-000000000000"


def assert_seed_headers(response: httpx.Response) -> None:
    for name, value in SEED_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.status_code, response.headers)
    assert len(response.headers.get_list("X-Content-Type-Options")) == 1
    request_id = response.headers.get("X-Request-Id", "")
    assert request_id, response.headers
    assert request_id.isprintable()


ANSWERS: dict[str, tuple[int, Callable[[httpx.Client], httpx.Response]]] = {
    "success": (200, lambda c: c.get("/health")),
    "accepted": (202, lambda c: c.post("/api/v1/intake", json={"workflow": "echo", "payload": {}})),
    "bad input": (400, lambda c: c.post("/api/v1/intake", json={"workflow": 7})),
    "unknown route": (404, lambda c: c.get("/no/such/route")),
    "unknown record": (404, lambda c: c.get(f"/api/v1/status/{UNKNOWN_JOB}")),
    "wrong method": (405, lambda c: c.delete("/health")),
    "too large": (413, lambda c: c.post("/api/v1/intake", content=b"x" * 2_000_000)),
    "wrong media type": (415, lambda c: c.post("/api/v1/intake", content=b"{}")),
    "preflight": (200, lambda c: c.options("/api/v1/intake", headers=PREFLIGHT)),
    "page": (200, lambda c: c.get("/legal/privacy")),
    "page file": (200, lambda c: c.get("/public/faq/index.html")),
    "stylesheet": (200, lambda c: c.get("/public/styles.css")),
    "graphql post": (200, lambda c: c.post("/graphql", json={"query": "{ health { ok } }"})),
    "graphql get": (200, lambda c: c.get("/graphql", params={"query": "{ health { ok } }"})),
    "graphql error": (200, lambda c: c.post("/graphql", json={"query": "{ nope }"})),
    "openapi": (200, lambda c: c.get("/openapi.json")),
    "metrics": (200, lambda c: c.get("/metrics")),
}


@pytest.mark.parametrize("answer", list(ANSWERS))
def test_every_kind_of_answer_carries_the_seed_headers(client: httpx.Client, answer: str) -> None:
    status, call = ANSWERS[answer]
    response = call(client)
    assert response.status_code == status, response.text
    assert_seed_headers(response)
    assert "set-cookie" not in response.headers  # the cookie notice promises none


def test_an_internal_error_carries_the_headers_and_only_the_request_id(
    client: httpx.Client, db_url: str
) -> None:
    with table_out_of_service(db_url, "jobs"):
        response = client.get(f"/api/v1/status/{UNKNOWN_JOB}", headers={"Origin": ORIGIN})
    assert response.status_code == 500
    assert_seed_headers(response)
    assert response.json() == {
        "error": "internal_error",
        "message": "internal server error",
        "request_id": response.headers["X-Request-Id"],
    }
    # Handled inside CORS, so a browser page can read the failure and quote its id.
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN


def test_request_ids_are_unique_and_a_callers_own_id_is_kept(client: httpx.Client) -> None:
    ids = {client.get("/health").headers["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5
    own = f"trace-{uuid.uuid4().hex}"
    assert client.get("/health", headers={"X-Request-Id": own}).headers["X-Request-Id"] == own
    # Not a header value to echo: too long, so the server makes its own.
    long = "x" * 500
    assert client.get("/health", headers={"X-Request-Id": long}).headers["X-Request-Id"] != long


def test_a_preflight_from_the_site_is_answered_with_the_contracts_methods_and_headers(
    client: httpx.Client,
) -> None:
    response = client.options("/api/v1/users/6f1c1a2e-0000-4000-8000-000000000001", headers=PREFLIGHT)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert {"GET", "POST", "OPTIONS", "PATCH", "PUT", "DELETE"} <= methods
    allowed = {h.strip().lower() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"content-type", "authorization", "x-api-key", "idempotency-key"} <= allowed
    assert int(response.headers["Access-Control-Max-Age"]) > 0


def test_a_cross_origin_request_from_the_site_may_read_the_answer_and_its_ids(client: httpx.Client) -> None:
    response = client.get("/health", headers={"Origin": ORIGIN})
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    exposed = {h.strip().lower() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"x-request-id", "retry-after", "ratelimit-remaining"} <= exposed
    assert "Origin" in response.headers["Vary"]


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Origin", "https://evil.example"),
        ("Access-Control-Request-Method", "TRACE"),
        ("Access-Control-Request-Headers", "X-Custom-Header"),
    ],
)
def test_a_preflight_asking_for_what_is_not_allowed_is_refused_in_the_contracts_shape(
    client: httpx.Client, header: str, value: str
) -> None:
    response = client.options("/api/v1/intake", headers={**PREFLIGHT, header: value})
    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "forbidden"
    assert "Disallowed CORS" in body["message"]
    assert_seed_headers(response)
    if header == "Origin":
        assert "Access-Control-Allow-Origin" not in response.headers


def test_a_foreign_origin_gets_no_allow_origin_on_a_simple_request(client: httpx.Client) -> None:
    response = client.get("/health", headers={"Origin": "https://evil.example"})
    assert response.status_code == 200  # CORS is the browser's to enforce; the answer just lacks the grant
    assert "Access-Control-Allow-Origin" not in response.headers


def test_origins_come_from_the_configuration(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(LEVQOR_CORS_ORIGINS="https://app.example, https://admin.example")
    with server.client() as http:
        for origin in ("https://app.example", "https://admin.example"):
            response = http.options("/api/v1/intake", headers={**PREFLIGHT, "Origin": origin})
            assert response.status_code == 200
            assert response.headers["Access-Control-Allow-Origin"] == origin
        refused = http.options("/api/v1/intake", headers=PREFLIGHT)  # the default is no longer allowed
        assert refused.status_code == 403
        assert "Access-Control-Allow-Origin" not in refused.headers
