"""API keys never appear in clear: not in the server's log, not in error bodies, not in the database."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from tests.conftest import start_server_process, stop_server_process

STATIC = "static-secret-never-logged-7f3a9c"
GUESSED = "lvq_guessed-secret-never-logged-000000000000000"
NOT_A_KEY = "plain-guess-never-logged-1b2c3d"


def database_text(db_url: str) -> str:
    """Every row of every table, as text (PostgreSQL), or the SQLite files' bytes with their WAL."""
    if db_url.startswith("sqlite"):
        path = Path(make_url(db_url).database or "")
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        return "".join(file.read_bytes().decode("latin-1") for file in files if file.exists())
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return "\n".join(
                str(row[0])
                for table in SQLModel.metadata.sorted_tables
                for row in conn.execute(text(f'SELECT row_to_json(t)::text FROM "{table.name}" t'))
            )
    finally:
        engine.dispose()


def test_keys_are_never_in_clear(db_url: str, tmp_path: Path) -> None:
    env = {
        "API_KEYS": STATIC,
        "LEVQOR_LOG_FORMAT": "json",
        "LEVQOR_INPROCESS_WORKER": "false",
        "RATE_BURST": "1000000",
        "RATE_GLOBAL": "1000000",
    }
    if db_url.startswith("sqlite"):
        env["SQLITE_PATH"] = make_url(db_url).database or ""
    else:
        env["LEVQOR_DATABASE_URL"] = db_url
    proc = start_server_process(env, tmp_path / "server.log")
    bodies: list[str] = []
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as http:

            def call(method: str, path: str, key: str | None, **kwargs: object) -> httpx.Response:
                headers = {"X-Api-Key": key} if key else {}
                response = http.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
                bodies.append(response.text)
                return response

            made = http.post(
                "/api/v1/keys", json={"name": "n", "scopes": ["jobs:write"]}, headers={"X-Api-Key": STATIC}
            )
            managed, managed_id = made.json()["secret"], made.json()["key"]["id"]
            intake = {"workflow": "echo", "payload": {"note": "hello"}}
            assert call("POST", "/api/v1/intake", managed, json=intake).status_code == 202
            assert call("POST", "/api/v1/intake", STATIC, json=intake).status_code == 202
            assert call("GET", "/api/v1/keys", managed).status_code == 403
            assert call("GET", "/api/v1/keys", STATIC).status_code == 200
            assert call("GET", "/health", GUESSED).status_code == 401
            assert call("GET", "/api/v1/jobs", NOT_A_KEY).status_code == 401
            assert call("POST", "/graphql", GUESSED, json={"query": "{ health { ok } }"}).status_code == 401
            # A secret pasted into the wrong field does not come back in the error.
            misplaced = {"name": "x", "scopes": [managed, STATIC]}
            assert call("POST", "/api/v1/keys", STATIC, json=misplaced).status_code == 400
            assert call("DELETE", f"/api/v1/keys/{managed_id}", STATIC).status_code == 200
            assert call("POST", "/api/v1/intake", managed, json=intake).status_code == 401
    finally:
        stop_server_process(proc)

    log = proc.log()
    secrets = (STATIC, managed, GUESSED, NOT_A_KEY)
    for secret in secrets:
        assert secret not in log
        assert all(secret not in body for body in bodies), secret
    stored = database_text(db_url)
    for secret in secrets:
        assert secret not in stored
    # What is stored and logged instead: the hash, and key ids that name the key but cannot be used.
    assert hashlib.sha256(managed.encode()).hexdigest() in stored
    access = [json.loads(line) for line in log.splitlines() if '"levqor.access"' in line]
    key_ids = {entry.get("key_id") for entry in access}
    static_id = "static:" + hashlib.sha256(STATIC.encode()).hexdigest()[:12]
    assert {managed_id, static_id} <= key_ids
