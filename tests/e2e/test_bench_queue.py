"""bench/queue.py end to end, with tiny settings: every system drains every job, each recorded as
succeeded once; the JSON line has each system's figures, both ratios with their reference and goal,
and the pickup latency of every case. No speed is asserted: timings live in the benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from urllib.parse import urlsplit

import pytest
from sqlalchemy import create_engine

from tests.conftest import PG_URL, ROOT, service_unavailable

JOBS = 200
LATENCY_SAMPLES = 10
RUN_STEPS = 50
KINDS = {"sqlite", "postgres"}


@pytest.fixture
def postgres_admin_url() -> str:
    admin = create_engine(PG_URL)
    try:
        with admin.connect():
            pass
    except Exception as exc:  # any driver error means the service is not there
        service_unavailable("PostgreSQL", exc)
        raise
    finally:
        admin.dispose()
    return PG_URL


def test_a_short_run_drains_every_job_of_every_system(postgres_admin_url: str, redis_url: str) -> None:
    command = [sys.executable, "-m", "bench.queue", "--jobs", str(JOBS), "--rounds", "1"]
    command += ["--latency-samples", str(LATENCY_SAMPLES), "--timeout", "60", "--run-steps", str(RUN_STEPS)]
    command += ["--pg-admin-url", postgres_admin_url]
    # The bench picks its own Redis databases on the server the suite was given.
    env = {**os.environ, "LEVQOR_BENCH_REDIS": urlsplit(redis_url)._replace(path="").geturl()}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])

    assert result["bench"] == "queue"
    assert result["jobs"] == JOBS
    assert set(result["levqor"]) == KINDS
    assert set(result["peers"]) == {"pgqueuer", "celery", "rq", "procrastinate"}
    assert result["all_jobs_succeeded"] is True
    for figures in [*result["levqor"].values(), *result["peers"].values()]:
        assert figures["succeeded"] == JOBS, figures
        assert figures["all_succeeded"] is True
        assert figures["jobs_per_s"] > 0
        assert figures["startup_s"] >= 0
        assert figures["drain_s"] > 0
        assert figures["wall_s"] >= figures["drain_s"]

    targets = result["targets"]
    assert targets["vs_pgqueuer"]["reference"] == "pgqueuer"
    assert targets["vs_faster_of_celery_rq"]["reference"] in {"celery", "rq"}
    for target in targets.values():
        assert set(target["ratio"]) == KINDS
        assert target["pass"] == {kind: ratio >= target["goal"] for kind, ratio in target["ratio"].items()}

    runs = result["runs"]
    assert runs["steps"] == RUN_STEPS
    assert runs["shape"] == f"1 root -> {RUN_STEPS - 2} -> 1 sink"
    for kind in KINDS:
        for side in ("run", "plain"):
            assert runs[side][kind]["succeeded"] == RUN_STEPS, runs
            assert runs[side][kind]["all_succeeded"] is True
        assert runs["ratio"][kind] > 0
    assert runs["pass"] == {kind: ratio <= runs["goal_at_most"] for kind, ratio in runs["ratio"].items()}

    assert set(result["pickup_latency"]) == {"in_process", "cross_process"}
    for cases in result["pickup_latency"].values():
        assert set(cases) == KINDS
        for case in cases.values():
            assert case["samples"] == LATENCY_SAMPLES
            assert 0 <= case["p50_ms"] <= case["p95_ms"] <= case["p99_ms"] <= case["max_ms"]
            assert case["pass"] == (case["p50_ms"] <= case["goal_p50_ms"])
