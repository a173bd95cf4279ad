"""Live job updates of a job that a separate `levqor worker` process runs: the `jobUpdates`
subscription (a `gql` client over graphql-transport-ws) and the REST event stream (`httpx`, read
frame by frame) each see the job queued, running, its progress and its success, and then end; the
event stream resumes after `Last-Event-ID`. On SQLite the server hears of the worker's writes by
polling; on PostgreSQL by LISTEN/NOTIFY."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer
from tests.job_updates_support import (
    SseEvent,
    job_updates,
    sse_events,
    started,
    ws_client,
)
from tests.progress_workflows import PROGRESS_WORKFLOWS
from tests.queue_support import worker_processes

STEPS = 3
STREAM_TIMEOUT_S = 45


async def _subscribe(server: LiveServer, job_id: str, first_seen: asyncio.Event) -> list[dict[str, Any]]:
    updates: list[dict[str, Any]] = []
    async with ws_client(server) as session:
        async for item in session.subscribe(job_updates(job_id)):
            updates.append(item["jobUpdates"])
            first_seen.set()
    return updates  # the server completed the subscription


async def _stream(
    http: httpx.AsyncClient, job_id: str, first_seen: asyncio.Event, headers: dict[str, str] | None = None
) -> list[SseEvent]:
    events: list[SseEvent] = []
    async with http.stream("GET", f"/api/v1/jobs/{job_id}/events/stream", headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-encoding" not in response.headers  # nothing buffers it to compress it
        async for event in sse_events(response.aiter_text()):
            events.append(event)
            first_seen.set()
    return events  # the server ended the response


@pytest.mark.timeout(120)
async def test_both_streams_follow_a_job_run_by_a_worker_process(
    make_server: Callable[..., LiveServer], db_url: str, tmp_path: Path
) -> None:
    server = make_server(LEVQOR_WORKFLOWS=PROGRESS_WORKFLOWS, LEVQOR_JOB_UPDATES_POLL_MS="50")
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        submitted = await http.post(
            "/api/v1/intake",
            json={"workflow": "test.progress", "payload": {"steps": STEPS, "pause_s": 0.4}},
        )
        job_id = submitted.json()["job_id"]
        subscribed, streaming = asyncio.Event(), asyncio.Event()
        graphql = asyncio.create_task(_subscribe(server, job_id, subscribed))
        sse = asyncio.create_task(_stream(http, job_id, streaming))
        # Both have the job's state (queued) before any worker exists.
        await started(graphql, subscribed)
        await started(sse, streaming)
        with worker_processes(db_url, tmp_path, 1, LEVQOR_WORKFLOWS=PROGRESS_WORKFLOWS) as (worker,):
            updates, events = await asyncio.wait_for(asyncio.gather(graphql, sse), STREAM_TIMEOUT_S)
            assert worker.process.poll() is None, worker.log()

        statuses = [update["status"] for update in updates]
        assert list(dict.fromkeys(statuses)) == ["QUEUED", "RUNNING", "SUCCEEDED"], updates
        types = [update["event"]["type"] for update in updates]
        assert types[:2] == ["submitted", "claimed"], types
        assert types[-1] == "succeeded", types
        reports = [update["event"]["detail"] for update in updates if update["event"]["type"] == "progress"]
        # Reports are written as they are made, not with the next heartbeat (lease/3 = 10 s).
        assert len(reports) >= 2, updates
        assert reports[-1] == {"step": STEPS, "of": STEPS}, updates
        assert updates[-1]["progress"] == {"step": STEPS, "of": STEPS}
        assert {update["jobId"] for update in updates} == {job_id}

        # The event stream carried the same updates, each with its job event's id.
        bodies = [json.loads(event.data) for event in events]
        assert [body["event"]["type"] for body in bodies] == types
        assert [body["status"] for body in bodies] == [status.lower() for status in statuses]
        assert [body["progress"] for body in bodies] == [update["progress"] for update in updates]
        ids = [int(event.id or 0) for event in events]
        assert ids == sorted(set(ids)), ids
        assert ids[0] > 0

        # Resuming after the claim gives what came after it, then the end.
        claimed_id = events[types.index("claimed")].id
        assert claimed_id is not None
        resumed = await _stream(http, job_id, asyncio.Event(), headers={"Last-Event-ID": claimed_id})
        assert [json.loads(event.data)["event"]["type"] for event in resumed] == types[2:]
        assert [event.id for event in resumed] == [event.id for event in events[2:]]
        # After the last event there is nothing more: 204 tells an EventSource to stop reconnecting.
        done = await http.get(f"/api/v1/jobs/{job_id}/events/stream", headers={"Last-Event-ID": str(ids[-1])})
        assert done.status_code == 204

        job = (await http.get(f"/api/v1/jobs/{job_id}")).json()
        assert (job["status"], job["progress"]) == ("succeeded", {"step": STEPS, "of": STEPS})
        reported = [event["detail"] for event in job["events"] if event["type"] == "progress"]
        assert reported[-1] == {"step": STEPS, "of": STEPS}
