"""Worker liveness: one `workers` row per worker process, refreshed while it runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, SQLModel

from levqor.db.models import Worker
from levqor.db.types import utcnow

WORKERS: Table = SQLModel.metadata.tables[Worker.__tablename__]


def record_worker(
    session: Session,
    *,
    worker_id: str,
    hostname: str | None,
    pid: int | None,
    workflows: Sequence[str],
    concurrency: int,
    now: datetime | None = None,
) -> None:
    """Insert or refresh the worker's row (`last_seen_at` = now, not stopped)."""
    now = now or utcnow()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    values: dict[str, Any] = {
        "hostname": hostname,
        "pid": pid,
        "workflows": list(workflows),
        "concurrency": concurrency,
        "last_seen_at": now,
        "stopped_at": None,
    }
    statement = insert(WORKERS).values(id=worker_id, started_at=now, **values)
    session.execute(statement.on_conflict_do_update(index_elements=[WORKERS.c.id], set_=values))


def touch_worker(session: Session, *, worker_id: str, now: datetime | None = None) -> None:
    """Note that the worker is alive (each heartbeat round does this)."""
    session.execute(
        update(WORKERS).where(WORKERS.c.id == worker_id).values(last_seen_at=now or utcnow(), stopped_at=None)
    )


def mark_worker_stopped(session: Session, *, worker_id: str, now: datetime | None = None) -> None:
    now = now or utcnow()
    session.execute(update(WORKERS).where(WORKERS.c.id == worker_id).values(stopped_at=now, last_seen_at=now))
