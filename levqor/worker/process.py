"""Where a worker lives: inside `levqor serve` (owned by the app lifespan) or in `levqor worker`."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from levqor.callbacks.delivery import Deliverer
from levqor.callbacks.guard import HostResolver
from levqor.config import ConfigError, Settings
from levqor.db.engine import Database
from levqor.queue import Wakeup
from levqor.queue.pruner import Pruner
from levqor.scheduling.scheduler import Scheduler
from levqor.worker.loop import Worker
from levqor.workflows import WorkflowRegistry, registry_for

logger = logging.getLogger(__name__)


def make_wakeup(settings: Settings) -> Wakeup:
    """Local pokes always; LISTEN/NOTIFY on PostgreSQL, `data_version` reads on SQLite; polling at
    the configured interval."""
    return Wakeup(poll_interval_s=settings.poll_interval_ms / 1000, listen_url=settings.db_url)


def served_workflows(registry: WorkflowRegistry, names: Sequence[str] | None) -> list[str]:
    """The workflows to claim: the ones asked for, each of which must have a handler here."""
    if not names:
        return registry.local_names()
    local = set(registry.local_names())
    for name in names:
        if name not in registry:
            raise ConfigError(f"unknown workflow {name!r} (registered: {', '.join(registry.local_names())})")
        if name not in local:
            raise ConfigError(f"workflow {name!r} has no handler here; a remote worker serves it")
    return list(dict.fromkeys(names))


class WorkerServices:
    """The wake-up and (optionally) the in-process worker and its callback delivery loop of one
    server process.

    The app lifespan starts them after the database and stops them before disposing of it; the
    worker's stop is graceful, so `levqor serve` on SIGTERM hands its running jobs back."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        run_worker: bool | None = None,
        resolver: HostResolver | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.run_worker = settings.inprocess_worker if run_worker is None else run_worker
        self.resolver = resolver
        self.wakeup = make_wakeup(settings)
        self.worker: Worker | None = None
        self.deliverer: Deliverer | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> Wakeup:
        registry = registry_for(self.settings)  # a bad LEVQOR_WORKFLOWS module stops the start here
        await self.wakeup.start()
        if self.run_worker:
            self.worker = Worker(self.db, registry, self.settings, wakeup=self.wakeup)
            self.deliverer = Deliverer(
                self.db, self.settings, worker_id=self.worker.worker_id, resolver=self.resolver
            )
            self._tasks = [
                asyncio.create_task(self.worker.run(), name="levqor-inprocess-worker"),
                asyncio.create_task(self.deliverer.run(), name="levqor-inprocess-deliveries"),
            ]
            for task in self._tasks:
                task.add_done_callback(_log_if_failed)
        return self.wakeup

    async def stop(self) -> None:
        if self.worker is not None:
            self.worker.stop()
        if self.deliverer is not None:
            self.deliverer.stop()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.wakeup.stop()


def _log_if_failed(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error(
            "a worker service stopped with an error",
            exc_info=task.exception(),
            extra={"task": task.get_name()},
        )


async def run_standalone(
    settings: Settings, *, concurrency: int | None, workflows: Sequence[str] | None
) -> None:
    """`levqor worker`: serve until SIGTERM or SIGINT, then stop gracefully."""
    registry = registry_for(settings)
    names = served_workflows(registry, workflows)
    db = Database(settings.db_url)
    wakeup = make_wakeup(settings)
    await wakeup.start()
    worker = Worker(db, registry, settings, wakeup=wakeup, concurrency=concurrency, workflows=names)
    deliverer = Deliverer(db, settings, worker_id=worker.worker_id)
    scheduler = Scheduler(db, settings)  # unless LEVQOR_SCHEDULER=false
    scheduler.start()
    pruner = Pruner(db, settings)  # when LEVQOR_RETENTION_DAYS is set
    pruner.start()

    def stop() -> None:
        worker.stop()
        deliverer.stop()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)

    async def until_both_stop(service: Worker | Deliverer) -> None:
        try:
            await service.run()
        finally:
            stop()  # one that ends (or fails) ends the other: the process exits, to be restarted

    try:
        await asyncio.gather(until_both_stop(worker), until_both_stop(deliverer))
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await pruner.stop()
        await scheduler.stop()
        await wakeup.stop()
        db.dispose()
