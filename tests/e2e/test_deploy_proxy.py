"""What the deploy/ nginx site does in front of a real server: the limits it enforces answer with
Levqor's error body, the client address Levqor counts is the one nginx saw (never what a client
wrote), request ids pass through, server-sent events arrive while the stream is open, and GraphQL
subscriptions upgrade to a WebSocket through it; and its TLS lines, uncommented, serve HTTPS."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect

from tests.conftest import LiveServer, free_port, settings_for, start_live_server
from tests.deploy_support import Nginx, enable_tls, self_signed_certificate, start_nginx
from tests.queue_support import wait_for

LEVQOR_BODY_LIMIT = 4096  # below nginx's 1 MiB, so that Levqor's own refusal shows through the proxy


@pytest.fixture
def db_kind() -> str:
    return "sqlite"  # what is tested is the proxy: one database is enough


@pytest.fixture
def upstream(db_url: str) -> Iterator[LiveServer]:
    live = start_live_server(
        settings_for(db_url, LEVQOR_TRUSTED_PROXIES="127.0.0.1", LEVQOR_MAX_BODY_BYTES=str(LEVQOR_BODY_LIMIT))
    )
    yield live
    live.stop()


@pytest.fixture
def proxy(upstream: LiveServer, tmp_path: Path) -> Iterator[Nginx]:
    nginx = start_nginx(tmp_path / "nginx", [int(upstream.url.rsplit(":", 1)[1])])
    yield nginx
    nginx.stop()


def assert_levqor_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"] == code
    assert body["message"]


def test_bodies_and_heads_past_the_limits_get_levqor_s_error_body(proxy: Nginx) -> None:
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        assert_levqor_error(
            http.post("/api/v1/intake", content=b"x" * (1024 * 1024 + 1)), 413, "payload_too_large"
        )
        # Under nginx's limit and over Levqor's: Levqor's own answer, through the proxy.
        too_big = {"workflow": "echo", "payload": {"blob": "x" * LEVQOR_BODY_LIMIT}}
        refused = http.post("/api/v1/intake", json=too_big)
        assert_levqor_error(refused, 413, "payload_too_large")
        assert "request_id" in refused.json()
        assert_levqor_error(http.get("/health", headers={"X-Padding": "p" * 9000}), 431, "invalid_request")
        assert http.get("/health", headers={"X-Padding": "p" * 4000}).status_code == 200


def test_a_server_that_does_not_answer_gets_a_json_502(tmp_path: Path) -> None:
    nginx = start_nginx(tmp_path / "nginx", [free_port()])
    try:
        answer = httpx.get(f"{nginx.url}/health", timeout=30)
    finally:
        nginx.stop()
    assert_levqor_error(answer, 502, "unavailable")
    assert answer.headers["retry-after"] == "2"


def test_levqor_counts_the_address_nginx_saw_not_the_one_a_client_wrote(
    proxy: Nginx, upstream: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    spoofed = {"X-Forwarded-For": "203.0.113.9"}
    with caplog.at_level(logging.INFO, logger="levqor.access"):
        through_proxy = httpx.get(f"{proxy.url}/health", headers={**spoofed, "X-Request-Id": "through-nginx"})
        direct = httpx.get(f"{upstream.url}/health", headers={**spoofed, "X-Request-Id": "direct"})

        def seen() -> dict[str, str] | None:
            # A request's line is written once its answer is sent: the client may read it first.
            lines = {
                record.__dict__["request_id"]: record.__dict__["client_ip"]
                for record in caplog.records
                if record.name == "levqor.access"
            }
            return lines if len(lines) == 2 else None

        client_ips = wait_for(seen, timeout_s=10, what="both access log lines")
    assert (through_proxy.status_code, direct.status_code) == (200, 200)
    assert through_proxy.headers["x-request-id"] == "through-nginx"  # the caller's id passes through
    # nginx replaced the header with the address it saw; straight from a trusted peer it is believed.
    assert client_ips == {"through-nginx": "127.0.0.1", "direct": "203.0.113.9"}


def test_events_stream_through_nginx_as_they_happen(proxy: Nginx) -> None:
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        job_id = http.post("/api/v1/intake", json={"workflow": "echo", "payload": {"n": 1}}).json()["job_id"]
        with http.stream("GET", f"/api/v1/jobs/{job_id}/events/stream") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            # The job's current state came through while the stream is open and the job waits.
            assert json.loads(first.removeprefix("data: "))["status"] == "queued"
            completed = http.post(f"/api/v1/_dev/complete/{job_id}", json={"result": {"done": True}})
            assert completed.status_code == 200, completed.text
            statuses = [
                json.loads(line.removeprefix("data: "))["status"]
                for line in lines
                if line.startswith("data: ")
            ]
    assert statuses[-1] == "succeeded"


def test_graphql_subscriptions_upgrade_through_nginx(proxy: Nginx) -> None:
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        job_id = http.post("/api/v1/intake", json={"workflow": "echo", "payload": {}}).json()["job_id"]
        assert http.post(f"/api/v1/_dev/complete/{job_id}", json={"result": {}}).status_code == 200
    url = proxy.url.replace("http://", "ws://") + "/graphql"
    with connect(url, subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "graphql-transport-ws"
        ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        query = "subscription($id: ID!) { jobUpdates(id: $id) { jobId status } }"
        ws.send(
            json.dumps(
                {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": {"id": job_id}}}
            )
        )
        update = json.loads(ws.recv(timeout=10))
        assert update["type"] == "next", update
        assert update["payload"]["data"]["jobUpdates"] == {"jobId": job_id, "status": "SUCCEEDED"}
        assert json.loads(ws.recv(timeout=10)) == {"id": "1", "type": "complete"}


def test_the_tls_lines_once_uncommented_serve_https(upstream: LiveServer, tmp_path: Path) -> None:
    certificate, key = self_signed_certificate(tmp_path)
    tls_port = free_port()
    nginx = start_nginx(
        tmp_path / "nginx",
        [int(upstream.url.rsplit(":", 1)[1])],
        edit=lambda site: enable_tls(site, certificate, key, tls_port),
    )
    try:
        with httpx.Client(
            base_url=f"https://127.0.0.1:{tls_port}",
            verify=ssl.create_default_context(cafile=certificate),
            timeout=30,
        ) as https:
            answer = https.get("/health")
            intake = https.post("/api/v1/intake", json={"workflow": "echo", "payload": {}})
    finally:
        nginx.stop()
    assert answer.status_code == 200
    assert answer.json()["ok"] is True
    assert answer.headers["strict-transport-security"] == "max-age=63072000"
    assert intake.status_code == 202
