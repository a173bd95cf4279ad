"""Plain submits and status reads that arrive together share one transaction (levqor/db/batching.py).
A user must not notice: every submit gets its own job, durably written with its `submitted` event, and
every status read its own job; one bad row fails only its own submit."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import col, func, select

from levqor.db.batching import Batcher
from levqor.db.engine import Database
from levqor.db.models import Job, JobEvent
from levqor.queue.intake import job_row, write_jobs
from levqor.resolvers.batches import row_may_be_at_fault
from tests.conftest import LiveServer

PARALLEL_REQUESTS = 40


def _parallel(server: LiveServer, call: object, count: int) -> list[httpx.Response]:
    def run(index: int) -> httpx.Response:
        with server.client() as http:
            return call(http, index)  # type: ignore[operator, no-any-return]

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))


def test_parallel_plain_submits_each_get_their_own_durable_job(server: LiveServer, db: Database) -> None:
    responses = _parallel(
        server,
        lambda http, i: http.post("/api/v1/intake", json={"workflow": "echo", "payload": {"n": i}}),
        PARALLEL_REQUESTS,
    )

    assert [response.status_code for response in responses] == [202] * PARALLEL_REQUESTS
    job_ids = [uuid.UUID(response.json()["job_id"]) for response in responses]
    assert len(set(job_ids)) == PARALLEL_REQUESTS
    with db.session() as session:
        jobs = {job.id: job for job in session.exec(select(Job).where(col(Job.id).in_(job_ids)))}
        submitted = session.exec(
            select(JobEvent.job_id, func.count())
            .where(JobEvent.type == "submitted")
            .group_by(col(JobEvent.job_id))
        ).all()
    # Each answer names the job holding that request's own payload, queued, with one `submitted` event.
    assert [jobs[job_id].payload for job_id in job_ids] == [{"n": i} for i in range(PARALLEL_REQUESTS)]
    assert {job.status for job in jobs.values()} == {"queued"}
    assert dict(submitted) == dict.fromkeys(job_ids, 1)


def test_parallel_status_reads_each_answer_their_own_job(server: LiveServer) -> None:
    with server.client() as http:
        job_ids = [
            http.post("/api/v1/intake", json={"workflow": "echo", "payload": {"n": i}}).json()["job_id"]
            for i in range(4)
        ]
        http.post(f"/api/v1/_dev/complete/{job_ids[0]}", json={"result": {"done": True}})
    unknown = str(uuid.uuid4())
    asked = [*job_ids, unknown] * (PARALLEL_REQUESTS // 5)

    responses = _parallel(server, lambda http, i: http.get(f"/api/v1/status/{asked[i]}"), len(asked))

    for job_id, response in zip(asked, responses, strict=True):
        if job_id == unknown:
            assert response.status_code == 404
            assert response.json()["error"] == "not_found"
            continue
        assert response.status_code == 200
        body = response.json()
        assert body["job_id"] == job_id
        expected = ("succeeded", {"done": True}) if job_id == job_ids[0] else ("queued", None)
        assert (body["status"], body["result"]) == expected


@pytest.mark.asyncio
async def test_a_bad_row_in_a_batch_fails_only_its_own_submit(db: Database) -> None:
    batch_sizes: list[int] = []

    def write(rows: Sequence[dict[str, object]]) -> list[Job]:
        batch_sizes.append(len(rows))
        return write_jobs(db, rows)

    batcher: Batcher[dict[str, object], Job] = Batcher(write, max_batch=64, retry_alone=row_may_be_at_fault)
    await batcher.start("test-intake")
    good = [job_row(workflow="echo", payload={"n": n}, run_at=None) for n in range(3)]
    # The same id twice: the second insert breaks the unique index, so the shared transaction fails.
    twin = job_row(workflow="echo", payload={"twin": True}, run_at=None, id=good[0]["id"])
    try:
        outcomes = await asyncio.gather(
            *(batcher.call(row) for row in (good[0], twin, good[1], good[2])), return_exceptions=True
        )
    finally:
        await batcher.stop()

    assert batch_sizes == [4, 1, 1, 1, 1]  # one shared transaction failed, then one per row
    assert [type(outcome) for outcome in outcomes] == [Job, IntegrityError, Job, Job]
    with db.session() as session:
        stored = session.exec(select(Job.id, Job.payload)).all()
        events = session.exec(select(JobEvent.job_id)).all()
    assert sorted(payload["n"] for _, payload in stored) == [0, 1, 2]
    assert sorted(events) == sorted(row["id"] for row in good)


@pytest.mark.asyncio
async def test_stop_answers_the_calls_already_waiting(db: Database) -> None:
    batcher: Batcher[dict[str, object], Job] = Batcher(lambda rows: write_jobs(db, rows), max_batch=2)
    await batcher.start("test-intake")
    calls = [
        asyncio.ensure_future(batcher.call(job_row(workflow="echo", payload={"n": n}, run_at=None)))
        for n in range(5)
    ]
    await asyncio.sleep(0)  # every call is queued before the stop
    await batcher.stop()

    jobs = await asyncio.gather(*calls)
    assert sorted(job.payload["n"] for job in jobs) == [0, 1, 2, 3, 4]
    with db.session() as session:
        assert session.exec(select(func.count()).select_from(Job)).one() == 5


@pytest.mark.asyncio
async def test_an_unreachable_database_fails_the_whole_batch_at_once() -> None:
    """Nothing listens on port 1: the error is the database's, not a row's, so retrying each row alone
    would only make every caller wait again."""
    down = Database("postgresql+psycopg://postgres@127.0.0.1:1/levqor")
    attempts: list[int] = []

    def write(rows: Sequence[dict[str, Any]]) -> list[Job]:
        attempts.append(len(rows))
        return write_jobs(down, rows)

    batcher: Batcher[dict[str, Any], Job] = Batcher(write, max_batch=64, retry_alone=row_may_be_at_fault)
    await batcher.start("test-intake")
    try:
        outcomes = await asyncio.gather(
            *(batcher.call(job_row(workflow="echo", payload={}, run_at=None)) for _ in range(3)),
            return_exceptions=True,
        )
    finally:
        await batcher.stop()
        down.dispose()

    assert attempts == [3]
    assert all(isinstance(outcome, OperationalError) for outcome in outcomes)
