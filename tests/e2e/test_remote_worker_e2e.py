"""`levqor serve` as a subprocess with remote workers only: a remote worker killed with SIGKILL
mid-job loses its lease, another remote worker retries the job, it succeeds exactly once, and the
killed attempt's late completion gets 409."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from levqor.client import AsyncLevqorClient, JobRun, LeaseLost, LevqorClient, RemoteWorker
from tests.conftest import ROOT, ServerProcess, start_server_process, stop_server_process

LEASE_S = 2


@pytest.fixture
def remote_only_server(db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    env = {
        "LEVQOR_LOG_FORMAT": "json",
        "RATE_BURST": "1000000",
        "RATE_GLOBAL": "1000000",
        "LEVQOR_INPROCESS_WORKER": "false",  # no Levqor worker anywhere: remote workers only
        "LEVQOR_WORKFLOWS": "tests.remote_workflows",
        "LEVQOR_RETRY_BASE_MS": "10",
        "PYTHONPATH": str(ROOT),
    }
    if db_url.startswith("sqlite"):
        env["SQLITE_PATH"] = make_url(db_url).database or ""
    else:
        env["LEVQOR_DATABASE_URL"] = db_url
    proc = start_server_process(env, tmp_path / "server.log")
    yield proc
    stop_server_process(proc)


def wait_for_line(process: subprocess.Popen[str], prefix: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith(prefix):
            return line.strip()
        if not line and process.poll() is not None:
            break
    raise AssertionError(f"the remote worker never printed {prefix!r}")


def test_a_killed_remote_worker_loses_the_job_to_another(remote_only_server: ServerProcess) -> None:
    url = remote_only_server.url
    with LevqorClient(url) as client:
        job_id = client.submit("remote.task", {"n": 1}, max_attempts=3)
        doomed = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.remote_worker_process", url, "doomed-worker", str(LEASE_S)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert wait_for_line(doomed, "running", 60) == f"running {job_id} 1"
            doomed.kill()  # SIGKILL: no goodbye, no report
            doomed.wait(timeout=30)
        finally:
            if doomed.poll() is None:
                doomed.kill()
            if doomed.stdout is not None:
                doomed.stdout.close()
        assert client.get(job_id).status == "running"  # until the lease runs out

        async def take_over() -> None:
            async def finish(payload: dict[str, Any], run: JobRun) -> dict[str, Any]:
                return {"by": "the survivor", "attempt": run.job.attempt, **payload}

            async with AsyncLevqorClient(url) as api:
                survivor = RemoteWorker(api, {"remote.task": finish}, wait_s=1, lease_s=LEASE_S)
                serving = asyncio.create_task(survivor.run())
                try:
                    await api.wait(job_id, timeout_s=60)
                finally:
                    survivor.stop()
                    await asyncio.wait_for(serving, timeout=30)

        asyncio.run(take_over())
        job = client.get(job_id)
        assert (job.status, job.attempts) == ("succeeded", 2)
        assert job.result == {"by": "the survivor", "attempt": 2, "n": 1}
        types = [(event["type"], event["attempt"], event["worker_id"]) for event in job.events]
        assert types[:3] == [
            ("submitted", 0, None),
            ("claimed", 1, "doomed-worker"),
            ("lease_expired", 1, "doomed-worker"),
        ]
        assert [event for event in types if event[0] == "succeeded"] == [types[-1]]
        assert types[-2][:2] == ("claimed", 2)

        with pytest.raises(LeaseLost):
            client.complete(job_id, "doomed-worker", 1, {"late": True})
        assert client.get(job_id).result == job.result
