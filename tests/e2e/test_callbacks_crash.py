"""Callbacks survive a worker killed with SIGKILL: jobs finished, their deliveries claimed and hanging
or not yet claimed; after a restart every delivery is made, none is lost, and no attempt is sent twice."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from standardwebhooks import Webhook

from levqor.db.engine import Database
from tests.callback_support import HANG, Receiver, new_webhook_secret, receivers
from tests.queue_support import add_job, start_worker_process, wait_for

pytestmark = pytest.mark.timeout(180)

JOBS = 40
CONCURRENCY = 5  # deliveries in flight per worker: the rest wait in the outbox
SECRET = new_webhook_secret()


@pytest.fixture
def make_receiver() -> Iterator[Callable[[], Receiver]]:
    yield from receivers()


def scalar(db: Database, sql: str) -> int:
    return int(db.read_sync(lambda session: session.execute(text(sql)).scalar_one()))


def test_a_killed_worker_loses_no_delivery_and_sends_no_attempt_twice(
    db_url: str, db: Database, tmp_path: Path, make_receiver: Callable[[], Receiver]
) -> None:
    receiver = make_receiver()
    receiver.script = [HANG] * CONCURRENCY  # the first attempts hang until the worker is killed
    env = {
        "LEVQOR_CALLBACK_ALLOW_PRIVATE": "true",
        "LEVQOR_WEBHOOK_SECRET": SECRET,
        "LEVQOR_CALLBACK_CONCURRENCY": str(CONCURRENCY),
        "LEVQOR_CALLBACK_TIMEOUT_S": "3",  # a lease of 6 s: the hung attempts are due again then
        "LEVQOR_POLL_INTERVAL_MS": "20",
    }
    first = start_worker_process(db_url, tmp_path / "first.log", **env)
    try:
        for n in range(JOBS):
            add_job(db, payload={"n": n}, callback_url=receiver.url)
        wait_for(
            lambda: scalar(db, "SELECT count(*) FROM jobs WHERE status = 'succeeded'") == JOBS,
            what="every job to succeed",
        )
        wait_for(lambda: len(receiver.snapshot()) >= CONCURRENCY, what="the first deliveries to hang")
        assert scalar(db, "SELECT count(*) FROM callback_deliveries") == JOBS  # all in the outbox
        first.signal(signal.SIGKILL)
        first.wait()
    finally:
        if first.process.poll() is None:
            first.process.kill()
    assert scalar(db, "SELECT count(*) FROM callback_deliveries WHERE status = 'delivered'") == 0

    second = start_worker_process(db_url, tmp_path / "second.log", **env)
    try:
        wait_for(
            lambda: scalar(db, "SELECT count(*) FROM callback_deliveries WHERE status = 'delivered'") == JOBS,
            timeout_s=60,
            what="every delivery to be made",
        )
    finally:
        second.signal(signal.SIGTERM)
        second.wait()

    hits = receiver.snapshot()
    sent = Counter((hit.headers["webhook-id"], hit.headers["levqor-delivery-attempt"]) for hit in hits)
    assert max(sent.values()) == 1  # no attempt sent twice
    assert len({webhook_id for webhook_id, _ in sent}) == JOBS  # every event arrived
    assert len(hits) == JOBS + CONCURRENCY  # the hung ones once more, nothing else
    for hit in hits:
        Webhook(SECRET).verify(hit.body, hit.headers)
    assert scalar(db, "SELECT count(*) FROM callback_deliveries") == JOBS  # none made up
    assert scalar(db, "SELECT count(*) FROM callback_attempts") == JOBS + CONCURRENCY
    # The killed worker's attempts stay on record, unfinished.
    assert scalar(db, "SELECT count(*) FROM callback_attempts WHERE finished_at IS NULL") == CONCURRENCY
    assert (
        scalar(
            db,
            "SELECT count(*) FROM (SELECT delivery_id, attempt FROM callback_attempts "
            "GROUP BY delivery_id, attempt HAVING count(*) > 1) AS twice",
        )
        == 0
    )
