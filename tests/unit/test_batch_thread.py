"""A batcher's own thread (levqor/db/batching.py `BatchThread`): each batch runs off the event loop and
its answer, or its error, reaches the loop that asked; a caller that gave up, or a loop that closed,
does not stop the thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from levqor.db.batching import Batcher, BatchThread


def _doubled_with_thread_names(items: Sequence[int]) -> list[tuple[int, str]]:
    if any(item < 0 for item in items):
        raise ValueError("negative")
    return [(item * 2, threading.current_thread().name) for item in items]


def test_a_batch_runs_in_the_thread_and_answers_on_the_loop() -> None:
    thread = BatchThread(_doubled_with_thread_names, "test-batches")

    async def ask() -> Sequence[tuple[int, str]]:
        return await thread.run([1, 2, 3])

    try:
        assert asyncio.run(ask()) == [(2, "test-batches"), (4, "test-batches"), (6, "test-batches")]
    finally:
        thread.stop()


def test_an_error_reaches_the_caller_and_the_thread_goes_on() -> None:
    thread = BatchThread(_doubled_with_thread_names, "test-batches")

    async def ask() -> Sequence[tuple[int, str]]:
        with pytest.raises(ValueError, match="negative"):
            await thread.run([1, -1])
        return await thread.run([5])

    try:
        assert asyncio.run(ask()) == [(10, "test-batches")]
    finally:
        thread.stop()


def test_a_caller_that_gave_up_or_a_closed_loop_does_not_stop_the_thread() -> None:
    release = threading.Event()

    def slow(items: Sequence[int]) -> list[int]:
        release.wait(5)
        return list(items)

    thread = BatchThread(slow, "test-batches")

    async def give_up() -> None:
        waiting = thread.run([1])
        await asyncio.sleep(0)
        waiting.cancel()  # the caller went away; the batch still runs to its end

    async def leave_one_behind() -> None:
        thread.run([2])  # its loop closes before the answer comes

    async def ask() -> Sequence[int]:
        return await thread.run([3])

    try:
        asyncio.run(give_up())
        asyncio.run(leave_one_behind())
        release.set()
        assert asyncio.run(ask()) == [3]
    finally:
        thread.stop()


def test_stop_ends_the_batchers_thread() -> None:
    async def serve() -> tuple[list[tuple[int, str]], list[str]]:
        batcher: Batcher[int, tuple[int, str]] = Batcher(_doubled_with_thread_names, max_batch=8)
        await batcher.start("test-batches-stop")
        answers = await asyncio.gather(*(batcher.call(item) for item in range(3)))
        await batcher.stop()
        await asyncio.sleep(0.2)
        alive = [thread.name for thread in threading.enumerate()]
        return answers, alive

    answers, alive = asyncio.run(serve())
    assert answers == [(0, "test-batches-stop"), (2, "test-batches-stop"), (4, "test-batches-stop")]
    assert "test-batches-stop" not in alive
