"""Coalescing concurrent database calls of one event loop into one thread hop and one transaction.

Under load, many requests want the same kind of call at once (insert a job, read a job's status).
Paid one by one, each costs a thread hop, a pooled connection and a transaction, which outweigh the
statement. A `Batcher` queues the calls; one task takes everything waiting (up to `max_batch`),
runs `run_batch` on all of it in a worker thread, and hands each caller its own result. Nothing
waits for a batch to fill: a lone call goes at once, and calls that arrive while one batch runs form
the next, so batches grow exactly as fast as the database falls behind.

A batch that raises is run again item by item, so one bad item fails only its own caller, unless
`retry_alone` says the error is not the items' fault (the database is down or locked): then every
caller of the batch gets it at once, rather than each after its own wait.

Each batcher has a thread of its own for its batches (`BatchThread`): a queue in, the loop's
`call_soon_threadsafe` out. Under load the hop happens once per batch, and on a fast database
batches are small; a general thread pool's hop (anyio's: capacity tokens, cancel scopes, a look-up
of the running library) cost as much as the statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import anyio.to_thread

logger = logging.getLogger(__name__)

# For batches read with one `WHERE ... IN (...)`: fewer than psycopg's 50 parameters, so every such
# statement text stays in its parse cache.
MAX_IN_LIST_BATCH = 48

K = TypeVar("K")
R = TypeVar("R")


class BatchThread(Generic[K, R]):
    """One thread that runs `run_batch` for one event loop's batcher, a batch at a time."""

    def __init__(self, run_batch: Callable[[Sequence[K]], Sequence[R]], name: str) -> None:
        self._run_batch = run_batch
        self._inbox: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], list[K]] | None]
        self._inbox = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, items: list[K]) -> asyncio.Future[Sequence[R]]:
        """`run_batch(items)` in the thread; the future is settled on the calling loop."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Sequence[R]] = loop.create_future()
        self._inbox.put((loop, answer, items))
        return answer

    def stop(self) -> None:
        """The thread ends after the batch it runs, if any; it takes no more."""
        self._inbox.put(None)

    def _serve(self) -> None:
        while (work := self._inbox.get()) is not None:
            loop, answer, items = work
            try:
                outcome: tuple[Any, BaseException | None] = (self._run_batch(items), None)
            except BaseException as exc:  # handed to the caller, as a thread pool would
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, answer, *outcome)


def _settle(answer: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if answer.cancelled():
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)


@dataclass(slots=True)
class _Call(Generic[K, R]):
    item: K
    answer: asyncio.Future[R]


class Batcher(Generic[K, R]):
    """`run_batch(items)` returns one result per item, in order; it runs in a worker thread.

    Owned by a lifespan: `start` before serving, `stop` after; `stop` runs the calls already waiting
    before it returns. Before `start` and after `stop`, a call runs alone (still off the loop)."""

    def __init__(
        self,
        run_batch: Callable[[Sequence[K]], Sequence[R]],
        *,
        max_batch: int,
        retry_alone: Callable[[Exception], bool] = lambda _exc: True,
    ) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._retry_alone = retry_alone
        self._queue: asyncio.Queue[_Call[K, R] | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: BatchThread[K, R] | None = None

    async def start(self, name: str) -> None:
        self._thread = BatchThread(self._run_batch, name)
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._run(self._queue, self._thread), name=name)

    async def stop(self) -> None:
        queue, task, thread = self._queue, self._task, self._thread
        self._queue = self._task = self._thread = None  # later calls run alone
        if queue is None or task is None or thread is None:
            return
        queue.put_nowait(None)
        try:
            await task
        finally:
            thread.stop()

    async def call(self, item: K) -> R:
        queue = self._queue
        if queue is None:
            return (await anyio.to_thread.run_sync(self._run_batch, [item]))[0]
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        queue.put_nowait(_Call(item, answer))
        return await answer

    async def _run(self, queue: asyncio.Queue[_Call[K, R] | None], thread: BatchThread[K, R]) -> None:
        batch: list[_Call[K, R]] = []
        stopping = False
        try:
            while not stopping:
                first = await queue.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < self._max_batch and not queue.empty():
                    waiting = queue.get_nowait()
                    if waiting is None:
                        stopping = True
                        break
                    batch.append(waiting)
                await self._answer(batch, thread)
                batch = []
        finally:
            # Cancelled without `stop` (the loop is closing): no caller may wait forever.
            while not queue.empty():
                waiting = queue.get_nowait()
                if waiting is not None:
                    batch.append(waiting)
            for call in batch:
                if not call.answer.done():
                    call.answer.set_exception(RuntimeError("the batcher has stopped"))

    async def _answer(self, batch: list[_Call[K, R]], thread: BatchThread[K, R]) -> None:
        try:
            results = await thread.run([call.item for call in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} gave {len(results)} results")
        except Exception as exc:
            if len(batch) == 1 or not self._retry_alone(exc):
                for call in batch:
                    if not call.answer.done():
                        call.answer.set_exception(exc)
                return
            logger.warning("a batch of %d calls failed; running them one by one", len(batch), exc_info=True)
            for call in batch:
                await self._answer([call], thread)
            return
        for call, result in zip(batch, results, strict=True):
            if not call.answer.done():  # a caller that went away has cancelled its wait
                call.answer.set_result(result)
