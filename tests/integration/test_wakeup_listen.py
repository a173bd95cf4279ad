"""PostgreSQL notifications wake claimers in other processes (levqor/queue/wakeup.py): a process
listens from the first wait for jobs on, and a process where nothing waits holds no listening
connection."""

from __future__ import annotations

import asyncio
import time

import psycopg

from levqor.queue.wakeup import CHANNEL, Wakeup, _libpq_url


def _listeners(url: str) -> int:
    with psycopg.connect(_libpq_url(url), autocommit=True) as connection:
        row = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query = %s",
            (f"LISTEN {CHANNEL}",),
        ).fetchone()
        return int(row[0]) if row else 0


async def _notify_from_elsewhere(url: str) -> None:
    async with await psycopg.AsyncConnection.connect(_libpq_url(url), autocommit=True) as other:
        await other.execute(f"NOTIFY {CHANNEL}")


async def test_a_notification_from_another_connection_ends_a_wait(pg_database_url: str) -> None:
    db_url = pg_database_url
    wakeup = Wakeup(poll_interval_s=30.0, listen_url=db_url)
    await wakeup.start()
    try:
        assert _listeners(db_url) == 0  # nothing has waited yet: no listening connection
        # The first wait starts listening; the poke that follows LISTEN ends it (anything sent
        # before LISTEN would have been missed, so the claimer looks again).
        await asyncio.wait_for(wakeup.wait_for_jobs(30.0), 10)
        assert wakeup.listening
        assert _listeners(db_url) == 1
        waiting = asyncio.create_task(wakeup.wait_for_jobs(30.0, since=wakeup.token()))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        started = time.monotonic()
        await _notify_from_elsewhere(db_url)
        await asyncio.wait_for(waiting, 10)
        assert time.monotonic() - started < 5  # the notification, not the 30 s poll interval
    finally:
        await wakeup.stop()
    assert _listeners(db_url) == 0
