"""Schemathesis against a real `levqor serve`: every check, bounded examples, a fixed seed, zero failures.

Run twice on a fresh SQLite database each: in development mode (no key configured) and with a static
API key. What the run is told beyond the document, and why, is in `tests/e2e/schemathesis_hooks.py`
and in `run_schemathesis` below.
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import TEST_WEBHOOK_SECRET, ServerProcess, start_server_process, stop_server_process
from tests.e2e.schemathesis_hooks import USER_ID_VARIABLE

ST = Path(sys.executable).with_name("st")
SEED = 1
MAX_EXAMPLES = 8  # per operation and phase; both runs together take about 50 s on two cores
STATIC_KEY = "fuzz-static-key-0123456789abcdef"
# CPython 3.11 before 3.11.8 can raise this from `ast` deep in Hypothesis' recursion (gh-106905):
# an error of the test tool's interpreter, reported as a Schemathesis error, never as a failure.
INTERPRETER_BUG = "AST constructor recursion depth mismatch"


def server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "SQLITE_PATH": str(tmp_path / "levqor.db"),
        "LEVQOR_LOG_FORMAT": "json",
        "RATE_BURST": "1000000",
        "RATE_GLOBAL": "1000000",
        "LEVQOR_RATE_KEY": "1000000",
        "LEVQOR_INPROCESS_WORKER": "false",
        "LEVQOR_DATABASE_URL": "",
        # As every test server: callback URLs are not resolved (no DNS here; the guard has its own
        # tests), and callbacks have a secret to be signed with.
        "LEVQOR_CALLBACK_ALLOW_PRIVATE": "true",
        "LEVQOR_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
        **extra,
    }


@pytest.fixture
def fuzz_server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    env = server_env(tmp_path, **getattr(request, "param", {}))
    proc = start_server_process(env, tmp_path / "server.log")
    yield proc, env
    stop_server_process(proc)


def schema_location(proc: ServerProcess) -> list[str]:
    """The served /openapi.json, which names the registered workflows (an unknown one is refused)."""
    served = httpx.get(f"{proc.url}/openapi.json", timeout=10).json()
    assert "oneOf" in served["components"]["schemas"]["JobSubmitInput"]
    return [f"{proc.url}/openapi.json"]


def known_user(proc: ServerProcess, headers: dict[str, str]) -> str:
    response = httpx.post(
        f"{proc.url}/api/v1/users/upsert",
        json={"email": "fuzz@example.com", "name": "Fuzz"},
        headers=headers,
        timeout=10,
    )
    assert response.status_code == 201, response.text
    user_id: str = response.json()["user"]["id"]
    return user_id


def run_schemathesis(location: list[str], tmp_path: Path, user_id: str, *args: str) -> SchemathesisRun:
    junit = tmp_path / "schemathesis.xml"
    command = [
        str(ST),
        "run",
        *location,
        "--checks",
        "all",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        str(SEED),
        "--generation-database",
        "none",
        "--workers",
        "2",
        "--request-timeout",
        "10",
        # Every string field refuses U+0000 and unpaired surrogates, on purpose: PostgreSQL's jsonb
        # and text cannot store them (levqor.resolvers.validation.check_json_value).
        "--generation-allow-x00",
        "false",
        "--generation-codec",
        "utf-8",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(junit),
        *args,
    ]
    env = {
        "PATH": str(ST.parent),
        "SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks",
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        USER_ID_VARIABLE: user_id,
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    report = ET.parse(junit).getroot()
    failures: list[str] = []
    errors: list[str] = []
    for case in report.iter("testcase"):
        for outcome in case:
            text = f"{case.get('name')}: {outcome.get('message') or ''}\n{outcome.text or ''}"
            if outcome.tag == "failure":
                failures.append(text)
            elif outcome.tag == "error" and INTERPRETER_BUG not in text:
                errors.append(text)
    return SchemathesisRun(
        operations=int(report.get("tests", "0")),
        output=done.stdout + done.stderr,
        failures=failures,
        errors=errors,
    )


@dataclass(frozen=True)
class SchemathesisRun:
    operations: int  # as the JUnit report counts them
    output: str
    failures: list[str]
    errors: list[str]  # the run's own errors, less the interpreter bug above


def assert_clean(result: SchemathesisRun, operations: int) -> None:
    tail = result.output[-20_000:]
    assert result.operations >= operations, tail
    assert result.failures == [], tail
    assert result.errors == [], tail


def test_schemathesis_finds_nothing_in_development_mode(
    fuzz_server: tuple[ServerProcess, dict[str, str]], tmp_path: Path
) -> None:
    proc, _env = fuzz_server
    result = run_schemathesis(
        schema_location(proc),
        tmp_path,
        known_user(proc, {}),
        # Development mode lets every request through without a key (CONTRACT.md §5), which is
        # what `ignored_auth` reports; the keyed run below checks authentication.
        "--exclude-checks",
        "ignored_auth",
        # The first managed key ends development mode for good: every later request would be a 401.
        "--exclude-operation-id",
        "post_api_v1_keys",
    )
    assert_clean(result, operations=28)


@pytest.mark.parametrize("fuzz_server", [{"API_KEYS": STATIC_KEY}], indirect=True)
def test_schemathesis_finds_nothing_with_an_api_key(
    fuzz_server: tuple[ServerProcess, dict[str, str]], tmp_path: Path
) -> None:
    proc, _env = fuzz_server
    headers = {"X-Api-Key": STATIC_KEY}
    result = run_schemathesis(
        schema_location(proc),
        tmp_path,
        known_user(proc, headers),
        "--header",
        f"X-Api-Key: {STATIC_KEY}",
    )
    assert_clean(result, operations=29)
