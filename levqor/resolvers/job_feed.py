"""The live job streams of one server process: which jobs are watched, and one read for all of them.

Streams (`jobUpdates`, GET /api/v1/jobs/<id>/events/stream) watch a job from the last event they
have. While anything is watched, one task reads the new events of every watched job in one
statement (per `MAX_JOBS_PER_READ` jobs) and hands each stream its own: at a notice that events
were written (levqor/queue/job_event_notices.py: this process's commits, PostgreSQL's NOTIFY) and
at the poll interval (`LEVQOR_JOB_UPDATES_POLL_MS` on SQLite; on PostgreSQL only while a notice
may have been missed). Reads follow one another at least `MIN_READ_GAP_S` apart, so a busy queue's
stream of notices costs a few reads a second, not one per commit.

Each job's events are written under its row lock (every state change locks the job first), so a
job's event ids grow in commit order: a stream that has event n of its job has every earlier one,
and reading `id > n` for that job misses nothing, on PostgreSQL too, where ids of different jobs
commit out of order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from sqlalchemy import and_, or_
from sqlmodel import Session, col, select

from levqor.config import Settings
from levqor.db.engine import Database
from levqor.db.models import JobEvent
from levqor.errors import RateLimited
from levqor.queue.job_event_notices import JobEventListener

logger = logging.getLogger(__name__)

MIN_READ_GAP_S = 0.025
MAX_JOBS_PER_READ = 50  # jobs per statement: an OR of (job, last event) pairs, each an index range
READ_RETRY_S = 1.0
PROGRESS_EVENT = "progress"
# A stream refused for the per-key cap may try again this much later (Retry-After).
STREAM_RETRY_AFTER_S = 1


@dataclass(eq=False)
class Watch:
    """One stream's view of one job: the events read for it and not yet taken."""

    job_id: uuid.UUID
    after_id: int  # the last event handed to `pending`
    pending: deque[JobEvent] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False

    def push(self, event: JobEvent) -> None:
        if event.type == PROGRESS_EVENT and self.pending and self.pending[-1].type == PROGRESS_EVENT:
            # A stream that has not taken a report yet gets the newer one instead: a stalled reader
            # holds at most one report, whatever the job reports meanwhile.
            self.pending[-1] = event
        else:
            self.pending.append(event)
        self.after_id = event.id or self.after_id
        self.ready.set()

    async def next_events(self) -> list[JobEvent]:
        """The events read since the last call, once there are some; empty once the feed stopped."""
        while not self.pending and not self.closed:
            self.ready.clear()
            await self.ready.wait()
        events = list(self.pending)
        self.pending.clear()
        return events


def read_events_after(session: Session, cursors: Mapping[uuid.UUID, int]) -> list[JobEvent]:
    """Each job's events after its cursor, in id order per job."""
    items = list(cursors.items())
    found: list[JobEvent] = []
    for start in range(0, len(items), MAX_JOBS_PER_READ):
        chunk = items[start : start + MAX_JOBS_PER_READ]
        condition = or_(
            *(and_(col(JobEvent.job_id) == job_id, col(JobEvent.id) > after) for job_id, after in chunk)
        )
        found.extend(session.exec(select(JobEvent).where(condition).order_by(col(JobEvent.id))))
    return found


class JobUpdateFeed:
    """One per server process, owned by the app lifespan; every stream of the process watches
    through it. Its methods run on the event loop that started it."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._watches: dict[uuid.UUID, set[Watch]] = {}
        self._streams_by_caller: Counter[str] = Counter()
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def watched_jobs(self) -> int:
        return len(self._watches)

    def open_streams(self, caller: str) -> int:
        return self._streams_by_caller[caller]

    async def start(self) -> None:
        self._stopped = False

    async def stop(self) -> None:
        """End every stream (each finishes as if the job had no more events) and stop reading."""
        self._stopped = True
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        for watches in self._watches.values():
            for watch in watches:
                watch.closed = True
                watch.ready.set()
        self._watches.clear()

    def admit(self, caller: str) -> None:
        """Count a new stream of `caller` (a principal id), or refuse it past the per-key cap."""
        cap = self.settings.max_subscriptions_per_key
        if self._streams_by_caller[caller] >= cap:
            raise RateLimited(
                f"this API key already has {cap} live job streams open on this server "
                "(LEVQOR_MAX_SUBSCRIPTIONS_PER_KEY): close one before opening another",
                retry_after_s=STREAM_RETRY_AFTER_S,
            )
        self._streams_by_caller[caller] += 1

    def release(self, caller: str) -> None:
        self._streams_by_caller[caller] -= 1
        if self._streams_by_caller[caller] <= 0:
            del self._streams_by_caller[caller]

    def watch(self, job_id: uuid.UUID, after_id: int) -> Watch:
        """Start handing over `job_id`'s events after `after_id`; the first read comes at once, for
        whatever was written since the caller read up to `after_id`."""
        watch = Watch(job_id=job_id, after_id=after_id)
        if self._stopped:
            watch.closed = True
            return watch
        self._watches.setdefault(job_id, set()).add(watch)
        self._changed.set()
        if self._reader is None:
            self._reader = asyncio.create_task(self._serve(), name="levqor-job-updates")
        return watch

    def unwatch(self, watch: Watch) -> None:
        watches = self._watches.get(watch.job_id)
        if watches is None:
            return
        watches.discard(watch)
        if not watches:
            del self._watches[watch.job_id]
        if not self._watches:
            self._changed.set()  # the reader sees nothing is watched and stops

    def poke(self) -> None:
        self._changed.set()

    async def _serve(self) -> None:
        try:
            while self._watches:
                listener = JobEventListener(
                    db_url=self.db.url,
                    poll_interval_s=self.settings.job_updates_poll_ms / 1000,
                    on_notice=self.poke,
                )
                await listener.start()
                try:
                    await self._read_while_watched(listener)
                finally:
                    await listener.stop()
        finally:
            # Nothing awaits between the last look at `_watches` and this: a `watch` that comes
            # after it starts a new reader.
            if self._reader is asyncio.current_task():
                self._reader = None

    async def _read_while_watched(self, listener: JobEventListener) -> None:
        last_read = -MIN_READ_GAP_S
        while self._watches:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), listener.poll_interval_s())
            gap_s = MIN_READ_GAP_S - (time.monotonic() - last_read)
            if gap_s > 0:
                await asyncio.sleep(gap_s)  # notices that come meanwhile share the next read
            self._changed.clear()
            cursors = {
                job_id: min(watch.after_id for watch in watches) for job_id, watches in self._watches.items()
            }
            if not cursors:
                return
            last_read = time.monotonic()
            try:
                events = await self.db.read(functools.partial(read_events_after, cursors=cursors))
            except Exception:
                logger.exception("could not read job events for live streams; retrying")
                await asyncio.sleep(READ_RETRY_S)
                self._changed.set()
                continue
            for event in events:
                for watch in self._watches.get(event.job_id, ()):
                    if event.id is not None and event.id > watch.after_id:
                        watch.push(event)
