"""Waking idle workers when jobs become claimable.

Three paths, fastest first:
- in one process, a commit that made a job claimable pokes every `Wakeup` of the process at once
  (a session flag read by an `after_commit` hook, so a worker never wakes before the row is visible);
- across processes on PostgreSQL, the same transaction sends `NOTIFY levqor_jobs`, and each process
  where something has waited for jobs keeps one listening connection;
- everywhere, `wait_for_jobs` returns after the poll interval at the latest, which covers SQLite across
  processes, scheduled `run_at` times, retries with backoff, and a listener that is reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

import psycopg
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session as OrmSession

logger = logging.getLogger(__name__)

CHANNEL = "levqor_jobs"
LISTEN_RETRY_S = 1.0
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


class Wakeup:
    """What an idle claimer waits on. Owned by a lifespan (the app's or a worker process's).

    `token()` before a claim and `wait_for_jobs(..., since=token)` after an empty one make sure a
    poke that lands in between is not lost.
    """

    def __init__(self, *, poll_interval_s: float, listen_url: str | None = None) -> None:
        self.poll_interval_s = poll_interval_s
        self._listen_url = listen_url if listen_url and listen_url.startswith("postgresql") else None
        self._generation = 0
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listener: asyncio.Task[None] | None = None
        self.listening = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        with _registry_lock:
            _registry.add(self)
        # PostgreSQL's notifications are listened for from the first wait on: a process where
        # nothing ever waits for jobs (an API server without a worker) holds no listening
        # connection and reads no notification of the jobs it writes itself.

    async def stop(self) -> None:
        with _registry_lock:
            _registry.discard(self)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
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

    async def wait_for_jobs(self, timeout_s: float, *, since: int | None = None) -> None:
        """Return when jobs may have become claimable: at a poke or notification, or after
        `min(timeout_s, poll interval)`. With `since`, return at once if a poke came after that token."""
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
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(waiting_on.wait(), delay_s)

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
