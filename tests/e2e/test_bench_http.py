"""bench/http.py end to end, with tiny settings: it starts every server, loads every target and prints
one JSON line with each target, its reference, the ratio and the goal, and no non-2xx answer."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, service_unavailable


@pytest.fixture(autouse=True)
def wrk() -> None:
    if shutil.which("wrk") is None:
        service_unavailable("wrk", "not on PATH (apt-get install -y wrk)")


def test_a_short_run_reports_every_target_against_its_reference() -> None:
    command = [sys.executable, "bench/http.py", "--rounds", "1", "--duration", "1", "--warmup", "0"]
    command += ["--pool", "8", "--connections", "8", "--no-pin"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "http"
    assert result["valid"] is True, result["problems"]
    assert set(result["targets"]) == {
        "intake_sqlite",
        "status_sqlite",
        "graphql_submit_sqlite",
        "budget_intake_sqlite",
        "key_intake_sqlite",
    }
    references = {name: entry["reference"] for name, entry in result["targets"].items()}
    assert references == {
        "intake_sqlite": "tutorial_intake",
        "status_sqlite": "tutorial_status",
        "graphql_submit_sqlite": "intake",
        "budget_intake_sqlite": "key_intake",
        "key_intake_sqlite": "intake",
    }
    for entry in result["targets"].values():
        assert entry["rps"] > 0
        assert entry["reference_rps"] > 0
        assert entry["ratio"] > 0
        assert entry["result"] in ({"pass", "miss"} if entry["goal"] is not None else {"context", "miss"})
    assert result["non_2xx"]["counts"] == {"levqor-sqlite": 0, "tutorial-sqlite": 0, "bare": 0}
    assert result["settings"]["levqor_package"]["path"] == str(ROOT / "levqor" / "__init__.py")
