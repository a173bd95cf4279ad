"""Engines per dialect, and the one way the service runs database work off the event loop.

Every transaction is a plain function of a `Session`, run whole in a worker thread: one thread hop
per request instead of one per statement, and no blocking call on the event loop.

SQLite: WAL (checkpointed every 16 MiB), `synchronous=NORMAL`, a busy timeout and foreign keys on
each connection; write
transactions begin IMMEDIATE so concurrent writers queue on the lock instead of failing with
"database is locked" at commit (https://sqlite.org/lang_transaction.html). Within one process
writers also queue on a lock of ours, which is cheaper than SQLite's sleeping busy handler.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

try:  # POSIX; elsewhere SQLite's own wait orders the writers
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

import anyio.to_thread
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Checkpoint the WAL every 4,000 pages (16 MiB) rather than SQLite's 1,000: intake rewrites the same
# few hot pages (the tables' and indexes' last leaves) commit after commit, and a checkpoint copies
# each page once however often the WAL holds it, so fewer checkpoints write far less. Measured: about
# a fifth less CPU per submitted job. A WAL that grew past 64 MiB (a long reader held checkpoints
# off) is cut back to that size after the next checkpoint.
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 4_000
SQLITE_JOURNAL_SIZE_LIMIT_BYTES = 64 * 1024 * 1024
WRITE_OPTION = "levqor_write"


# Requests reach the database from anyio's worker threads (40 by default). A pool much smaller than
# that makes connections churn under load: overflow connections are closed as soon as they return.
DEFAULT_POOL_SIZE = 32
POOL_OVERFLOW = 16


def create_db_engine(url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=POOL_OVERFLOW,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=POOL_OVERFLOW, pool_pre_ping=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN itself (the pysqlite recipe in the
        # SQLAlchemy docs, "Serializable isolation / Savepoints / Transactional DDL").
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA wal_autocheckpoint={SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
        cursor.execute(f"PRAGMA journal_size_limit={SQLITE_JOURNAL_SIZE_LIMIT_BYTES}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class Database:
    """The engine plus the transaction runners that resolvers, the queue and the CLI share."""

    def __init__(self, url: str, *, pool_size: int = DEFAULT_POOL_SIZE) -> None:
        self.url = url
        self.engine = create_db_engine(url, pool_size=pool_size)
        self.dialect = self.engine.dialect.name
        self._write_engine = self.engine.execution_options(**{WRITE_OPTION: True})
        self._write_lock = threading.Lock() if self.is_sqlite else None
        self._writers = _WriterQueue.beside(self.engine.url.database) if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        bind = self._write_engine if write else self.engine
        with Session(bind, expire_on_commit=False) as session, session.begin():
            yield session

    def read_sync(self, fn: Callable[[Session], T]) -> T:
        with self.session() as session:
            return fn(session)

    def write_sync(self, fn: Callable[[Session], T]) -> T:
        if self._write_lock is None:
            with self.session(write=True) as session:
                return fn(session)
        with self._write_lock, _queued(self._writers), self.session(write=True) as session:
            return fn(session)

    async def read(self, fn: Callable[[Session], T]) -> T:
        return await anyio.to_thread.run_sync(self.read_sync, fn)

    async def write(self, fn: Callable[[Session], T]) -> T:
        return await anyio.to_thread.run_sync(self.write_sync, fn)

    def dispose(self) -> None:
        self.engine.dispose()
        if self._writers is not None:
            self._writers.close()


class _WriterQueue:
    """Writers of one SQLite file, in every process, queue on an exclusive `flock` of a file beside it
    before they ask SQLite for its write lock. SQLite's own wait is a sleep-and-retry loop (1, 2, 5,
    10 ms ...), so a waiting process slept through most hand-overs of the lock; the kernel wakes the
    next writer as soon as the lock is released. SQLite's locking still decides: this only orders who
    asks (a writer that does not take part, such as the sqlite3 shell, is handled by SQLite as before).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    @classmethod
    def beside(cls, database: str | None) -> _WriterQueue | None:
        if fcntl is None or not database:
            return None
        return cls(f"{Path(database).expanduser()}-writers")

    def __enter__(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *_exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _queued(writers: _WriterQueue | None) -> Any:
    return writers if writers is not None else nullcontext()
