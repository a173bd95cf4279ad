"""`levqor.client` against a real server on both databases: a RemoteWorker serves workflows that are
registered by name only, and the client maps the API's answers to clear exceptions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from levqor.client import (
    AsyncLevqorClient,
    BadRequest,
    JobRun,
    LeaseLost,
    LevqorClient,
    NotFound,
    PermanentFailure,
    RemoteWorker,
)
from tests.conftest import LiveServer
from tests.support import UNKNOWN_ID

REMOTE_ENV = {"LEVQOR_WORKFLOWS": "tests.remote_workflows", "LEVQOR_RETRY_BASE_MS": "10"}


@pytest.fixture
def remote_server(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(**REMOTE_ENV)


@pytest.fixture
async def api(remote_server: LiveServer) -> AsyncIterator[AsyncLevqorClient]:
    async with AsyncLevqorClient(remote_server.url) as client:
        yield client


class Serving:
    """A RemoteWorker running in the test's event loop until the block ends."""

    def __init__(self, worker: RemoteWorker) -> None:
        self.worker = worker
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> RemoteWorker:
        self._task = asyncio.create_task(self.worker.run())
        return self.worker

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self.worker.stop()
        await asyncio.wait_for(self._task, timeout=30)


async def test_remote_worker_serves_a_name_only_workflow(api: AsyncLevqorClient) -> None:
    async def shout(payload: dict[str, Any], run: JobRun) -> dict[str, Any]:
        run.report_progress({"stage": "shouting"})
        run.cost = 0.002
        return {"text": payload["text"].upper(), "attempt": run.job.attempt}

    worker = RemoteWorker(api, {"remote.shout": shout}, concurrency=2, wait_s=2)
    async with Serving(worker):
        ids = [await api.submit("remote.shout", {"text": f"hello {n}"}) for n in range(4)]
        jobs = [await api.wait(job_id, timeout_s=30) for job_id in ids]

    for n, job in enumerate(jobs):
        assert job.status == "succeeded", job
        assert job.result == {"text": f"HELLO {n}", "attempt": 1}
        assert job.data["cost_actual_micros"] == 2_000
        claimed = [event for event in job.events if event["type"] == "claimed"]
        assert [event["worker_id"] for event in claimed] == [worker.worker_id]
    assert worker.reported == 4


async def test_remote_worker_reports_failures_and_retries(api: AsyncLevqorClient) -> None:
    async def task(payload: dict[str, Any], run: JobRun) -> dict[str, Any]:
        if payload["mode"] == "permanent":
            raise PermanentFailure("this payload can never work")
        if payload["mode"] == "flaky" and run.job.attempt == 1:
            raise RuntimeError("a transient upstream error")
        return {"mode": payload["mode"]}

    async with Serving(RemoteWorker(api, {"remote.task": task}, wait_s=1)):
        permanent = await api.submit("remote.task", {"mode": "permanent"})
        flaky = await api.submit("remote.task", {"mode": "flaky"})
        failed = await api.wait(permanent, timeout_s=30)
        recovered = await api.wait(flaky, timeout_s=30)

    assert (failed.status, failed.attempts) == ("failed", 1)
    assert failed.error == {"type": "PermanentFailure", "message": "this payload can never work"}
    assert (recovered.status, recovered.attempts, recovered.result) == ("succeeded", 2, {"mode": "flaky"})
    assert "retry_scheduled" in [event["type"] for event in recovered.events]


async def test_a_result_that_misfits_the_result_schema_fails_the_job(api: AsyncLevqorClient) -> None:
    async def label(payload: dict[str, Any], run: JobRun) -> dict[str, Any]:
        run.cost = 0.001
        return {"label": payload["label"]}

    worker = RemoteWorker(api, {"remote.shaped": label}, wait_s=1)
    async with Serving(worker):
        misfit = await api.wait(await api.submit("remote.shaped", {"label": 7}), timeout_s=30)
        fitting = await api.wait(await api.submit("remote.shaped", {"label": "cat"}), timeout_s=30)

    assert (misfit.status, misfit.attempts) == ("failed", 1)
    assert misfit.error is not None
    assert misfit.error["type"] == "invalid_result"
    assert [detail["field"] for detail in misfit.error["errors"]] == ["result.label"]
    assert misfit.data["cost_actual_micros"] == 1_000
    assert (fitting.status, fitting.result) == ("succeeded", {"label": "cat"})
    assert worker.reported == 2


async def test_a_plain_function_handler_runs_too(api: AsyncLevqorClient) -> None:
    def shout(payload: dict[str, Any], _run: JobRun) -> dict[str, Any]:
        return {"text": payload["text"].upper()}

    async with Serving(RemoteWorker(api, {"remote.shout": shout}, wait_s=1)):
        job = await api.wait(await api.submit("remote.shout", {"text": "sync"}), timeout_s=30)
    assert job.result == {"text": "SYNC"}


async def test_a_handler_past_its_timeout_is_stopped(api: AsyncLevqorClient) -> None:
    async def slow(_payload: dict[str, Any], _run: JobRun) -> dict[str, Any]:
        await asyncio.sleep(60)
        return {}

    async with Serving(RemoteWorker(api, {"remote.task": slow}, wait_s=1)):
        job_id = await api.submit("remote.task", {}, timeout_s=1, max_attempts=1)
        job = await api.wait(job_id, timeout_s=30)
    assert job.status == "failed"
    assert job.error is not None
    assert job.error["type"] == "timeout"


async def test_a_cancel_stops_the_running_handler(api: AsyncLevqorClient) -> None:
    started = asyncio.Event()

    async def slow(_payload: dict[str, Any], _run: JobRun) -> dict[str, Any]:
        started.set()
        await asyncio.sleep(60)
        return {}

    async with Serving(RemoteWorker(api, {"remote.task": slow}, wait_s=1, lease_s=3)):
        job_id = await api.submit("remote.task", {})
        await asyncio.wait_for(started.wait(), timeout=30)
        assert (await api.cancel(job_id)).status == "running"  # running: the worker is asked to stop
        job = await api.wait(job_id, timeout_s=30)
    assert job.status == "cancelled"


async def test_a_handler_reporting_past_its_budget_hold_is_stopped_by_its_next_heartbeat(
    api: AsyncLevqorClient, remote_server: LiveServer
) -> None:
    with httpx.Client(base_url=remote_server.url) as http:
        user = http.post("/api/v1/users/upsert", json={"email": "payer@example.com", "name": "Payer"})
        user_id = user.json()["user"]["id"]
        budget = {"period": "day", "limit_micros": 10}
        assert http.put(f"/api/v1/budgets/users/{user_id}", json=budget).status_code == 200
    cancelled = asyncio.Event()

    async def spender(_payload: dict[str, Any], run: JobRun) -> dict[str, Any]:
        run.report_cost(5, {"prompt_tokens": 7})  # the hold is 4
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    async with Serving(RemoteWorker(api, {"remote.priced": spender}, wait_s=1, lease_s=3)):
        job_id = await api.submit("remote.priced", {"estimate": 4}, user_id=user_id)
        job = await api.wait(job_id, timeout_s=30)
        await asyncio.wait_for(cancelled.wait(), timeout=10)
    assert job.status == "failed"
    assert job.error is not None
    assert job.error["type"] == "cost_exceeded"
    with httpx.Client(base_url=remote_server.url) as http:
        detail = http.get(f"/api/v1/jobs/{job_id}").json()
        [figures] = http.get("/api/v1/budgets").json()["budgets"]
    assert (detail["cost_actual_micros"], detail["tokens"]["prompt_tokens"]) == (5, 7)
    assert (figures["spent_micros"], figures["reserved_micros"]) == (5, 0)


async def test_a_worker_that_lost_its_lease_drops_the_job(
    api: AsyncLevqorClient, remote_server: LiveServer
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def held(_payload: dict[str, Any], _run: JobRun) -> dict[str, Any]:
        started.set()
        await release.wait()
        return {"from": "worker"}

    worker = RemoteWorker(api, {"remote.task": held}, wait_s=1, lease_s=3)
    async with Serving(worker):
        job_id = await api.submit("remote.task", {})
        await asyncio.wait_for(started.wait(), timeout=30)
        # Someone else finishes the job while the worker still runs it.
        with httpx.Client(base_url=remote_server.url) as http:
            done = http.post(f"/api/v1/_dev/complete/{job_id}", json={"result": {"from": "dev"}})
        assert done.status_code == 200, done.text
        release.set()
        await asyncio.sleep(1.5)  # the worker now reports (or heartbeats) and is told 409
    job = await api.get(job_id)
    assert (job.status, job.result) == ("succeeded", {"from": "dev"})
    assert worker.reported == 0


def test_the_sync_client_raises_clear_errors(remote_server: LiveServer) -> None:
    with LevqorClient(remote_server.url) as client:
        job_id = client.submit("remote.task", {"n": 1}, priority="high")
        [claimed] = client.claim("w-sync", ["remote.task"], max_jobs=5)
        assert (claimed.id, claimed.attempt, claimed.payload) == (job_id, 1, {"n": 1})
        assert client.claim("w-sync", ["remote.task"]) == []

        beat = client.heartbeat(job_id, "w-sync", 1, progress={"half": True})
        assert beat.cancel_requested is False
        with pytest.raises(LeaseLost) as lost:
            client.complete(job_id, "w-other", 1, {"x": 1})
        assert lost.value.status == 409
        assert lost.value.request_id
        with pytest.raises(NotFound):
            client.heartbeat(UNKNOWN_ID, "w-sync", 1)
        with pytest.raises(BadRequest) as bad:
            client.claim("w-sync", ["remote.task"], max_jobs=0)
        assert [detail["field"] for detail in bad.value.details] == ["max_jobs"]

        job = client.complete(job_id, "w-sync", 1, {"x": 1}, cost=0.25)
        assert (job.status, job.result, job.data["cost_actual_micros"]) == ("succeeded", {"x": 1}, 250_000)
        assert client.get(job_id).events[-1]["type"] == "succeeded"


async def test_the_remote_worker_rides_out_rate_limits(
    make_server: Callable[..., LiveServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Claims and reports that get 429 wait for Retry-After and go on; no job is lost or retried."""
    server = make_server(**REMOTE_ENV, LEVQOR_RATE_WORKER="6/second")
    with LevqorClient(server.url) as client:
        ids = [client.submit("remote.task", {"n": n}) for n in range(5)]

    async def task(payload: dict[str, Any], _run: JobRun) -> dict[str, Any]:
        return payload

    async with AsyncLevqorClient(server.url) as api:
        worker = RemoteWorker(api, {"remote.task": task}, wait_s=0)
        async with Serving(worker):
            for _ in range(600):  # no HTTP polling here: it would spend the same allowance
                if worker.reported == len(ids):
                    break
                await asyncio.sleep(0.05)
        assert worker.reported == len(ids)
        refused = [r for r in caplog.records if r.name == "levqor.client.worker" and "429" in str(r.__dict__)]
        assert refused, "the server never said 429: the test did not test anything"
        await asyncio.sleep(1.1)  # a fresh window for the checks below
        jobs = [await api.get(job_id) for job_id in ids]
    assert [(job.status, job.attempts, job.result) for job in jobs] == [
        ("succeeded", 1, {"n": n}) for n in range(5)
    ]


async def test_a_remote_worker_serves_the_steps_of_a_run_with_their_parents_results(
    api: AsyncLevqorClient, remote_server: LiveServer
) -> None:
    """A step is an ordinary job to a remote worker; what it adds is what its parents returned."""

    async def task(payload: dict[str, Any], run: JobRun) -> dict[str, Any]:
        parents = run.job.parents or {}
        return {
            "step": run.job.step_key,
            "sum": payload.get("n", 0) + sum(parent["result"]["sum"] for parent in parents.values()),
        }

    steps = [
        {"key": "one", "workflow": "remote.task", "payload": {"n": 1}},
        {"key": "two", "workflow": "remote.task", "payload": {"n": 2}},
        {"key": "total", "workflow": "remote.task", "payload": {}, "depends_on": ["one", "two"]},
    ]
    async with httpx.AsyncClient(base_url=remote_server.url) as http:
        accepted = (await http.post("/api/v1/runs", json={"steps": steps})).json()
        worker = RemoteWorker(api, {"remote.task": task}, concurrency=2, wait_s=2)
        async with Serving(worker):
            total = await api.wait(accepted["jobs"]["total"], timeout_s=30)
        run = (await http.get(f"/api/v1/runs/{accepted['run_id']}")).json()
    assert total.status == "succeeded", total
    assert total.result == {"step": "total", "sum": 3}
    assert run["status"] == "succeeded"
