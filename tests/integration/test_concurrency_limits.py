"""Concurrency limits (issue 12 item 5), on SQLite and PostgreSQL: a key's or a workflow's
`max_running` holds however many claimers race, while other keys' jobs keep flowing.

Jobs are submitted through the intake resolver (which marks them), claimed by several threads each
with a session of its own through `queue.claim_jobs`, held for a moment as a worker would, and
completed; a sampler thread counts the running jobs of the limited key meanwhile.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from levqor import queue
from levqor.config import Settings
from levqor.db.engine import Database
from levqor.db.models import ApiKey, Job, JobStatus
from levqor.db.principals import managed_principal_id
from levqor.db.types import utcnow
from levqor.resolvers import jobs as jobs_resolver
from levqor.resolvers import keys as keys_resolver
from levqor.resolvers.context import Context, Principal, Scope
from tests.conftest import settings_for

HOLD_S = 0.02  # how long a claimed job "runs" before its worker completes it
CLAIMERS = 4
OPERATOR = Principal(id="cli", scopes=Scope.ALL)


@dataclass
class Setup:
    db: Database
    settings: Settings
    limits: dict[str, int] = field(default_factory=dict)

    def ctx(self, principal: Principal = OPERATOR) -> Context:
        return Context(db=self.db, settings=self.settings, principal=principal)

    def key(self, max_running: int | None) -> uuid.UUID:
        def run(session: Session) -> uuid.UUID:
            key = ApiKey(
                name="limits",
                prefix="lvq_test",
                secret_hash=uuid.uuid4().hex,
                scopes=sorted(Scope.ALL),
                max_running=max_running,
            )
            session.add(key)
            session.flush()
            return key.id

        return self.db.write_sync(run)

    def submit(self, key_id: uuid.UUID | None, count: int, workflow: str = "echo") -> list[uuid.UUID]:
        principal = OPERATOR
        if key_id is not None:
            principal = Principal(
                id=managed_principal_id(key_id), scopes=Scope.ALL, key_id=str(key_id), has_webhook_secret=True
            )

        async def submit_all() -> list[uuid.UUID]:
            ctx = self.ctx(principal)
            return [
                (
                    await jobs_resolver.submit_job(
                        ctx, {"workflow": workflow, "payload": {"i": i} if workflow == "echo" else {}}
                    )
                ).job.id
                for i in range(count)
            ]

        return asyncio.run(submit_all())

    def claim(self, max_jobs: int, worker_id: str = "w", lease_s: int = 30) -> list[queue.ClaimedJob]:
        return self.db.write_sync(
            lambda session: queue.claim_jobs(
                session,
                worker_id=worker_id,
                workflows=None,
                max_jobs=max_jobs,
                lease_s=lease_s,
                workflow_limits=self.limits,
            )
        )

    def complete(self, claimed: list[queue.ClaimedJob], worker_id: str = "w") -> None:
        outcomes = [
            queue.Outcome(job.id, worker_id, job.attempt, queue.OutcomeKind.SUCCEEDED, result={})
            for job in claimed
        ]
        self.db.write_sync(lambda session: queue.record_outcomes(session, outcomes))

    def statuses(self, ids: list[uuid.UUID]) -> dict[str, int]:
        def run(session: Session) -> dict[str, int]:
            rows = session.execute(
                select(Job.status, func.count()).where(Job.id.in_(ids)).group_by(Job.status)  # type: ignore[attr-defined]
            )
            return {status: count for status, count in rows}

        return self.db.read_sync(run)

    def running_of(self, key_id: uuid.UUID | None = None, workflow: str | None = None) -> int:
        def run(session: Session) -> int:
            statement = select(func.count()).select_from(Job).where(Job.status == JobStatus.RUNNING.value)
            if key_id is not None:
                statement = statement.where(Job.submitted_by == managed_principal_id(key_id))
            if workflow is not None:
                statement = statement.where(Job.workflow == workflow)
            return int(session.execute(statement).scalar_one())

        return self.db.read_sync(run)


@pytest.fixture
def setup(db_url: str) -> Iterator[Setup]:
    settings = settings_for(db_url, LEVQOR_WORKFLOW_MAX_RUNNING="sleep=3")
    database = Database(db_url)
    yield Setup(database, settings, {"sleep": 3})
    database.dispose()


def drain(
    setup: Setup, until: Callable[[], bool], sample: Callable[[], int], timeout_s: float = 60
) -> list[int]:
    """Claim, hold and complete with `CLAIMERS` threads until `until()`; the samples of `sample()`
    taken meanwhile by another thread."""
    stop = threading.Event()
    samples: list[int] = []
    errors: list[BaseException] = []

    def claimer(index: int) -> None:
        worker_id = f"claimer-{index}"
        try:
            while not stop.is_set():
                claimed = setup.claim(5, worker_id)
                if not claimed:
                    time.sleep(0.005)
                    continue
                time.sleep(HOLD_S)
                setup.complete(claimed, worker_id)
        except BaseException as exc:  # reported by the test below
            errors.append(exc)
            stop.set()

    def sampler() -> None:
        while not stop.is_set():
            samples.append(sample())
            time.sleep(0.002)

    threads = [threading.Thread(target=claimer, args=(i,)) for i in range(CLAIMERS)]
    threads.append(threading.Thread(target=sampler))
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout_s
    try:
        while not until() and time.monotonic() < deadline and not stop.is_set():
            time.sleep(0.02)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert not errors, errors
    return samples


def test_a_key_limit_of_two_holds_under_load_while_other_keys_flow(setup: Setup) -> None:
    limited = setup.key(2)
    other = setup.key(None)
    limited_jobs = setup.submit(limited, 30)
    other_jobs = setup.submit(other, 60)
    anonymous_jobs = setup.submit(None, 20)
    # The other key's and the keyless jobs all finish while most of the limited key's still wait.
    samples = drain(
        setup,
        until=lambda: setup.statuses(other_jobs + anonymous_jobs) == {"succeeded": 80},
        sample=lambda: setup.running_of(limited),
    )
    assert setup.statuses(other_jobs + anonymous_jobs) == {"succeeded": 80}
    assert setup.statuses(limited_jobs).get("queued", 0) > 0, "the limited key ran as fast as the others"
    assert samples
    assert max(samples) <= 2, max(samples)
    # Then the limited key's jobs drain too, two at a time, and reached its limit along the way.
    samples += drain(
        setup,
        until=lambda: setup.statuses(limited_jobs) == {"succeeded": 30},
        sample=lambda: setup.running_of(limited),
    )
    assert setup.statuses(limited_jobs) == {"succeeded": 30}
    assert max(samples) == 2, "the limit was never reached: the test shows nothing"


def test_a_workflow_limit_holds_across_keys(setup: Setup) -> None:
    first, second = setup.key(None), setup.key(None)
    sleepers = setup.submit(first, 15, "sleep") + setup.submit(second, 15, "sleep")
    echoes = setup.submit(first, 30)
    samples = drain(
        setup,
        until=lambda: setup.statuses(sleepers + echoes) == {"succeeded": 60},
        sample=lambda: setup.running_of(workflow="sleep"),
    )
    assert setup.statuses(sleepers + echoes) == {"succeeded": 60}
    assert max(samples) == 3, samples


def test_a_full_limit_leaves_the_rest_of_the_batch_to_others(setup: Setup) -> None:
    limited = setup.key(2)
    setup.submit(limited, 5)
    free = setup.submit(None, 5)
    claimed = setup.claim(10)
    assert len(claimed) == 7
    assert {job.id for job in claimed} >= set(free)
    assert setup.claim(10) == []  # the key is full; nothing else waits
    assert setup.running_of(limited) == 2


def test_jobs_queued_before_the_limit_count_and_lifting_it_lets_them_flow(setup: Setup) -> None:
    key_id = setup.key(None)
    setup.submit(key_id, 4)
    early = setup.claim(1)  # running before the limit: counts against it once it is set
    assert len(early) == 1
    asyncio.run(keys_resolver.update_api_key(setup.ctx(), key_id, {"max_running": 2}))
    assert len(setup.claim(10)) == 1
    assert setup.running_of(key_id) == 2
    asyncio.run(keys_resolver.update_api_key(setup.ctx(), key_id, {"max_running": None}))
    assert len(setup.claim(10)) == 2
    assert setup.running_of(key_id) == 4


def test_an_expired_lease_frees_its_slot_and_a_retry_waits_for_room(setup: Setup) -> None:
    key_id = setup.key(2)
    setup.submit(key_id, 5)
    stale = setup.claim(2, "stale", lease_s=1)
    assert len(stale) == 2
    assert setup.claim(5) == []
    # The reaper takes both back (to `queued` after a backoff): their slots are free again.
    reaped = setup.db.write_sync(
        lambda session: queue.reap_expired(
            session, now=utcnow() + timedelta(seconds=5), backoff=queue.Backoff(0.001, 0.001)
        )
    )
    assert reaped == 2
    fresh = setup.claim(5)
    assert len(fresh) == 2
    # A failed attempt goes back to `queued`, still limited: it waits while the key is full.
    setup.db.write_sync(
        lambda session: queue.fail(
            session,
            job_id=fresh[0].id,
            worker_id="w",
            attempt=fresh[0].attempt,
            error={"type": "boom"},
            backoff=queue.Backoff(0.001, 0.001),
        )
    )
    time.sleep(0.05)
    again = setup.claim(5)
    assert len(again) == 1
    assert setup.running_of(key_id) == 2
    setup.complete(again + fresh[1:])
    # Room for two, but only one is due: the reaped pair waits out its backoff (from the reaper's `now`).
    assert len(setup.claim(5)) == 1


def test_intake_marks_only_limited_jobs(setup: Setup) -> None:
    limited, free = setup.key(3), setup.key(None)
    ids = (
        setup.submit(limited, 1)
        + setup.submit(free, 1)
        + setup.submit(free, 1, "sleep")
        + setup.submit(None, 1)
    )

    def marks(session: Session) -> list[Any]:
        rows = session.execute(select(Job.id, Job.concurrency_limited).where(Job.id.in_(ids)))  # type: ignore[attr-defined]
        found = dict(rows.all())
        return [found[job_id] for job_id in ids]

    assert setup.db.read_sync(marks) == [True, False, True, False]
