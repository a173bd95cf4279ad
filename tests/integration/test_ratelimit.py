"""Rate limits on a real server: per client, global, REST and GraphQL, headers and the 429 itself.

Limits are per day here, so that no test straddles the start of a new window (the sliding window
counter weighs the previous window in, which would blur an exact count at the boundary).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import httpx
import pytest
from sqlalchemy import func
from sqlmodel import select

from levqor.db.engine import Database
from levqor.db.models import Job
from tests.conftest import LiveServer

LIMITED = "/api/v1/users/00000000-0000-0000-0000-000000000000"  # 404, but a limited route
UNLIMITED = (
    "/",
    "/health",
    "/faq",
    "/legal/privacy",
    "/legal/terms",
    "/legal/cookies",
    "/public/legal/privacy.html",
    "/public/faq/index.html",
    "/public/styles.css",
    "/metrics",
)


def submit_aliases(count: int) -> str:
    fields = " ".join(
        f'j{n}: submitJob(input: {{workflow: "echo", payload: {{n: {n}}}}}) {{ job {{ id }} }}'
        for n in range(count)
    )
    return f"mutation {{ {fields} }}"


def job_count(db: Database) -> int:
    return db.read_sync(lambda session: session.exec(select(func.count()).select_from(Job)).one())


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 429
    assert response.json()["error"] == "rate_limited"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["RateLimit-Remaining"] == "0"


def test_per_client_limit_on_rest(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(RATE_BURST="5/day", RATE_GLOBAL="1000/day")
    with live.client() as http:
        for remaining in (4, 3, 2, 1, 0):
            response = http.get(LIMITED)
            assert response.status_code == 404
            assert response.headers["RateLimit-Limit"] == "5"
            assert response.headers["RateLimit-Remaining"] == str(remaining)
            assert int(response.headers["RateLimit-Reset"]) >= 0
        refused = http.get(LIMITED)
        assert_refused(refused)
        assert set(refused.json()) >= {"error", "message", "request_id"}
        # Every limited route is refused now, GraphQL too; a refusal there is a GraphQL error.
        assert_refused(http.post("/api/v1/intake", json={"workflow": "echo", "payload": {}}))
        assert_refused(http.get("/public/metrics"))
        graphql = http.post("/graphql", json={"query": "{ health { ok } }"})
        assert graphql.status_code == 429
        assert int(graphql.headers["Retry-After"]) >= 1
        assert graphql.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"


def test_unlimited_routes_stay_unlimited(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(RATE_BURST="2/day", RATE_GLOBAL="2/day")
    with live.client() as http:
        http.get(LIMITED)
        http.get(LIMITED)
        assert http.get(LIMITED).status_code == 429
        for _ in range(3):
            for path in UNLIMITED:
                response = http.get(path)
                assert response.status_code == 200, path
                assert "RateLimit-Limit" not in response.headers, path


def test_graphql_queries_count_per_request(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(RATE_BURST="3/day", RATE_GLOBAL="1000/day")
    with live.client() as http:
        for remaining in (2, 1, 0):
            # Aliased query fields are one request: only mutation fields are counted one by one.
            response = http.post("/graphql", json={"query": "{ a: health { ok } b: health { ok } }"})
            assert response.status_code == 200
            assert response.headers["RateLimit-Remaining"] == str(remaining)
        assert http.post("/graphql", json={"query": "{ health { ok } }"}).status_code == 429


def test_25_aliased_mutations_count_as_25(make_server: Callable[..., LiveServer], db: Database) -> None:
    live = make_server(RATE_BURST="30/day", RATE_GLOBAL="1000/day")
    with live.client() as http:
        response = http.post("/graphql", json={"query": submit_aliases(25)})
        assert response.status_code == 200, response.text
        assert "errors" not in response.json()
        assert len({field["job"]["id"] for field in response.json()["data"].values()}) == 25
        assert response.headers["RateLimit-Remaining"] == "5"
        for _ in range(5):
            assert http.get(LIMITED).status_code == 404
        assert_refused(http.get(LIMITED))
    assert job_count(db) == 25


def test_a_document_over_the_allowance_runs_nothing(
    make_server: Callable[..., LiveServer], db: Database
) -> None:
    live = make_server(RATE_BURST="20/day", RATE_GLOBAL="1000/day")
    with live.client() as http:
        refused = http.post("/graphql", json={"query": submit_aliases(25)})
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["data"] is None
        assert [error["extensions"]["code"] for error in refused.json()["errors"]] == ["RATE_LIMITED"]
        assert job_count(db) == 0
        # The refused fields were not charged: the one HTTP request was, and 19 remain.
        fits = http.post("/graphql", json={"query": submit_aliases(19)})
        assert fits.status_code == 200
        assert "errors" not in fits.json()
        assert fits.headers["RateLimit-Remaining"] == "0"
    assert job_count(db) == 19


def test_fragments_cannot_hide_mutation_fields(make_server: Callable[..., LiveServer], db: Database) -> None:
    live = make_server(RATE_BURST="4/day", RATE_GLOBAL="1000/day")
    query = (
        'mutation { ...Two ... on Mutation { c: submitJob(input: {workflow: "echo", payload: {}}) '
        "{ job { id } } } } fragment Two on Mutation { "
        'a: submitJob(input: {workflow: "echo", payload: {}}) { job { id } } '
        'b: submitJob(input: {workflow: "echo", payload: {}}) { job { id } } }'
    )
    with live.client() as http:
        first = http.post("/graphql", json={"query": query})
        assert first.status_code == 200
        assert first.headers["RateLimit-Remaining"] == "1"
        assert http.post("/graphql", json={"query": query}).status_code == 429
    assert job_count(db) == 3


def test_global_limit_holds_across_clients(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(RATE_BURST="5/day", RATE_GLOBAL="8/day", LEVQOR_TRUSTED_PROXIES="127.0.0.1")
    with live.client() as http:
        alice, bob, carol = ({"X-Forwarded-For": ip} for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3"))
        for _ in range(5):
            assert http.get(LIMITED, headers=alice).status_code == 404
        assert_refused(http.get(LIMITED, headers=alice))  # alice's own limit
        for _ in range(3):
            assert http.get(LIMITED, headers=bob).status_code == 404
        refused = http.get(LIMITED, headers=bob)  # bob has 2 of his own left, the service none
        assert_refused(refused)
        assert refused.headers["RateLimit-Limit"] == "8"
        assert_refused(http.get(LIMITED, headers=carol))
        graphql = http.post("/graphql", json={"query": "{ health { ok } }"}, headers=carol)
        assert graphql.status_code == 429
        assert graphql.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        # Alice's refused request did not use the service's allowance: 5 + 3 were served, not 9.


def test_forwarded_for_is_ignored_from_untrusted_peers(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(RATE_BURST="3/day", RATE_GLOBAL="1000/day")
    with live.client() as http:
        for n in range(3):
            assert http.get(LIMITED, headers={"X-Forwarded-For": f"198.51.100.{n}"}).status_code == 404
        # A new address each time buys nothing: the socket's address is the client.
        assert_refused(http.get(LIMITED, headers={"X-Forwarded-For": "198.51.100.99"}))


def test_forwarded_for_from_a_trusted_proxy_picks_the_right_most_untrusted_address(
    make_server: Callable[..., LiveServer], caplog: pytest.LogCaptureFixture
) -> None:
    live = make_server(
        RATE_BURST="2/day", RATE_GLOBAL="1000/day", LEVQOR_TRUSTED_PROXIES="127.0.0.1,10.0.0.0/8"
    )
    with live.client() as http, caplog.at_level(logging.INFO, logger="levqor.access"):
        # The client forged the left part; our proxies (10.x, then the peer) appended the rest.
        for forged in ("192.0.2.1", "192.0.2.2"):
            chain = f"{forged}, 203.0.113.50, 10.1.2.3"
            assert http.get(LIMITED, headers={"X-Forwarded-For": chain}).status_code == 404
        assert_refused(http.get(LIMITED, headers={"X-Forwarded-For": "192.0.2.3, 203.0.113.50, 10.9.9.9"}))
        # Someone else behind the same proxies has a limit of their own.
        assert http.get(LIMITED, headers={"X-Forwarded-For": "203.0.113.51, 10.1.2.3"}).status_code == 404
        # The access log line is written just after the response is sent: wait for the last one.
        deadline = time.monotonic() + 10
        while len(logged_clients(caplog)) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert set(logged_clients(caplog)) == {"203.0.113.50", "203.0.113.51"}


def logged_clients(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        str(record.__dict__.get("client_ip")) for record in caplog.records if record.name == "levqor.access"
    ]


def test_an_unreachable_redis_lets_requests_through_and_says_so(
    make_server: Callable[..., LiveServer], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="levqor.http.ratelimit"):
        live = make_server(RATE_BURST="1/day", LEVQOR_RATE_STORAGE="redis://127.0.0.1:1/0")
        with live.client() as http:
            for _ in range(3):
                response = http.get(LIMITED)
                assert response.status_code == 404
                assert "RateLimit-Limit" not in response.headers
    messages = [record.getMessage() for record in caplog.records]
    assert any("does not answer" in message for message in messages)
    assert any("not limited" in message for message in messages)


def test_worker_api_has_its_own_allowance(make_server: Callable[..., LiveServer]) -> None:
    """Remote workers poll and heartbeat often: the worker routes are charged to LEVQOR_RATE_WORKER,
    so a client that spent its allowance does not stop the workers, and the other way round."""
    live = make_server(RATE_BURST="2/day", RATE_GLOBAL="2/day", LEVQOR_RATE_WORKER="4/day")
    claim = {"worker_id": "w-limits", "workflows": ["echo"], "max_jobs": 1, "wait_s": 0}
    with live.client() as http:
        for _ in range(2):
            assert http.get(LIMITED).status_code == 404
        assert_refused(http.get(LIMITED))
        for remaining in (3, 2, 1, 0):
            response = http.post("/api/v1/workers/claim", json=claim)
            assert response.status_code == 204
            assert response.headers["RateLimit-Limit"] == "4"
            assert response.headers["RateLimit-Remaining"] == str(remaining)
        assert_refused(http.post("/api/v1/workers/claim", json=claim))
        stale = http.post(
            "/api/v1/jobs/00000000-0000-0000-0000-000000000000/heartbeat",
            json={"worker_id": "w-limits", "attempt": 1},
        )
        assert_refused(stale)
