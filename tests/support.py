"""Helpers the foundation tests share: GraphQL over HTTP, the contract's error body, row counts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import LiveServer, settings_for, start_live_server
from tests.conftest import _truncate as truncate_all

# Tables a rejected request must leave untouched.
WRITTEN_TABLES = ("users", "jobs", "job_events")
UNKNOWN_ID = "6f1c1a2e-0000-4000-8000-000000000000"


def gql(http: httpx.Client, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST a GraphQL request as the GraphQL-over-HTTP spec describes and return the decoded body."""
    body: dict[str, Any] = {"query": query}
    if variables is not None:
        body["variables"] = variables
    # ASCII escapes, so strings with lone surrogates can be sent as the JSON text they are.
    response = http.post(
        "/graphql",
        content=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Accept": "application/graphql-response+json"},
    )
    assert response.status_code in (200, 400), response.text
    assert response.headers["content-type"].startswith(("application/json", "application/graphql-response"))
    decoded: dict[str, Any] = response.json()
    return decoded


def gql_data(http: httpx.Client, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """A GraphQL request that must succeed without errors."""
    body = gql(http, query, variables)
    assert not body.get("errors"), body
    data: dict[str, Any] = body["data"]
    return data


def gql_error_code(body: dict[str, Any]) -> str:
    """The `extensions.code` of the one error of a GraphQL response."""
    errors = body.get("errors")
    assert errors, body
    assert len(errors) == 1, body
    code: str = errors[0]["extensions"]["code"]
    return code


def assert_error(
    response: httpx.Response, status: int, code: str, *, field: str | None = None
) -> dict[str, Any]:
    """The contract's REST error body (CONTRACT.md §4), with `details` naming `field` when given."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str), body
    assert body["message"], body
    assert body["request_id"] == response.headers["x-request-id"], body
    assert set(body) <= {"error", "message", "details", "request_id"}, body
    assert "Traceback" not in response.text
    assert "sqlalchemy" not in response.text.lower()
    if field is not None:
        fields = [detail.get("field") for detail in body.get("details", [])]
        assert field in fields, body
    return body


def levqor_on(db_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`levqor ARGS` as an operator runs it at the console, on the test's database."""
    env = {**os.environ, "LEVQOR_DATABASE_URL": "", "SQLITE_PATH": ""}
    if db_url.startswith("sqlite"):
        env["SQLITE_PATH"] = db_url.removeprefix("sqlite:///")
    else:
        env["LEVQOR_DATABASE_URL"] = db_url
    return subprocess.run(
        [sys.executable, "-m", "levqor", *args], env=env, capture_output=True, text=True, check=False, cwd=cwd
    )


def row_counts(db_url: str) -> dict[str, int]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return {
                table: int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
                for table in WRITTEN_TABLES
            }
    finally:
        engine.dispose()


def is_uuid(value: object) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


@contextmanager
def shared_server(request: pytest.FixtureRequest, db_kind: str, workdir: Path) -> Iterator[LiveServer]:
    """One live server for a whole module of read-mostly tests (tests that assert that a request
    changed nothing do not need a fresh database each)."""
    if db_kind == "sqlite":
        path = workdir / "levqor.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = str(request.getfixturevalue("pg_database_url"))
        truncate_all(url)
    live = start_live_server(settings_for(url))
    try:
        yield live
    finally:
        live.stop()
