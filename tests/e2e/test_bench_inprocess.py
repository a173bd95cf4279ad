"""bench/inprocess.py end to end, with tiny settings: one JSON line with every target's CPU time."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_a_short_run_measures_every_target() -> None:
    command = [sys.executable, "-m", "bench.inprocess", "--requests", "64", "--warmup", "32"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "inprocess"
    assert set(result["targets"]) == {"status", "intake", "graphql_submit"}
    for figures in result["targets"].values():
        assert figures["cpu_us_per_request"] > 0
