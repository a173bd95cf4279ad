"""The official GraphQL-over-HTTP audit (`graphql-http`'s `auditServer`) against a live server: no
error and no warning. Needs Node and npm; the audit's packages are pinned by
tests/graphql_http_audit/package-lock.json and installed there with `npm ci` when missing."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REQUIRE_SERVICES, LiveServer

AUDIT_DIR = Path(__file__).resolve().parent.parent / "graphql_http_audit"
NPM_CI_TIMEOUT_S = 120
AUDIT_TIMEOUT_S = 60


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if REQUIRE_SERVICES:
            pytest.fail(f"{name} is needed for the GraphQL-over-HTTP audit (LEVQOR_REQUIRE_SERVICES=1)")
        pytest.skip(f"{name} is not installed")
    return path


def audit_results(url: str) -> list[dict[str, Any]]:
    node = tool("node")
    if not (AUDIT_DIR / "node_modules" / "graphql-http").is_dir():
        subprocess.run(
            [tool("npm"), "ci", "--no-audit", "--no-fund"],
            cwd=AUDIT_DIR,
            check=True,
            capture_output=True,
            timeout=NPM_CI_TIMEOUT_S,
        )
    ran = subprocess.run(
        [node, "audit.mjs", url],
        cwd=AUDIT_DIR,
        check=True,
        capture_output=True,
        text=True,
        timeout=AUDIT_TIMEOUT_S,
    )
    results: list[dict[str, Any]] = json.loads(ran.stdout)
    return results


@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_the_graphql_over_http_audit_passes_without_warnings(server: LiveServer, db_kind: str) -> None:
    results = audit_results(f"{server.url}/graphql")
    assert len(results) > 30  # the audit ran: graphql-http 1.x has about fifty
    failed = [result for result in results if result["status"] != "ok"]
    assert not failed, json.dumps(failed, indent=1)
