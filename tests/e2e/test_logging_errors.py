"""The access log, the global error handler and GraphQL masking, read from a `levqor serve` subprocess."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, start_server_process, stop_server_process
from tests.ops_support import server_env, table_out_of_service, wait_for_entries

STATIC_KEY = "static-key-" + "7" * 24
UNKNOWN_JOB = "6f1c1a2e-0000-4000-8000-000000000000"
ACCESS_FIELDS = {"method", "path", "status", "duration_ms", "client_ip", "user_agent", "request_id", "key_id"}
LEAK_MARKERS = ("Traceback", "SELECT", "jobs_out_of_service", "no such table", "does not exist", "psycopg")


@pytest.fixture
def keyed_server(db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start_server_process(server_env(db_url, API_KEYS=STATIC_KEY), tmp_path / "server.log")
    yield proc
    stop_server_process(proc)


def access_lines(proc: ServerProcess, request_id: str, count: int = 1) -> list[dict[str, object]]:
    return wait_for_entries(
        proc,
        lambda e: e.get("logger") == "levqor.access" and e.get("request_id") == request_id,
        count,
    )


def test_one_json_line_per_request_with_who_and_how_but_never_the_key(keyed_server: ServerProcess) -> None:
    with httpx.Client(base_url=keyed_server.url, headers={"User-Agent": "levqor-log-test/1.0"}) as http:
        accepted = http.post(
            "/api/v1/intake",
            json={"workflow": "echo", "payload": {"n": 1}},
            headers={"X-Api-Key": STATIC_KEY},
        )
        assert accepted.status_code == 202
        bearer = http.get("/api/v1/ops/health", headers={"Authorization": f"Bearer {STATIC_KEY}"})
        assert bearer.status_code == 200
        wrong = http.get("/health", headers={"X-Api-Key": STATIC_KEY + "-wrong"})
        assert wrong.status_code == 401

    (line,) = access_lines(keyed_server, accepted.headers["X-Request-Id"])
    assert set(line) >= ACCESS_FIELDS
    assert line["method"] == "POST"
    assert line["path"] == "/api/v1/intake"
    assert line["status"] == 202
    assert isinstance(line["duration_ms"], float | int)
    assert line["duration_ms"] >= 0
    assert line["client_ip"] == "127.0.0.1"
    assert line["user_agent"] == "levqor-log-test/1.0"
    assert line["level"] == "info"
    # The key's id is a digest prefix: it names the key without revealing it.
    assert line["key_id"] == "static:" + hashlib.sha256(STATIC_KEY.encode()).hexdigest()[:12]

    (bearer_line,) = access_lines(keyed_server, bearer.headers["X-Request-Id"])
    assert bearer_line["key_id"] == line["key_id"]
    (refused,) = access_lines(keyed_server, wrong.headers["X-Request-Id"])
    assert refused["status"] == 401
    assert refused["key_id"] is None

    log = keyed_server.log()
    assert STATIC_KEY not in log  # neither the key nor the wrong key that contains it


def test_an_unexpected_error_answers_internal_error_and_logs_the_traceback_with_the_id(
    keyed_server: ServerProcess, db_url: str
) -> None:
    with (
        httpx.Client(base_url=keyed_server.url, headers={"X-Api-Key": STATIC_KEY}) as http,
        table_out_of_service(db_url, "jobs"),
    ):
        response = http.get(f"/api/v1/status/{UNKNOWN_JOB}")
    request_id = response.headers["X-Request-Id"]
    assert response.status_code == 500
    assert response.json() == {
        "error": "internal_error",
        "message": "internal server error",
        "request_id": request_id,
    }
    assert not any(marker in response.text for marker in LEAK_MARKERS)

    (error,) = wait_for_entries(
        keyed_server, lambda e: e.get("logger") == "levqor.errors" and e.get("request_id") == request_id
    )
    assert error["level"] == "error"
    assert error["path"] == f"/api/v1/status/{UNKNOWN_JOB}"
    assert "Traceback" in error["exc"]
    assert "jobs" in error["exc"]  # the driver's complaint about the table is in the log, not the answer
    (line,) = access_lines(keyed_server, request_id)
    assert line["status"] == 500


def test_graphql_masks_unexpected_errors_the_same_way(keyed_server: ServerProcess, db_url: str) -> None:
    query = {"query": "query($id: ID!) { job(id: $id) { id status } }", "variables": {"id": UNKNOWN_JOB}}
    with (
        httpx.Client(base_url=keyed_server.url, headers={"X-Api-Key": STATIC_KEY}) as http,
        table_out_of_service(db_url, "jobs"),
    ):
        response = http.post("/graphql", json=query)
    request_id = response.headers["X-Request-Id"]
    body = response.json()
    assert body["data"] == {"job": None}  # the field is nullable: the error nulls it alone
    (error,) = body["errors"]
    assert error["message"] == "internal server error"
    assert error["extensions"] == {"code": "INTERNAL_SERVER_ERROR", "request_id": request_id}
    assert not any(marker in response.text for marker in LEAK_MARKERS)

    (logged,) = wait_for_entries(
        keyed_server, lambda e: e.get("logger") == "levqor.errors" and e.get("request_id") == request_id
    )
    assert "Traceback" in logged["exc"]


def test_expected_graphql_errors_keep_their_code_and_message(keyed_server: ServerProcess) -> None:
    missing = str(uuid.uuid4())
    with httpx.Client(base_url=keyed_server.url, headers={"X-Api-Key": STATIC_KEY}) as http:
        body = http.post("/graphql", json={"query": f'{{ job(id: "{missing}") {{ id }} }}'}).json()
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "NOT_FOUND"
    assert error["message"] != "internal server error"
