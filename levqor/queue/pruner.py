"""The retention loop of one process (`levqor serve`, `levqor worker`): when LEVQOR_RETENTION_DAYS is
set, it prunes at start and then every LEVQOR_PRUNE_INTERVAL_S (levqor/queue/retention.py). Any number
of processes may run it; each batch is a short write transaction of its own, in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from levqor.config import Settings
from levqor.db.engine import Database
from levqor.db.types import utcnow
from levqor.queue.retention import prune, retention_cutoff

logger = logging.getLogger(__name__)


class Pruner:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while not self._stopping.is_set():
            cutoff = retention_cutoff(self.settings.retention_days, utcnow())
            if cutoff is None:
                return
            try:
                await prune(self.db, cutoff)
            except Exception:  # the loop outlives a failed pass (a database restart); it is logged
                logger.exception("a retention pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.prune_interval_s)

    def start(self) -> None:
        if self.settings.retention_days > 0 and self._task is None:
            self._task = asyncio.create_task(self.run(), name="levqor-pruner")

    async def stop(self) -> None:
        """Stop now: a batch already in its thread finishes (commits or rolls back) first."""
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
