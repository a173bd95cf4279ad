"""The scheduler loop of one process (`levqor serve`, `levqor worker`): every
LEVQOR_SCHEDULER_INTERVAL_MS it fires the due schedules. Any number of processes may run it; each
tick fires once (levqor/resolvers/schedule_fires.py). LEVQOR_SCHEDULER=false leaves it out."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from levqor.callbacks.guard import HostResolver
from levqor.config import Settings
from levqor.db.engine import Database
from levqor.resolvers.schedule_fires import fire_due

logger = logging.getLogger(__name__)


class Scheduler:
    def __init__(self, db: Database, settings: Settings, *, resolver: HostResolver | None = None) -> None:
        self.db = db
        self.settings = settings
        self.resolver = resolver
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        interval_s = self.settings.scheduler_interval_ms / 1000
        while not self._stopping.is_set():
            try:
                await fire_due(self.db, self.settings, resolver=self.resolver)
            except Exception:  # the loop outlives a failed pass (a database restart); it is logged
                logger.exception("a scheduler pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), interval_s)

    def start(self) -> None:
        if self.settings.scheduler and self._task is None:
            self._task = asyncio.create_task(self.run(), name="levqor-scheduler")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
            self._task = None
