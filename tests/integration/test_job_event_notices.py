"""Job event notices on PostgreSQL (levqor/queue/job_event_notices.py): writers NOTIFY only while a
stream's listener is connected, once per transaction; a listener hears other connections."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from sqlalchemy.engine import make_url

from levqor import queue
from levqor.db.engine import Database
from levqor.db.models import Job
from levqor.queue.job_event_notices import (
    CHANNEL,
    LISTENER_APPLICATION,
    LISTENER_PRESENCE_TTL_S,
    JobEventListener,
)
from tests.queue_support import add_job

pytestmark = [pytest.mark.timeout(60), pytest.mark.parametrize("db_kind", ["postgres"])]


def pg_conninfo(db: Database) -> str:
    return make_url(db.url).set(drivername="postgresql").render_as_string(hide_password=False)


async def test_event_writes_notify_only_while_a_stream_listens(db: Database, db_kind: str) -> None:
    """A queue nobody watches sends no NOTIFY; once a listener is there, each transaction that
    writes job events sends one, however many events it writes."""
    conninfo = pg_conninfo(db)
    async with await psycopg.AsyncConnection.connect(
        conninfo, autocommit=True, application_name="test-observer"
    ) as observer:
        await observer.execute(f"LISTEN {CHANNEL}")

        async def notices(within_s: float) -> int:
            count = 0
            async for _notice in observer.notifies(timeout=within_s):
                count += 1
            return count

        await asyncio.sleep(LISTENER_PRESENCE_TTL_S + 0.1)  # what this process read before is stale
        add_job(db)
        assert await notices(0.5) == 0  # the observer does not count as a stream's listener
        async with await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, application_name=LISTENER_APPLICATION
        ):
            await asyncio.sleep(LISTENER_PRESENCE_TTL_S + 0.1)
            db.write_sync(
                lambda session: [queue.enqueue(session, Job(workflow="echo", payload={})) for _ in range(3)]
            )
            assert await notices(1.0) == 1


async def test_a_listener_hears_another_connection_s_notification(db: Database, db_kind: str) -> None:
    heard = asyncio.Event()
    listener = JobEventListener(db_url=db.url, poll_interval_s=30.0, on_notice=heard.set)
    await listener.start()
    try:
        await asyncio.wait_for(heard.wait(), 10)  # the first notice comes with LISTEN itself
        assert listener.listening_since is not None
        assert listener.poll_interval_s() == 30.0  # catching up: what was sent before is polled for
        heard.clear()
        async with await psycopg.AsyncConnection.connect(pg_conninfo(db), autocommit=True) as other:
            await other.execute(f"NOTIFY {CHANNEL}")
        await asyncio.wait_for(heard.wait(), 10)
    finally:
        await listener.stop()
    assert listener.listening_since is None
