"""The request gateway: routes called from its table answer exactly as Starlette's router answers, and
every kind of answer carries the security headers, the request id and the rate-limit headers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest

from levqor.http.dispatch import RouteTable
from levqor.http.gateway import Gateway
from tests.conftest import LiveServer
from tests.integration.test_headers_cors import assert_seed_headers
from tests.ops_support import table_out_of_service
from tests.support import assert_error

UNKNOWN_JOB = "6f1c1a2e-0000-4000-8000-000000000000"
KEY = "gateway-test-key"
# Headers that differ between two requests for reasons of time and counting, not of routing.
VOLATILE = {"date", "server", "ratelimit-remaining", "ratelimit-reset"}
LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")

Call = Callable[[httpx.Client], httpx.Response]


def gateway_of(live: LiveServer) -> Gateway:
    stack = live.server.config.app.middleware_stack  # built when the lifespan started
    assert isinstance(stack, Gateway)
    return stack


@contextmanager
def starlette_routing(live: LiveServer) -> Iterator[None]:
    """Every request through Starlette's exception middleware and router, as before the table."""
    gateway = gateway_of(live)
    table = gateway.table
    gateway.table = RouteTable([])
    try:
        yield
    finally:
        gateway.table = table


def answer(response: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    headers = [(name.lower(), value) for name, value in response.headers.multi_items()]
    return response.status_code, [pair for pair in headers if pair[0] not in VOLATILE], response.content


def assert_same_both_ways(live: LiveServer, http: httpx.Client, call: Call) -> httpx.Response:
    direct = call(http)
    with starlette_routing(live):
        routed = call(http)
    assert answer(direct) == answer(routed)
    return direct


def traced(request_id: str) -> dict[str, str]:
    """The same request id on both requests, so their bodies and headers can be compared whole."""
    return {"X-Request-Id": request_id}


@pytest.fixture
def keyed(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(API_KEYS=KEY)


@pytest.fixture
def http(keyed: LiveServer) -> Iterator[httpx.Client]:
    with keyed.client(headers={"X-Api-Key": KEY}) as client:
        yield client


def test_a_parametrised_route_answers_as_through_starlette(keyed: LiveServer, http: httpx.Client) -> None:
    accepted = http.post("/api/v1/intake", json={"workflow": "echo", "payload": {"n": 1}})
    assert accepted.status_code == 202
    job_id = accepted.json()["job_id"]
    response = assert_same_both_ways(
        keyed, http, lambda c: c.get(f"/api/v1/status/{job_id}", headers=traced("status"))
    )
    assert response.status_code == 200
    assert response.json()["job_id"] == job_id


def test_an_error_from_an_endpoint_is_mapped_by_the_same_handlers(
    keyed: LiveServer, http: httpx.Client
) -> None:
    response = assert_same_both_ways(
        keyed, http, lambda c: c.get(f"/api/v1/status/{UNKNOWN_JOB}", headers=traced("missing"))
    )
    assert_error(response, 404, "not_found")
    bad = assert_same_both_ways(
        keyed, http, lambda c: c.post("/api/v1/intake", json={"workflow": 7}, headers=traced("bad"))
    )
    assert_error(bad, 400, "invalid_request")


@pytest.mark.parametrize(
    ("name", "call", "status"),
    [
        ("wrong method", lambda c: c.delete("/api/v1/intake", headers=traced("405")), 405),
        (
            "wrong method, parametrised",
            lambda c: c.put(f"/api/v1/status/{UNKNOWN_JOB}", headers=traced("p")),
            405,
        ),
        ("head", lambda c: c.head("/health", headers=traced("head")), 200),
        ("head, parametrised", lambda c: c.head(f"/api/v1/status/{UNKNOWN_JOB}", headers=traced("h")), 404),
        ("trailing slash", lambda c: c.post("/api/v1/intake/", json={}, headers=traced("slash")), 307),
        ("percent-encoded id", lambda c: c.get("/api/v1/status/a%20b", headers=traced("space")), 404),
        ("percent-encoded slash", lambda c: c.get("/api/v1/status/a%2Fb", headers=traced("slash2")), 404),
        (
            "an id that is a route name",
            lambda c: c.get("/api/v1/users/upsert", headers=traced("upsert")),
            404,
        ),
        (
            "graphql",
            lambda c: c.post("/graphql", json={"query": "{ health { ok } }"}, headers=traced("gql")),
            200,
        ),
        (
            "graphql mutation over get",
            lambda c: c.get("/graphql", params={"query": "mutation { x }"}, headers=traced("gql-get")),
            405,
        ),
    ],
)
def test_what_the_table_leaves_or_takes_answers_as_through_starlette(
    keyed: LiveServer, http: httpx.Client, name: str, call: Call, status: int
) -> None:
    response = assert_same_both_ways(keyed, http, call)
    assert response.status_code == status, (name, response.text)
    assert_seed_headers(response)
    if status == 405 and name.startswith("wrong method"):
        assert_error(response, 405, "method_not_allowed")
        assert "Allow" in response.headers


def test_an_unexpected_exception_is_internal_error_with_the_request_id(
    keyed: LiveServer, http: httpx.Client, db_url: str
) -> None:
    with table_out_of_service(db_url, "jobs"):
        direct = http.get(f"/api/v1/status/{UNKNOWN_JOB}")
        with starlette_routing(keyed):
            routed = http.get(f"/api/v1/status/{UNKNOWN_JOB}")
    for response in (direct, routed):
        assert response.status_code == 500
        assert_seed_headers(response)
        assert response.json() == {
            "error": "internal_error",
            "message": "internal server error",
            "request_id": response.headers["X-Request-Id"],
        }
        assert all(name in response.headers for name in LIMIT_HEADERS)
        assert response.headers["Vary"] == "Origin"


EVERY_ANSWER: dict[str, tuple[int, Call]] = {
    "success": (200, lambda c: c.get("/api/v1/jobs")),
    "accepted": (202, lambda c: c.post("/api/v1/intake", json={"workflow": "echo", "payload": {}})),
    "bad input": (400, lambda c: c.post("/api/v1/intake", json={"workflow": 7})),
    "bad key": (401, lambda c: c.get("/api/v1/jobs", headers={"X-Api-Key": "wrong"})),
    "unknown record": (404, lambda c: c.get(f"/api/v1/status/{UNKNOWN_JOB}")),
    "unknown route": (404, lambda c: c.get("/api/v1/no/such/route")),
    "wrong method": (405, lambda c: c.delete("/api/v1/intake")),
    "too large": (413, lambda c: c.post("/api/v1/intake", content=b"x" * 2_000_000)),
    "too large, chunked": (413, lambda c: c.post("/api/v1/intake", content=iter([b"x" * 1_100_000] * 2))),
    "wrong media type": (415, lambda c: c.post("/api/v1/intake", content=b"{}")),
    "head": (200, lambda c: c.head("/api/v1/jobs")),
    "redirect": (307, lambda c: c.get("/api/v1/jobs/")),
    "graphql": (200, lambda c: c.post("/graphql", json={"query": "{ health { ok } }"})),
}


@pytest.mark.parametrize("kind", list(EVERY_ANSWER))
@pytest.mark.parametrize("origin", [None, "https://levqor.ai"])
def test_every_kind_of_answer_carries_the_ids_and_the_limits(
    keyed: LiveServer, http: httpx.Client, kind: str, origin: str | None
) -> None:
    status, call = EVERY_ANSWER[kind]
    if origin is not None:
        http.headers["Origin"] = origin
    response = call(http)
    assert response.status_code == status, response.text
    assert_seed_headers(response)
    for name in LIMIT_HEADERS:
        assert name in response.headers, (kind, response.headers)
    assert len(response.headers.get_list("RateLimit-Limit")) == 1
    assert "Origin" in response.headers["Vary"]
    if origin is not None:
        assert response.headers["Access-Control-Allow-Origin"] == origin
    if status >= 400 and kind != "head":
        assert response.json()["request_id"] == response.headers["X-Request-Id"]


def test_a_refused_request_carries_the_ids_and_retry_after(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(RATE_BURST="2/minute")
    with live.client() as client:
        answers = [client.get(f"/api/v1/status/{UNKNOWN_JOB}") for _ in range(3)]
    assert [r.status_code for r in answers] == [404, 404, 429]
    refused = answers[-1]
    assert_error(refused, 429, "rate_limited")
    assert_seed_headers(refused)
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert len(refused.headers.get_list("Retry-After")) == 1


def test_a_route_without_a_key_is_refused_with_a_challenge_on_both_paths(keyed: LiveServer) -> None:
    with keyed.client() as client:
        response = assert_same_both_ways(
            keyed, client, lambda c: c.get("/api/v1/jobs", headers={"X-Api-Key": "wrong", **traced("401")})
        )
    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="levqor"'


def test_the_metrics_label_a_dispatched_request_with_its_route_template(
    keyed: LiveServer, http: httpx.Client
) -> None:
    http.get("/api/v1/status/a%20b")
    text = http.get("/metrics").text
    assert 'route="/api/v1/status/{job_id}",status="404"' in text
    assert "a b" not in text
