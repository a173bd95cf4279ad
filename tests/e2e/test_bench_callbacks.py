"""bench/callbacks.py end to end, with tiny settings: every delivery arrives once, signed, on SQLite
and PostgreSQL; the JSON line has both figures with their goals. No speed is asserted: timings live
in the benchmark."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.e2e.test_bench_queue import postgres_admin_url  # noqa: F401 (a fixture)

DELIVERIES = 100
SAMPLES = 5


@pytest.mark.timeout(180)
def test_a_short_run_delivers_every_callback_once(postgres_admin_url: str) -> None:  # noqa: F811
    command = [sys.executable, "-m", "bench.callbacks", "--deliveries", str(DELIVERIES)]
    command += ["--latency-samples", str(SAMPLES), "--timeout", "60", "--pg-admin-url", postgres_admin_url]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["bench"] == "callbacks"
    assert set(result["results"]) == {"sqlite", "postgres"}
    for kind, figures in result["results"].items():
        throughput, latency = figures["throughput"], figures["latency"]
        assert throughput["all_delivered_once"] is True, kind
        assert throughput["arrived"] == throughput["distinct_webhook_ids"] == DELIVERIES
        assert throughput["verified_signatures"] == 5
        assert throughput["deliveries_per_s"] > 0
        assert latency["samples"] == SAMPLES
        assert 0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["p99_ms"] <= latency["max_ms"]
        target = result["targets"][kind]
        assert target["deliveries_per_s"]["met"] == (throughput["deliveries_per_s"] >= 1000)
        assert target["completion_to_arrival_p50_ms"]["met"] == (latency["p50_ms"] <= 50)
