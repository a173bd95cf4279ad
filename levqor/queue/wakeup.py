"""Waking idle workers when jobs become claimable.

Four paths, fastest first:
- in one process, a commit that made a job claimable pokes every `Wakeup` of the process at once
  (a session flag read by an `after_commit` hook, so a worker never wakes before the row is visible);
- across processes on PostgreSQL, the same transaction sends `NOTIFY levqor_jobs`, and each process
  where something has waited for jobs keeps one listening connection;
- across processes on SQLite, each process where something has waited for jobs keeps one connection
  in a thread that reads `PRAGMA data_version` every few milliseconds while something waits; the value
  changes when another connection commits (https://sqlite.org/pragma.html#pragma_data_version), and a
  change pokes only if a job that a waiter serves is queued and due, so other commits (heartbeats,
  keys, intake of workflows served elsewhere) cost a read, not an empty write-locking claim;
- everywhere, `wait_for_jobs` returns after the poll interval at the latest, which covers scheduled
  `run_at` times, retries with backoff, and a listener or watcher that is reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Collection, Sequence
from typing import Any

import psycopg
from sqlalchemy import Connection, create_engine, event, exists, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.pool import NullPool

from levqor.db.types import utcnow
from levqor.queue.claimable import claimable, limited_claimable

logger = logging.getLogger(__name__)

CHANNEL = "levqor_jobs"
LISTEN_RETRY_S = 1.0
# data_version read every 10 ms while something waits: cross-process pickup p50 24 -> 7 ms for +0.7-0.9 CPU s
# per idle minute of `levqor worker` (3.2-3.6 s without; bench.queue.pickup_latency, /proc/<pid>/stat).
SQLITE_WATCH_INTERVAL_S = 0.010
SQLITE_WATCH_THREAD = "levqor-sqlite-watch"
_SESSION_FLAG = "levqor_wake"

_registry_lock = threading.Lock()
_registry: set[Wakeup] = set()


def mark_claimable(session: OrmSession) -> None:
    """Note, in the caller's transaction, that it makes a job claimable; wake-ups go out at commit."""
    if session.info.get(_SESSION_FLAG):
        return
    session.info[_SESSION_FLAG] = True
    if session.get_bind().dialect.name == "postgresql":
        # Delivered at commit, and only then; PostgreSQL folds repeats within one transaction.
        session.execute(text(f"NOTIFY {CHANNEL}"))


@event.listens_for(OrmSession, "after_commit")
def _after_commit(session: OrmSession) -> None:
    if session.info.pop(_SESSION_FLAG, False):
        notify_local()


@event.listens_for(OrmSession, "after_soft_rollback")
def _after_rollback(session: OrmSession, _previous: Any) -> None:
    session.info.pop(_SESSION_FLAG, None)


def notify_local() -> None:
    """Poke every started `Wakeup` of this process (safe from any thread)."""
    with _registry_lock:
        targets = list(_registry)
    for wakeup in targets:
        wakeup.poke()


def _libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _sqlite_file_url(url: str | None) -> str | None:
    """The URL of the SQLite file that other processes may commit to, if `url` names one."""
    if not url:
        return None
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return url


def _due_job_queued(connection: Connection, workflows: Collection[str] | None) -> bool:
    """Whether a job is queued with its `run_at` come, of one of `workflows` (None: any); the read
    that the partial indexes `ix_jobs_claimable` and `ix_jobs_limited_queued` answer, so a wake-up is
    worth a claim (a limited job's limit may still be full: the claim finds out)."""
    now = utcnow()
    ordinary = exists().where(claimable(workflows, now))
    limited = exists().where(limited_claimable(workflows, now))
    return bool(connection.execute(select(ordinary | limited)).scalar())


class Wakeup:
    """What an idle claimer waits on. Owned by a lifespan (the app's or a worker process's).

    `token()` before a claim and `wait_for_jobs(..., since=token)` after an empty one make sure a
    poke that lands in between is not lost.
    """

    def __init__(self, *, poll_interval_s: float, listen_url: str | None = None) -> None:
        self.poll_interval_s = poll_interval_s
        self._listen_url = listen_url if listen_url and listen_url.startswith("postgresql") else None
        self._watch_url = _sqlite_file_url(listen_url)
        self._generation = 0
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Task[None] | None = None
        self.listening = False
        # The workflows each wait in progress serves (None: any), read by the SQLite watcher's thread.
        self._waits: dict[object, frozenset[str] | None] = {}
        self._waits_lock = threading.Lock()
        self._someone_waits = threading.Event()
        self._watch_stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.watching = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        with _registry_lock:
            _registry.add(self)
        # PostgreSQL's notifications are listened for, and SQLite's file watched, from the first
        # wait on: a process where nothing ever waits for jobs (an API server without a worker)
        # holds no listening connection or watching thread and reads nothing of the jobs it writes.

    async def stop(self) -> None:
        with _registry_lock:
            _registry.discard(self)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        with self._waits_lock:
            self._watch_stop.set()
            self._someone_waits.set()  # let the watcher see the stop
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.join)
            self._watcher = None
        self._on_poke()  # release anyone still waiting

    def token(self) -> int:
        return self._generation

    def poke(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(self._on_poke)

    def _on_poke(self) -> None:
        self._generation += 1
        if self._event is not None:
            self._event.set()
            self._event = asyncio.Event()

    async def wait_for_jobs(
        self, timeout_s: float, *, since: int | None = None, workflows: Sequence[str] | None = None
    ) -> None:
        """Return when jobs may have become claimable: at a poke or notification, or after
        `min(timeout_s, poll interval)`. With `since`, return at once if a poke came after that token.
        `workflows` are the ones the waiter claims (None: any); commits in other SQLite processes
        end the wait only for jobs of those."""
        if since is not None and since != self._generation:
            return
        if timeout_s <= 0:
            return
        delay_s = min(timeout_s, self.poll_interval_s)
        waiting_on = self._event
        if waiting_on is None:  # not started: plain polling
            await asyncio.sleep(delay_s)
            return
        if self._listener is None and self._listen_url is not None:
            # Once listening, it pokes: what was sent before it listened is looked for again then.
            self._listener = asyncio.create_task(self._listen(self._listen_url), name="levqor-listen")
        if self._watcher is None and self._watch_url is not None and not self._watch_stop.is_set():
            self._watcher = threading.Thread(
                target=self._watch, args=(self._watch_url,), name=SQLITE_WATCH_THREAD, daemon=True
            )
            self._watcher.start()
        key = object()
        with self._waits_lock:
            self._waits[key] = None if workflows is None else frozenset(workflows)
            self._someone_waits.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waiting_on.wait(), delay_s)
        finally:
            with self._waits_lock:
                del self._waits[key]
                if not self._waits and not self._watch_stop.is_set():
                    self._someone_waits.clear()

    def _waited_workflows(self) -> frozenset[str] | None:
        """What the waits in progress claim: None if one of them claims any workflow."""
        with self._waits_lock:
            wanted = list(self._waits.values())
        served: set[str] = set()
        for workflows in wanted:
            if workflows is None:
                return None
            served |= workflows
        return frozenset(served)

    async def _listen(self, url: str) -> None:
        conninfo = _libpq_url(url)
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                async with connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self.listening = True
                    self._on_poke()  # whatever was sent while we were not listening
                    async for _notice in connection.notifies():
                        self._on_poke()
            except psycopg.Error as exc:
                logger.warning("job notifications unavailable, polling", extra={"error": str(exc)})
            finally:
                self.listening = False
            await asyncio.sleep(LISTEN_RETRY_S)

    def _watch(self, url: str) -> None:
        """The SQLite watcher's thread: watch until `stop`, reopening the connection after an error."""
        while not self._watch_stop.is_set():
            try:
                self._watch_commits(url)
            except (SQLAlchemyError, sqlite3.Error) as exc:  # the driver's, read directly
                logger.warning("commits of other processes unseen, polling", extra={"error": str(exc)})
            finally:
                self.watching = False
            self._watch_stop.wait(LISTEN_RETRY_S)

    def _watch_commits(self, url: str) -> None:
        # A connection of its own: data_version changes only for commits of other connections.
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                # Read through the driver: it is read a hundred times a second while a worker idles.
                driver = connection.connection.driver_connection
                assert driver is not None
                version = driver.execute("PRAGMA data_version").fetchone()
                self.watching = True
                self.poke()  # whatever was committed before the first read is looked for again
                while not self._watch_stop.is_set():
                    self._someone_waits.wait()  # nothing is read while nothing waits
                    time.sleep(SQLITE_WATCH_INTERVAL_S)
                    current = driver.execute("PRAGMA data_version").fetchone()
                    if current == version:
                        continue
                    workflows = self._waited_workflows()
                    if workflows == frozenset():
                        continue  # no wait for any workflow now: the change is left for the next
                    version = current
                    if _due_job_queued(connection, workflows):
                        self.poke()
        finally:
            engine.dispose()
