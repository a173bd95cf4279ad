"""Telling live job streams that job events were written (CONTRACT.md §2 and §3, `jobUpdates`).

Writers mark their transaction (`mark_job_events`) wherever they write a job event. What a mark does:
- in this process, the commit pokes every started `JobEventListener` at once (a session flag read by
  an `after_commit` hook, as levqor/queue/wakeup.py does for claimers);
- on PostgreSQL, the transaction sends one `NOTIFY levqor_job_events` (PostgreSQL folds repeats
  within a transaction, and the flag sends it once anyway), but only while some connection listens:
  each writing process looks at `pg_stat_activity` for a listener's `application_name` at most
  once per `LISTENER_PRESENCE_TTL_S`, so a queue nobody watches sends no NOTIFY at all (each costs a
  round trip and, at commit, a lock that serialises the commits of every notifying transaction).

A notification only hastens a read: a listener reads the events of the jobs it watches at the poll
interval while it may have missed some (it has not listened for a full presence period yet, or it
lost its connection), and at `SAFETY_POLL_S` otherwise. So a writer that has not yet seen a new
listener delays that listener's updates by one poll, never loses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

import psycopg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session as OrmSession

logger = logging.getLogger(__name__)

CHANNEL = "levqor_job_events"
# The `application_name` of every listening connection: how writers know that someone listens.
LISTENER_APPLICATION = "levqor-job-events"
LISTENER_PRESENCE_TTL_S = 1.0  # how long a writer trusts what it read of the listeners
# With a stream listening, a 20,000-job drain (2 workers, PostgreSQL) sent 122 NOTIFYs, one per
# transaction, at 14.0k jobs/s against 12.6k with none (median of 5 each, bench.queue.run_levqor).
# A listener polls at the poll interval for this long after it starts listening: writers that read
# "nobody listens" just before may still commit without a NOTIFY until their reading expires.
CATCH_UP_S = LISTENER_PRESENCE_TTL_S + 0.5
SAFETY_POLL_S = 5.0  # a listening process still reads this often (a commit long after its mark)
LISTEN_RETRY_S = 1.0
_SESSION_FLAG = "levqor_job_events"

_PRESENCE = text(
    "SELECT EXISTS (SELECT 1 FROM pg_stat_activity "
    "WHERE datname = current_database() AND application_name = :name)"
)

_registry_lock = threading.Lock()
_registry: set[JobEventListener] = set()


@dataclass(slots=True)
class _Presence:
    checked_at: float
    present: bool


# Per engine (each `Database` writes through one): what its process last read of the listeners.
_presence: WeakKeyDictionary[Any, _Presence] = WeakKeyDictionary()


def mark_job_events(session: OrmSession) -> None:
    """Note, in the caller's transaction, that it writes job events; listeners hear of it at commit."""
    if session.info.get(_SESSION_FLAG):
        return
    session.info[_SESSION_FLAG] = True
    bind = session.get_bind()
    if bind.dialect.name == "postgresql" and _listener_present(session, bind):
        # Delivered at commit, and only then.
        session.execute(text(f"NOTIFY {CHANNEL}"))


def _listener_present(session: OrmSession, bind: Any) -> bool:
    now = time.monotonic()
    seen = _presence.get(bind)
    if seen is not None and now - seen.checked_at < LISTENER_PRESENCE_TTL_S:
        return seen.present
    present = bool(session.execute(_PRESENCE, {"name": LISTENER_APPLICATION}).scalar())
    _presence[bind] = _Presence(checked_at=now, present=present)
    return present


@event.listens_for(OrmSession, "after_commit")
def _after_commit(session: OrmSession) -> None:
    if session.info.pop(_SESSION_FLAG, False):
        with _registry_lock:
            targets = list(_registry)
        for listener in targets:
            listener.notice()


@event.listens_for(OrmSession, "after_soft_rollback")
def _after_rollback(session: OrmSession, _previous: Any) -> None:
    session.info.pop(_SESSION_FLAG, None)


class JobEventListener:
    """Calls `on_notice` (on the event loop that started it) when job events may have been written:
    at once for commits of this process, at a NOTIFY from another one on PostgreSQL.

    `poll_interval_s()` is how long its owner may wait without a notice before reading anyway."""

    def __init__(self, *, db_url: str, poll_interval_s: float, on_notice: Callable[[], None]) -> None:
        parsed = make_url(db_url)
        self._conninfo = (
            parsed.set(drivername="postgresql").render_as_string(hide_password=False)
            if parsed.get_backend_name() == "postgresql"
            else None
        )
        self._poll_interval_s = poll_interval_s
        self._on_notice = on_notice
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self.listening_since: float | None = None  # monotonic time LISTEN took effect

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        with _registry_lock:
            _registry.add(self)
        if self._conninfo is not None:
            self._task = asyncio.create_task(self._listen(self._conninfo), name="levqor-job-events-listen")

    async def stop(self) -> None:
        with _registry_lock:
            _registry.discard(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def notice(self) -> None:
        """Safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed between the check and the call
            loop.call_soon_threadsafe(self._on_notice)

    def poll_interval_s(self) -> float:
        if self._conninfo is None:
            return self._poll_interval_s  # SQLite: other processes' commits are only polled for
        since = self.listening_since
        if since is None or time.monotonic() - since < CATCH_UP_S:
            return self._poll_interval_s
        return SAFETY_POLL_S

    async def _listen(self, conninfo: str) -> None:
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(
                    conninfo, autocommit=True, application_name=LISTENER_APPLICATION
                )
                async with connection:
                    await connection.execute(f"LISTEN {CHANNEL}")
                    self.listening_since = time.monotonic()
                    self._on_notice()  # whatever was written while we were not listening
                    async for _notice in connection.notifies():
                        self._on_notice()
            except psycopg.Error as exc:
                logger.warning("job event notifications unavailable, polling", extra={"error": str(exc)})
            finally:
                self.listening_since = None
            await asyncio.sleep(LISTEN_RETRY_S)
