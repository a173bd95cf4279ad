"""The group-commit INSERT (levqor/db/bulk.py) binds its values itself, once per batch where rows share
them. What it stores must be, byte for byte, what SQLAlchemy's Core insert and the ORM store for the
same values, on every dialect: the rows are compared as the database renders them, not as SQLAlchemy
reads them back (which would hide, say, a JSON `null` written as SQL NULL)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, delete, insert
from sqlalchemy.dialects import sqlite
from sqlmodel import Session

from levqor.db.bulk import BulkInsert
from levqor.db.engine import Database
from levqor.db.models import Job, JobEvent, User
from levqor.queue.claimable import JOBS
from levqor.queue.events import JOB_EVENTS
from levqor.queue.intake import job_row, write_jobs

JOB_COLUMNS = tuple(column.name for column in JOBS.columns if column.name != "seq")
EVENT_COLUMNS = tuple(column.name for column in JOB_EVENTS.columns if column.name != "id")

Writer = Callable[[Session, Table, Sequence[dict[str, Any]]], None]


def _bulk(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    columns = JOB_COLUMNS if table is JOBS else EVENT_COLUMNS
    BulkInsert(table, columns).execute(session, rows)


def _core(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    session.execute(insert(table), list(rows))


def _orm(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    model = Job if table is JOBS else JobEvent
    session.add_all([model(**row) for row in rows])
    session.flush()


def _job_rows(user_id: uuid.UUID, ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    """Rows with the values a batch holds: many None, one `now` object shared by several columns and
    rows, equal values that are distinct objects, and the awkward cases of each column type."""
    now = datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC)
    later = datetime(2031, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    shared_payload = {"message": "bench"}
    odd_payload = {
        "text": 'é ✓ \u2028 "quoted" \\',
        "n": [1, 2.5, -0.0, 10**20, True, None],
        "deep": {"a": {}},
    }
    # Two rows that share the payload and `now` objects, then one with every column set.
    shared = {"workflow": "echo", "payload": shared_payload, "status": "queued"}
    rows = [
        *(job_row(**shared, created_at=now, updated_at=now, run_at=now) for _ in range(2)),
        job_row(
            workflow="llm.chat",
            payload=odd_payload,
            callback_url="https://example.com/hook?a=1&b=%20",
            priority=0,
            status="queued",
            user_id=user_id,
            submitted_by="key:abc",
            idempotency_key="dev:key-1",
            request_hash="f" * 64,
            run_at=later,
            max_attempts=25,
            timeout_s=86_400,
            cancel_requested=True,
            result={"ok": True},
            error={},
            cost_estimate_micros=2**40,
            created_at=now,
            updated_at=datetime(2024, 2, 29, 23, 59, 59, 999_999, tzinfo=UTC),  # equal, not the same
            started_at=later,
            lease_expires_at=now,
            worker_id="w-1",
        ),
        job_row(workflow="echo", payload={}, status="queued", created_at=now, updated_at=now, run_at=now),
    ]
    # Equal in Python, different in JSON: a value may reuse its neighbour's bound form only if it is
    # the very same object.
    rows += [
        job_row(workflow="echo", payload=payload, status="queued", created_at=now, updated_at=now, run_at=now)
        for payload in ({"n": 1}, {"n": True}, {"n": 1.0})
    ]
    for row, job_id in zip(rows, ids, strict=True):
        row["id"] = job_id
    return rows


def _event_rows(job_ids: Sequence[uuid.UUID]) -> list[dict[str, Any]]:
    at = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    details: list[dict[str, Any] | None] = [None, {"reason": "x"}, None]
    return [
        {
            "job_id": job_id,
            "at": at,
            "type": "submitted",
            "from_status": None if index % 2 == 0 else "running",
            "to_status": "queued",
            "attempt": index,
            "worker_id": None,
            "detail": details[index % len(details)],
        }
        for index, job_id in enumerate(job_ids)
    ]


def _columns(table: Table, key: str) -> list[str]:
    return [c.name for c in table.columns if c.name not in ("seq", "id") or c.name == key]


def _stored(
    session: Session, db: Database, table: Table, key: str, ids: Sequence[Any]
) -> list[tuple[Any, ...]]:
    """Each row's columns as the database renders them (SQL literal on SQLite, text on PostgreSQL),
    in the order of `ids`, leaving out the generated keys."""
    columns = _columns(table, key)
    render = "quote({})" if db.is_sqlite else "{}::text"
    selected = ", ".join(render.format(f'"{name}"') for name in columns)
    placeholder = "?" if db.is_sqlite else "%(v)s"
    found: list[tuple[Any, ...]] = []
    for value in ids:
        bound = value.hex if db.is_sqlite else value
        params: Any = (bound,) if db.is_sqlite else {"v": bound}
        rows = session.connection().exec_driver_sql(
            f'SELECT {selected} FROM "{table.name}" WHERE "{key}" = {placeholder} ORDER BY 1', params
        )
        found.append(tuple(tuple(row) for row in rows))
    return found


def _written(session: Session, db: Database, writer: Writer, user_id: uuid.UUID, ids: list[uuid.UUID]) -> Any:
    """What `writer` stores for the test's jobs and events; removed again, so the next writer can
    store the same ids and unique keys."""
    writer(session, JOBS, _job_rows(user_id, ids))
    writer(session, JOB_EVENTS, _event_rows(ids))
    stored = _stored(session, db, JOBS, "id", ids), _stored(session, db, JOB_EVENTS, "job_id", ids)
    session.execute(delete(JOB_EVENTS).where(JOB_EVENTS.c.job_id.in_(ids)))
    session.execute(delete(JOBS).where(JOBS.c.id.in_(ids)))
    return stored


@pytest.mark.parametrize("writer", [_core, _orm], ids=["core", "orm"])
def test_bulk_insert_stores_the_bytes_sqlalchemy_stores(db: Database, writer: Writer) -> None:
    with db.session(write=True) as session:
        user = User(email="a@example.com", name="A")
        session.add(user)
        session.flush()
        ids = [uuid.uuid4() for _ in range(7)]
        fast_jobs, fast_events = _written(session, db, _bulk, user.id, ids)
        slow_jobs, slow_events = _written(session, db, writer, user.id, ids)

    assert [len(rows) for rows in fast_jobs] == [len(rows) for rows in fast_events] == [1] * 7
    assert fast_jobs == slow_jobs
    assert fast_events == slow_events


def test_group_commit_stores_what_the_one_row_path_stores(db: Database) -> None:
    """`write_jobs` (the intake batch) and `events.enqueue` (the ORM path) for the same submit."""
    from levqor.queue import events

    run_at = datetime(2030, 5, 6, 7, 8, 9, 123_456, tzinfo=UTC)
    values: dict[str, Any] = {
        "workflow": "echo",
        "payload": {"n": [1, "two"]},
        "run_at": run_at,
        "timeout_s": 30,
    }
    batch = write_jobs(db, [job_row(**values), job_row(**values)])
    single = db.write_sync(lambda session: events.enqueue(session, Job(**values)))

    with db.session() as session:
        stored = _stored(session, db, JOBS, "id", [batch[0].id, batch[1].id, single.id])
        logged = _stored(session, db, JOB_EVENTS, "job_id", [batch[0].id, batch[1].id, single.id])
    # The two paths take their own `now` and ids: compare the rest exactly.
    differ = {"id", "job_id", "created_at", "updated_at", "at"}

    def same_in_both(table: Table, key: str, rows: tuple[tuple[Any, ...], ...]) -> tuple[Any, ...]:
        (row,) = rows
        return tuple(
            value for name, value in zip(_columns(table, key), row, strict=True) if name not in differ
        )

    assert [same_in_both(JOBS, "id", rows) for rows in stored] == [same_in_both(JOBS, "id", stored[2])] * 3
    assert [same_in_both(JOB_EVENTS, "job_id", rows) for rows in logged] == [
        same_in_both(JOB_EVENTS, "job_id", logged[2])
    ] * 3


def test_bulk_insert_refuses_a_table_with_python_side_defaults() -> None:
    table = Table(
        "with_default",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("name", String(10)),
        Column("kind", String(10), default="plain"),
    )
    with pytest.raises(ValueError, match="per-row work"):
        BulkInsert(table, ["name"]).plan(sqlite.dialect())
    with pytest.raises(ValueError, match="binds"):
        BulkInsert(table, ["name", "kind", "missing"]).plan(sqlite.dialect())
