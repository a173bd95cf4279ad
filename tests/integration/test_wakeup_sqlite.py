"""Commits of other processes wake claimers on SQLite (levqor/queue/wakeup.py): a process watches the
file's `PRAGMA data_version` from the first wait for jobs on, a change ends a wait only when a job the
waiter serves is queued and due, and a process where nothing waits runs no watching thread."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from levqor.db.engine import Database
from levqor.queue.wakeup import SQLITE_WATCH_THREAD, Wakeup
from tests.conftest import ROOT
from tests.queue_support import add_job

# Longer than any wait below may take: a wait that ends in time was ended by the watcher, not the poll.
LONG_POLL_S = 30.0
WOKEN_WITHIN_S = LONG_POLL_S / 3

# Run in a process of its own, so the commit cannot reach the waiter through this process's pokes.
ENQUEUE_ELSEWHERE = """
import json, sys
from datetime import timedelta
from levqor import queue
from levqor.db.engine import Database
from levqor.db.models import Job
from levqor.db.types import utcnow

db = Database(sys.argv[1])
for spec in json.loads(sys.argv[2]):
    job = Job(workflow=spec["workflow"], payload={}, run_at=utcnow() + timedelta(seconds=spec["in_s"]))
    db.write_sync(lambda session: queue.enqueue(session, job))
db.dispose()
"""


@pytest.fixture
def sqlite_url(tmp_path: Path, sqlite_template: Path) -> str:
    path = tmp_path / "levqor.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


def _watchers() -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == SQLITE_WATCH_THREAD)


async def _enqueue_elsewhere(db_url: str, *jobs: tuple[str, float]) -> None:
    specs = json.dumps([{"workflow": workflow, "in_s": in_s} for workflow, in_s in jobs])
    await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", ENQUEUE_ELSEWHERE, db_url, specs],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=True,
        timeout=60,
    )


async def _watching(db_url: str) -> Wakeup:
    wakeup = Wakeup(poll_interval_s=LONG_POLL_S, listen_url=db_url)
    await wakeup.start()
    assert _watchers() == 0  # nothing has waited yet
    # The first wait starts watching; the poke that follows the first read ends it (a commit made
    # before that read would have been missed, so the claimer looks again).
    await asyncio.wait_for(wakeup.wait_for_jobs(LONG_POLL_S), WOKEN_WITHIN_S)
    assert wakeup.watching
    assert _watchers() == 1
    return wakeup


async def test_a_commit_in_another_process_ends_a_wait(sqlite_url: str) -> None:
    wakeup = await _watching(sqlite_url)
    try:
        waiting = asyncio.create_task(wakeup.wait_for_jobs(LONG_POLL_S, since=wakeup.token()))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await _enqueue_elsewhere(sqlite_url, ("echo", 0))
        await asyncio.wait_for(waiting, WOKEN_WITHIN_S)
    finally:
        await wakeup.stop()
    assert _watchers() == 0


async def test_commits_without_a_due_job_of_the_waiters_workflows_do_not_end_a_wait(
    sqlite_url: str,
) -> None:
    wakeup = await _watching(sqlite_url)
    try:
        waiting = asyncio.create_task(
            wakeup.wait_for_jobs(LONG_POLL_S, since=wakeup.token(), workflows=["echo"])
        )
        # A job of a workflow served elsewhere, and one of ours that is not due for an hour.
        await _enqueue_elsewhere(sqlite_url, ("test.other", 0), ("echo", 3600))
        await asyncio.sleep(1.0)  # a hundred reads of data_version
        assert not waiting.done()
        await _enqueue_elsewhere(sqlite_url, ("echo", 0))
        await asyncio.wait_for(waiting, WOKEN_WITHIN_S)
    finally:
        await wakeup.stop()


async def test_a_process_where_nothing_waits_runs_no_watcher(sqlite_url: str) -> None:
    wakeup = Wakeup(poll_interval_s=LONG_POLL_S, listen_url=sqlite_url)
    await wakeup.start()
    db = Database(sqlite_url)
    try:
        add_job(db, "echo")  # writing jobs, as an API server without a worker does
        await _enqueue_elsewhere(sqlite_url, ("echo", 0))
        assert _watchers() == 0
        assert not wakeup.watching
    finally:
        db.dispose()
        await wakeup.stop()
