"""The middleware stack `create_app` lists: every kind of answer carries the security headers, the
request id and the rate-limit headers; errors come in the contract's body; the stack is Starlette's,
so `add_middleware` works; a caller's request id is echoed only when it is inert."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import httpx
import pytest
import uvicorn
from starlette.middleware.gzip import GZipMiddleware

from levqor.http.app import create_app
from levqor.http.server_protocol import HeadLimitedProtocol
from tests.conftest import LiveServer, serve_in_thread, settings_for
from tests.integration.test_headers_cors import assert_seed_headers
from tests.ops_support import table_out_of_service
from tests.support import assert_error

UNKNOWN_JOB = "6f1c1a2e-0000-4000-8000-000000000000"
KEY = "stack-test-key"
LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")
MINTED_ID = re.compile(r"[0-9a-f]{32}")

Call = Callable[[httpx.Client], httpx.Response]


@pytest.fixture
def keyed(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(API_KEYS=KEY)


@pytest.fixture
def http(keyed: LiveServer) -> Iterator[httpx.Client]:
    with keyed.client(headers={"X-Api-Key": KEY}) as client:
        yield client


EVERY_ANSWER: dict[str, tuple[int, Call]] = {
    "success": (200, lambda c: c.get("/api/v1/jobs")),
    "accepted": (202, lambda c: c.post("/api/v1/intake", json={"workflow": "echo", "payload": {}})),
    "bad input": (400, lambda c: c.post("/api/v1/intake", json={"workflow": 7})),
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
    http: httpx.Client, kind: str, origin: str | None
) -> None:
    status, call = EVERY_ANSWER[kind]
    if origin is not None:
        http.headers["Origin"] = origin
    response = call(http)
    assert response.status_code == status, response.text
    assert_seed_headers(response)
    for name in LIMIT_HEADERS:
        assert len(response.headers.get_list(name)) == 1, (kind, response.headers)
    assert "Origin" in response.headers["Vary"]
    if origin is not None:
        assert response.headers["Access-Control-Allow-Origin"] == origin
    if status >= 400 and kind != "head":
        assert response.json()["request_id"] == response.headers["X-Request-Id"]


def test_a_wrong_key_is_refused_with_a_challenge(keyed: LiveServer) -> None:
    with keyed.client() as client:
        for path in ("/api/v1/jobs", "/health", "/graphql"):
            response = client.get(path, headers={"X-Api-Key": "wrong"})
            assert response.status_code == 401, path
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="levqor"'
            assert_seed_headers(response)
        rest = client.get("/api/v1/jobs", headers={"X-Api-Key": "wrong"})
    assert_error(rest, 401, "unauthorized")


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


def test_an_unexpected_exception_is_internal_error_with_the_request_id(
    http: httpx.Client, db_url: str
) -> None:
    with table_out_of_service(db_url, "jobs"):
        plain = http.get(f"/api/v1/status/{UNKNOWN_JOB}")
        cors = http.get(f"/api/v1/status/{UNKNOWN_JOB}", headers={"Origin": "https://levqor.ai"})
    for response in (plain, cors):
        assert response.status_code == 500
        assert_seed_headers(response)
        assert response.json() == {
            "error": "internal_error",
            "message": "internal server error",
            "request_id": response.headers["X-Request-Id"],
        }
        assert all(name in response.headers for name in LIMIT_HEADERS)
    assert plain.headers["Vary"] == "Origin"
    # Inside CORS, so that a browser page can read the id it quotes.
    assert cors.headers["Access-Control-Allow-Origin"] == "https://levqor.ai"


def test_the_metrics_label_a_request_with_its_route_template(http: httpx.Client) -> None:
    http.get("/api/v1/status/a%20b")
    text = http.get("/metrics").text
    assert 'route="/api/v1/status/{job_id}",status="404"' in text
    # The raw path is never a label value, decoded or not.
    assert "/status/a b" not in text
    assert "/status/a%20b" not in text


def test_a_refused_preflight_is_the_contract_error_with_the_request_id(http: httpx.Client) -> None:
    response = http.options(
        "/api/v1/intake",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert_error(response, 403, "forbidden")
    assert response.json()["request_id"] == response.headers["X-Request-Id"]
    assert "Access-Control-Allow-Origin" not in response.headers
    assert_seed_headers(response)


@pytest.mark.parametrize(
    "sent",
    [
        "<script>alert(1)</script>",
        "a b",
        "x" * 129,
        "id\twith-tab",
        "é-not-ascii".encode(),
        "",
    ],
)
def test_a_request_id_that_is_not_inert_is_replaced(http: httpx.Client, sent: str | bytes) -> None:
    response = http.get("/health", headers={"X-Request-Id": sent})
    assert response.status_code == 200
    assert MINTED_ID.fullmatch(response.headers["X-Request-Id"]), response.headers["X-Request-Id"]


@pytest.mark.parametrize(
    "sent", ["6f1c1a2e-0000-4000-8000-000000000000", "01HZX3T7M8Q9", "trace.span:42_a-b", "x" * 128]
)
def test_a_plain_request_id_is_kept_so_traces_join_up(http: httpx.Client, sent: str) -> None:
    response = http.post("/api/v1/intake", json={"workflow": 7}, headers={"X-Request-Id": sent})
    assert response.headers["X-Request-Id"] == sent
    assert response.json()["request_id"] == sent


def test_middleware_added_to_the_app_runs(db_url: str) -> None:
    """The stack is Starlette's: `add_middleware` wraps it, here compressing what Levqor answers."""
    settings = settings_for(db_url)
    app = create_app(settings)
    app.add_middleware(GZipMiddleware, minimum_size=200)
    config = uvicorn.Config(
        app,
        log_config=None,
        lifespan="on",
        access_log=False,
        http=HeadLimitedProtocol.with_limits(settings),
    )
    server, thread, port = serve_in_thread(config)
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/openapi.json", headers={"Accept-Encoding": "gzip"})
        raw = httpx.get(f"http://127.0.0.1:{port}/openapi.json", headers={"Accept-Encoding": "identity"})
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert int(response.headers["Content-Length"]) < len(raw.content)
    assert_seed_headers(response)
    assert response.json() == raw.json()
