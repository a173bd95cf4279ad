"""How the queue's hot statements run, on SQLite and PostgreSQL: the claim walks the claim index (also
in a generic plan, where a partial index is usable only by a literal predicate), a batch of outcomes
counts each job once, and SQLite's writers in different processes queue on one lock file."""

from __future__ import annotations

import fcntl
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlmodel import Session

from levqor import queue
from levqor.db.engine import Database
from levqor.db.types import utcnow
from levqor.queue import Outcome, OutcomeKind
from levqor.queue.claim import _candidates
from tests.queue_support import add_job, event_types, get_job

SQLITE = pytest.mark.parametrize("db_kind", ["sqlite"], indirect=True)
POSTGRES = pytest.mark.parametrize("db_kind", ["postgres"], indirect=True)


def _claim(db: Database, worker_id: str, max_jobs: int) -> list[queue.ClaimedJob]:
    return db.write_sync(
        lambda s: queue.claim_jobs(s, worker_id=worker_id, workflows=["echo"], max_jobs=max_jobs, lease_s=30)
    )


@contextmanager
def captured_updates(db: Database) -> Iterator[list[tuple[str, Any]]]:
    """The UPDATE statements sent to the driver in the block, with their parameters."""
    statements: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if statement.startswith("UPDATE jobs"):
            statements.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)


@SQLITE
def test_the_sqlite_claim_walks_the_claim_index_without_sorting(db: Database) -> None:
    for _ in range(3):
        add_job(db)
    with captured_updates(db) as statements:
        assert len(_claim(db, "w1", 2)) == 2
    ((statement, parameters),) = statements

    plan = db.read_sync(
        lambda s: [
            row[-1] for row in s.connection().exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
        ]
    )

    assert any("ix_jobs_claimable" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


@POSTGRES
def test_a_generic_postgresql_plan_still_uses_the_claim_index(db: Database) -> None:
    """A prepared statement run often gets a generic plan, made without the parameters' values: only
    a literal predicate lets it use the partial index."""

    def explain(session: Session) -> str:
        session.execute(text("SET LOCAL plan_cache_mode = force_generic_plan"))
        compiled = _candidates(["echo"], 50, utcnow()).compile(dialect=session.get_bind().dialect)
        sql = str(compiled).replace("__[POSTCOMPILE_workflow_1]", "'echo'")
        names: list[str] = []
        sql = re.sub(r"%\((\w+)\)s", lambda m: f"${_index(names, m.group(1))}", sql)
        values = {"status_1": "'queued'", "run_at_1": "now()", "param_1": "50"}
        session.execute(text("PREPARE levqor_claim_plan AS " + sql))
        arguments = ", ".join(values[name] for name in names)
        rows = session.execute(text(f"EXPLAIN EXECUTE levqor_claim_plan({arguments})")).all()
        session.execute(text("DEALLOCATE levqor_claim_plan"))
        return "\n".join(row[0] for row in rows)

    assert "ix_jobs_claimable" in db.write_sync(explain)


def _index(names: list[str], name: str) -> int:
    """`name`'s 1-based position among the parameters seen so far, added if new."""
    if name not in names:
        names.append(name)
    return names.index(name) + 1


def test_a_job_reported_twice_in_one_batch_changes_once(db: Database) -> None:
    jobs = [add_job(db) for _ in range(2)]
    claimed = {job.id: job for job in _claim(db, "w1", 2)}
    first, second = (claimed[job.id] for job in jobs)
    batch = [
        Outcome(first.id, "w1", first.attempt, OutcomeKind.SUCCEEDED, result={"report": 1}),
        Outcome(second.id, "w1", second.attempt, OutcomeKind.FAILED, error={"report": 1}, retryable=False),
        Outcome(first.id, "w1", first.attempt, OutcomeKind.SUCCEEDED, result={"report": 2}),
        Outcome(second.id, "w1", second.attempt, OutcomeKind.SUCCEEDED, result={"report": 2}),
    ]

    applied = db.write_sync(lambda s: queue.record_outcomes(s, batch))

    assert applied == [first.id, second.id]
    assert get_job(db, first.id).result == {"report": 1}
    assert get_job(db, second.id).status == "failed"
    assert event_types(db, first.id) == ["submitted", "claimed", "succeeded"]
    assert event_types(db, second.id) == ["submitted", "claimed", "failed"]


def test_a_stale_success_leaves_the_job_and_its_events_alone(db: Database) -> None:
    job = add_job(db)
    (claimed,) = _claim(db, "w1", 1)
    stale = [
        Outcome(job.id, "w2", claimed.attempt, OutcomeKind.SUCCEEDED, result={}),
        Outcome(job.id, "w1", claimed.attempt + 1, OutcomeKind.SUCCEEDED, result={}),
        Outcome(uuid.uuid4(), "w1", 1, OutcomeKind.SUCCEEDED, result={}),
    ]
    for outcome in stale:
        assert db.write_sync(lambda s, outcome=outcome: queue.record_outcomes(s, [outcome])) == []
    assert get_job(db, job.id).status == "running"
    assert event_types(db, job.id) == ["submitted", "claimed"]


@SQLITE
def test_sqlite_writers_queue_on_a_lock_file_beside_the_database(db: Database) -> None:
    path = f"{db.engine.url.database}-writers"
    assert os.path.exists(path)
    other = os.open(path, os.O_RDWR)
    try:

        def try_lock(_session: Session) -> bool:
            try:
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(other, fcntl.LOCK_UN)
            return True

        assert db.write_sync(try_lock) is False  # held for the whole write transaction
        assert db.read_sync(try_lock) is True  # readers never take it
    finally:
        os.close(other)
