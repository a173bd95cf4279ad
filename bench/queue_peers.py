"""The peers bench/queue.py measures Levqor against, and their drains: the same no-op job as a
PgQueuer entrypoint (bench/pgqueuer_peer.py), a procrastinate task (bench/procrastinate_peer.py), a
Celery task and an RQ job function. Celery and RQ workers import this module as `bench.queue_peers`.

Celery and RQ store their result in Redis, as Levqor stores its result in the database: a run that
throws its results away would not be the same job. PgQueuer and procrastinate keep no results; they
record every job's state changes (PgQueuer's log rows, procrastinate's events), which the bench
reads. The Celery task returns the time it ran, because Celery records only when a task finished
(`date_done`), not when it started.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from kombu import Exchange
from kombu import Queue as KombuQueue
from sqlalchemy import TextClause, create_engine, text
from sqlalchemy.engine import make_url

from bench.queue_support import (
    Drain,
    Processes,
    drain_from,
    python,
    scratch_postgres,
    utc_now,
    wait_until,
)

REDIS_URL = os.environ.get("LEVQOR_BENCH_REDIS", "redis://127.0.0.1:6379")
CELERY_BROKER_DB = 13
CELERY_RESULTS_DB = 12
RQ_DB = 14
QUEUE_NAME = "levqor_bench"

celery_app = Celery(
    "levqor_bench",
    broker=f"{REDIS_URL}/{CELERY_BROKER_DB}",
    backend=f"{REDIS_URL}/{CELERY_RESULTS_DB}",
)
celery_app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE_NAME,
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    # Messages a worker takes ahead of time: 64 (Celery's default is 4) measured a little faster for
    # no-op tasks, so the peer gets the better setting.
    worker_prefetch_multiplier=int(os.environ.get("LEVQOR_BENCH_CELERY_PREFETCH", "64")),
)


@celery_app.task(name="levqor_bench.echo")
def celery_echo(payload: dict[str, Any]) -> dict[str, Any]:
    return {"payload": payload, "ran_at": time.time()}


def rq_echo(payload: dict[str, Any]) -> dict[str, Any]:
    return payload


# --- the drains (run by bench/queue.py, not by the workers) -------------------------------------

CELERY_RESULT_KEY = "celery-task-meta-{}"
ENQUEUE_CHUNK = 1000


def _redis(db: int) -> Any:
    import redis

    return redis.Redis.from_url(f"{REDIS_URL}/{db}")


def run_celery(n: int, processes: Processes, *, timeout_s: float) -> Drain:
    """Celery with the Redis broker: 2 worker processes, each the solo pool (one process, one task at
    a time, no fork, the fastest pool for no-op tasks), gossip, mingle and heartbeats off, results on.
    The queue and the results are this run's own, so two runs on one Redis do not mix."""
    run = uuid.uuid4().hex[:8]
    queue_name = f"{QUEUE_NAME}_{run}"
    results = _redis(CELERY_RESULTS_DB)
    ids = [celery_echo.apply_async(args=[{"n": i}], queue=queue_name).id for i in range(n)]
    key_chunks = [
        [CELERY_RESULT_KEY.format(task_id) for task_id in ids[chunk_start : chunk_start + ENQUEUE_CHUNK]]
        for chunk_start in range(0, n, ENQUEUE_CHUNK)
    ]
    try:
        spawned_at, started = utc_now(), time.monotonic()
        for index in range(2):
            processes.spawn(
                f"celery-{index}",
                python(
                    "-m",
                    "celery",
                    "-A",
                    "bench.queue_peers",
                    "worker",
                    "--pool",
                    "solo",
                    "--concurrency",
                    "1",
                    "--queues",
                    queue_name,
                    "--loglevel",
                    "WARNING",
                    "--without-heartbeat",
                    "--without-mingle",
                    "--without-gossip",
                    "--hostname",
                    f"bench{index}-{run}@%h",
                ),
            )
        wait_until(
            _all_stored(results, key_chunks),
            timeout_s=timeout_s,
            what="the Celery drain",
            processes=processes,
        )
        wall_s = time.monotonic() - started
        metas = [json.loads(raw) for keys in key_chunks for raw in results.mget(keys)]
        processes.stop_all()
    finally:
        for keys in key_chunks:
            results.delete(*keys)
        # Declared on this connection so that deleting it also drops the broker's binding of it.
        queue = KombuQueue(queue_name, Exchange(queue_name, type="direct"), routing_key=queue_name)
        with celery_app.connection_for_write() as connection:
            bound = queue(connection.default_channel)
            bound.declare()
            bound.delete()
    succeeded = sum(1 for meta in metas if meta["status"] == "SUCCESS")
    first = min(datetime.fromtimestamp(meta["result"]["ran_at"], UTC) for meta in metas)
    last = max(datetime.fromisoformat(meta["date_done"]) for meta in metas)
    return drain_from("celery", n, succeeded, spawned_at=spawned_at, first=first, last=last, wall_s=wall_s)


def _all_stored(client: Any, key_chunks: list[list[str]]) -> Callable[[], bool]:
    """Whether every key exists yet, asking about the first chunk not yet complete: results arrive
    about in order, so a poll mostly asks about one chunk of keys, not all of them."""
    pending = list(key_chunks)

    def done() -> bool:
        while pending and client.exists(*pending[0]) == len(pending[0]):
            pending.pop(0)
        return not pending

    return done


def run_rq(n: int, processes: Processes, *, timeout_s: float) -> Drain:
    """RQ: 2 `SimpleWorker` processes (jobs run in the worker process, no fork per job), results kept.
    The queue, its jobs and the worker names are this run's own, so two runs on one Redis do not mix."""
    from rq import Queue
    from rq.job import Job
    from rq.registry import FinishedJobRegistry
    from rq.results import Result

    run = uuid.uuid4().hex[:8]
    connection = _redis(RQ_DB)
    rq_queue = Queue(f"{QUEUE_NAME}_{run}", connection=connection)
    ids: list[str] = []
    try:
        for chunk_start in range(0, n, ENQUEUE_CHUNK):
            batch = [
                Queue.prepare_data(rq_echo, args=({"n": i},), result_ttl=3600)
                for i in range(chunk_start, min(n, chunk_start + ENQUEUE_CHUNK))
            ]
            ids.extend(job.id for job in rq_queue.enqueue_many(batch))
        finished = FinishedJobRegistry(queue=rq_queue)
        spawned_at, started = utc_now(), time.monotonic()
        for index in range(2):
            processes.spawn(
                f"rq-{index}",
                python(
                    "-m",
                    "rq.cli",
                    "worker",
                    "--worker-class",
                    "rq.worker.SimpleWorker",
                    "--url",
                    f"{REDIS_URL}/{RQ_DB}",
                    "--logging_level",
                    "WARNING",
                    "--name",
                    f"bench-{index}-{run}",
                    rq_queue.name,
                ),
            )
        wait_until(lambda: finished.count >= n, timeout_s=timeout_s, what="the RQ drain", processes=processes)
        wall_s = time.monotonic() - started
        processes.stop_all()
        jobs = [job for job in Job.fetch_many(ids, connection=connection) if job is not None]
        succeeded = sum(1 for job in jobs if job.get_status(refresh=False) == "finished")
        first = min(job.started_at for job in jobs if job.started_at)
        last = max(job.ended_at for job in jobs if job.ended_at)
    finally:
        processes.stop_all()
        for chunk_start in range(0, len(ids), ENQUEUE_CHUNK):
            chunk = Job.fetch_many(ids[chunk_start : chunk_start + ENQUEUE_CHUNK], connection=connection)
            with connection.pipeline() as pipe:
                for job in chunk:
                    if job is not None:
                        job.delete(pipeline=pipe, remove_from_queue=False)
                        pipe.delete(Result.get_key(job.id))
                pipe.execute()
        rq_queue.delete(delete_jobs=True)
    return drain_from("rq", n, succeeded, spawned_at=spawned_at, first=first, last=last, wall_s=wall_s)


PGQUEUER_COUNTS = text(
    "SELECT count(*) FILTER (WHERE status = 'successful'),"
    " min(created) FILTER (WHERE status = 'picked'),"
    " max(created) FILTER (WHERE status = 'successful')"
    " FROM pgqueuer_log"
)
# A job counts as succeeded when its log has exactly one `successful` row: none means it did not
# finish, two would mean it ran twice.
PGQUEUER_SUCCEEDED_ONCE = text(
    "SELECT job_id FROM pgqueuer_log WHERE status = 'successful' GROUP BY job_id HAVING count(*) = 1"
)


def run_pgqueuer(n: int, processes: Processes, *, timeout_s: float, pg_admin_url: str) -> Drain:
    """PgQueuer on a scratch database of its own: its schema installed by its API, 2 worker processes
    of bench/pgqueuer_peer.py (`PgQueuer.run()` with its defaults: batches of 10)."""
    with scratch_postgres(pg_admin_url, "pgqueuer") as url:
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        ids = set(asyncio.run(_pgqueuer_install_and_enqueue(dsn, n)))
        spawn = [python("-m", "bench.pgqueuer_peer", dsn)] * 2
        return _drain_on_postgres(
            "pgqueuer", url, ids, processes, spawn, {}, PGQUEUER_COUNTS, PGQUEUER_SUCCEEDED_ONCE, timeout_s
        )


async def _pgqueuer_install_and_enqueue(dsn: str, n: int) -> list[int]:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    from bench.pgqueuer_peer import ENTRYPOINT

    connection = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(connection))
        await queries.install()
        ids: list[int] = []
        for chunk_start in range(0, n, ENQUEUE_CHUNK):
            size = min(n, chunk_start + ENQUEUE_CHUNK) - chunk_start
            payloads = [json.dumps({"n": i}).encode() for i in range(chunk_start, chunk_start + size)]
            ids.extend(await queries.enqueue([ENTRYPOINT] * size, payloads, [0] * size))
        return ids
    finally:
        await connection.close()


PROCRASTINATE_COUNTS = text(
    "SELECT count(*) FILTER (WHERE type = 'succeeded'),"
    " min(at) FILTER (WHERE type = 'started'),"
    " max(at) FILTER (WHERE type = 'succeeded')"
    " FROM procrastinate_events"
)
# A job counts as succeeded when its status says so and it has exactly one `succeeded` event.
PROCRASTINATE_SUCCEEDED_ONCE = text(
    "SELECT jobs.id FROM procrastinate_jobs AS jobs JOIN procrastinate_events AS events"
    " ON events.job_id = jobs.id AND events.type = 'succeeded'"
    " WHERE jobs.status = 'succeeded' GROUP BY jobs.id HAVING count(*) = 1"
)


def run_procrastinate(n: int, processes: Processes, *, timeout_s: float, pg_admin_url: str) -> Drain:
    """procrastinate on a scratch database of its own: its schema applied by its schema manager, 2
    processes of its own worker command with its defaults (bench/procrastinate_peer.py)."""
    import procrastinate

    from bench.procrastinate_peer import TASK_NAME, app

    with scratch_postgres(pg_admin_url, "procrastinate") as url:
        location = make_url(url)
        conninfo = location.set(drivername="postgresql").render_as_string(hide_password=False)
        # The bench defers synchronously, on a connector of its own for this database.
        connector = procrastinate.SyncPsycopgConnector(conninfo=conninfo)
        with app.replace_connector(connector) as sync_app, sync_app.open():
            sync_app.schema_manager.apply_schema()
            ids: set[int] = set()
            for chunk_start in range(0, n, ENQUEUE_CHUNK):
                batch = [{"n": i} for i in range(chunk_start, min(n, chunk_start + ENQUEUE_CHUNK))]
                ids.update(sync_app.configure_task(TASK_NAME).batch_defer(*batch))
        libpq_env = {
            "PGHOST": location.host or "",
            "PGPORT": str(location.port or 5432),
            "PGUSER": location.username or "",
            "PGPASSWORD": location.password or "",
            "PGDATABASE": location.database or "",
        }
        command = python(
            "-m", "procrastinate", "--app", "bench.procrastinate_peer.app", "--log-level", "warning", "worker"
        )
        return _drain_on_postgres(
            "procrastinate",
            url,
            ids,
            processes,
            [command] * 2,
            libpq_env,
            PROCRASTINATE_COUNTS,
            PROCRASTINATE_SUCCEEDED_ONCE,
            timeout_s,
        )


def _drain_on_postgres(
    system: str,
    url: str,
    ids: set[int],
    processes: Processes,
    commands: Sequence[Sequence[str]],
    env: dict[str, str],
    counts_sql: TextClause,
    once_sql: TextClause,
    timeout_s: float,
) -> Drain:
    """Spawn a PostgreSQL queue's worker processes and wait for `ids` to be done; `counts_sql` gives
    (successes, first start, last finish) and `once_sql` the ids that succeeded exactly once."""
    engine = create_engine(url, pool_size=1)
    try:

        def counts() -> tuple[int, datetime | None, datetime | None]:
            with engine.connect() as conn:
                succeeded, first, last = conn.execute(counts_sql).one()
            return int(succeeded), first, last

        spawned_at, started = utc_now(), time.monotonic()
        for index, command in enumerate(commands):
            processes.spawn(f"{system}-{index}", command, env)
        wait_until(
            lambda: counts()[0] >= len(ids),
            timeout_s=timeout_s,
            what=f"the {system} drain",
            processes=processes,
        )
        wall_s = time.monotonic() - started
        processes.stop_all()
        _succeeded, first, last = counts()
        with engine.connect() as conn:
            once = {row[0] for row in conn.execute(once_sql)}
    finally:
        engine.dispose()
    assert first is not None
    assert last is not None
    return drain_from(
        system, len(ids), len(ids & once), spawned_at=spawned_at, first=first, last=last, wall_s=wall_s
    )
