"""scripts/validate_levqor.py against `levqor serve`: green on a healthy server, red naming what broke."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, ServerProcess, free_port, start_server_process, stop_server_process
from tests.ops_support import server_env, table_out_of_service

SCRIPT = ROOT / "scripts" / "validate_levqor.py"
GREEN = "🟢 COCKPIT GREEN — Levqor backend validated"
KEY = "validate-key-" + "3" * 24


@pytest.fixture
def keyed_server(db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    proc = start_server_process(server_env(db_url, API_KEYS=KEY), tmp_path / "server.log")
    yield proc
    stop_server_process(proc)


def validate(base_url: str, api_key: str | None = KEY) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BASE_URL": base_url, "PYTHONIOENCODING": "utf-8"}
    env.pop("API_KEY", None)
    if api_key:
        env["API_KEY"] = api_key
    return subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_a_healthy_server_is_validated_green_over_both_surfaces(keyed_server: ServerProcess) -> None:
    done = validate(keyed_server.url)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert lines[-1] == GREEN
    assert not [line for line in lines if line.startswith("✗")]
    # Every route the server documents has a check of its own.
    assert not [line for line in lines if "not checked" in line], done.stdout
    checked = {line.split(" — ")[0][2:] for line in lines if line.startswith("✓")}
    for route in (
        "GET /",
        "GET /health",
        "GET /public/metrics",
        "POST /api/v1/intake",
        "GET /api/v1/status/{job_id}",
        "POST /api/v1/_dev/complete/{job_id}",
        "GET /api/v1/ops/health",
        "POST /api/v1/users/upsert",
        "GET /api/v1/users",
        "GET /api/v1/users/{user_id}",
        "PATCH /api/v1/users/{user_id}",
        "POST /api/v1/schedules",
        "GET /api/v1/schedules",
        "GET /api/v1/schedules/{schedule_id}",
        "PATCH /api/v1/schedules/{schedule_id}",
        "POST /api/v1/schedules/{schedule_id}/run",
        "DELETE /api/v1/schedules/{schedule_id}",
        "POST /api/v1/schedules (name taken)",
        "GET /api/v1/schedules (bad cursor)",
        "GET /metrics",
        "GET /legal/privacy",
        "GET /faq",
        "POST /graphql submitJob",
        "POST /graphql upsertUser",
        "POST /graphql schedules",
        "GET /graphql mutation",
    ):
        assert route in checked, route
    assert KEY not in done.stdout


def test_a_broken_route_fails_the_run_and_is_named(keyed_server: ServerProcess, db_url: str) -> None:
    with table_out_of_service(db_url, "users"):
        done = validate(keyed_server.url)
    lines = done.stdout.splitlines()
    assert done.returncode == 1, done.stdout
    assert GREEN not in done.stdout
    failed = [line for line in lines if line.startswith("✗")]
    assert any(line.startswith("✗ POST /api/v1/users/upsert — status 500") for line in failed), failed
    assert "POST /api/v1/users/upsert" in lines[-1]
    # The routes that do not touch users still pass.
    assert any(line.startswith("✓ POST /api/v1/intake —") for line in lines)
    assert not any("/api/v1/intake" in line for line in failed)


def test_a_wrong_key_fails_the_run(keyed_server: ServerProcess) -> None:
    done = validate(keyed_server.url, api_key="not-the-key")
    assert done.returncode == 1
    assert GREEN not in done.stdout


def test_no_server_is_its_own_exit_status() -> None:
    done = validate(f"http://127.0.0.1:{free_port()}")
    assert done.returncode == 2
    assert "unreachable" in done.stdout
