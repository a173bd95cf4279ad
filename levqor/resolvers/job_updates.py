"""A live stream of one job's updates: the GraphQL `jobUpdates` subscription and the REST event stream
(GET /api/v1/jobs/<id>/events/stream) are two adapters over `open_job_updates`.

A stream opens with the job's current state (its latest event, its status and its last progress),
or, resuming after an event the client has (SSE's `Last-Event-ID`), with every event after it;
then each state change and progress report as it is written, wherever the job runs (the process's
`JobUpdateFeed`); and it ends after the job's first terminal state. Everything a stream may be
refused for (scope, id, an unknown job, the per-key cap) is checked before it opens, so each
surface answers it as its own error.
"""

from __future__ import annotations

import functools
import uuid
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sqlmodel import Session, col, select

from levqor.db.models import Job, JobEvent, JobStatus
from levqor.errors import FieldCode, InvalidRequest, NotFound
from levqor.resolvers.context import Context, Scope
from levqor.resolvers.job_feed import PROGRESS_EVENT, JobUpdateFeed, Watch
from levqor.resolvers.validation import parse_id

LAST_EVENT_ID = "Last-Event-ID"
LAST_EVENT_ID_PATTERN = r"^[0-9]{0,19}$"  # empty: the client has no event yet (as no header)
MAX_EVENT_ID = 2**63 - 1  # job_events.id is a BIGINT


@dataclass(frozen=True, slots=True)
class JobUpdate:
    """One event of a job with the job's state once it happened."""

    job_id: uuid.UUID
    status: JobStatus
    progress: dict[str, Any] | None  # the last progress reported up to this event
    event: JobEvent


def parse_event_id(raw: str | None) -> int | None:
    """The id of an event a client already has (`Last-Event-ID`), as the stream sent it."""
    if raw is None or not raw.strip():
        return None
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > MAX_EVENT_ID:
        raise InvalidRequest.for_field(
            LAST_EVENT_ID, "must be the id of an event this stream sent", FieldCode.PATTERN
        )
    return int(text)


@dataclass(frozen=True, slots=True)
class _Start:
    updates: list[JobUpdate]
    after_id: int  # the last event the stream has read
    progress: dict[str, Any] | None
    ended: bool  # the job has reached a terminal state within `updates` (or before them)


def _read_start(session: Session, job_id: uuid.UUID, after_id: int | None) -> _Start:
    job = session.execute(select(Job.status, Job.progress).where(col(Job.id) == job_id)).first()
    if job is None:
        raise NotFound(f"no job with id '{job_id}'")
    events = select(JobEvent).where(col(JobEvent.job_id) == job_id)
    if after_id is None:
        latest = session.exec(events.order_by(col(JobEvent.id).desc()).limit(1)).first()
        status = JobStatus(job.status)
        updates = [] if latest is None else [JobUpdate(job_id, status, job.progress, latest)]
        cursor = latest.id if latest is not None and latest.id is not None else 0
        return _Start(updates, cursor, job.progress, status.is_terminal)
    # The progress as of the client's last event, carried on the first events after it.
    earlier = session.exec(
        select(JobEvent.detail)
        .where(
            col(JobEvent.job_id) == job_id,
            col(JobEvent.type) == PROGRESS_EVENT,
            col(JobEvent.id) <= after_id,
        )
        .order_by(col(JobEvent.id).desc())
        .limit(1)
    ).first()
    progress = None if earlier is None else dict(earlier)
    later = list(session.exec(events.where(col(JobEvent.id) > after_id).order_by(col(JobEvent.id))))
    start = _fold(job_id, later, progress)
    cursor = later[-1].id if later and later[-1].id is not None else after_id
    # A terminal job with nothing after the client's event has nothing more to say.
    ended = start.ended or (not later and JobStatus(job.status).is_terminal)
    return _Start(start.updates, cursor, start.progress, ended)


def _fold(job_id: uuid.UUID, events: list[JobEvent], progress: dict[str, Any] | None) -> _Start:
    """Updates for `events` up to the first terminal one, carrying the progress along."""
    updates: list[JobUpdate] = []
    for event in events:
        if event.type == PROGRESS_EVENT:
            progress = event.detail
        status = JobStatus(event.to_status)
        updates.append(JobUpdate(job_id, status, progress, event))
        if status.is_terminal:
            return _Start(updates, 0, progress, True)
    return _Start(updates, 0, progress, False)


class JobUpdates:
    """An open stream: iterate it for `JobUpdate`s; close it (or leave its `async with`) when the
    client goes, which gives back its watch and its place under the per-key cap."""

    def __init__(
        self, feed: JobUpdateFeed, caller: str, job_id: uuid.UUID, start: _Start, watch: Watch | None
    ) -> None:
        self.job_id = job_id
        self._feed = feed
        self._caller = caller
        self._ready = deque(start.updates)
        self._progress = start.progress
        self._ended = start.ended
        self._watch = watch
        self._closed = False

    @property
    def finished(self) -> bool:
        """Nothing is left to send: the job was terminal and the client has every event."""
        return self._ended and not self._ready

    def __aiter__(self) -> JobUpdates:
        return self

    async def __anext__(self) -> JobUpdate:
        while not self._ready:
            if self._ended or self._watch is None:
                self.close()
                raise StopAsyncIteration
            events = await self._watch.next_events()
            if not events:  # the feed stopped (the server is shutting down)
                self._ended = True
                continue
            folded = _fold(self.job_id, events, self._progress)
            self._ready.extend(folded.updates)
            self._progress, self._ended = folded.progress, folded.ended
        return self._ready.popleft()

    def close(self) -> None:
        """Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._watch is not None:
            self._feed.unwatch(self._watch)
        self._feed.release(self._caller)

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> JobUpdates:
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()


async def open_job_updates(
    ctx: Context, job_id: str | uuid.UUID, *, after_event_id: int | None = None
) -> JobUpdates:
    """Open a stream of `job_id`'s updates (needs `jobs:read`), resuming after `after_event_id`."""
    ctx.principal.require(Scope.JOBS_READ)
    key = parse_id(job_id, kind="job")
    feed = ctx.job_updates
    if feed is None:
        raise RuntimeError("live job streams need the server's JobUpdateFeed (the app lifespan's)")
    feed.admit(ctx.principal.id)
    try:
        start = await ctx.db.read(functools.partial(_read_start, job_id=key, after_id=after_event_id))
        watch = None if start.ended else feed.watch(key, start.after_id)
    except BaseException:
        feed.release(ctx.principal.id)
        raise
    return JobUpdates(feed, ctx.principal.id, key, start, watch)
