"""What bench/growth.py does to its databases: seed finished jobs in the database itself, put a
database back to its seeded state between measurements, and measure its tables and indexes.

Seeded rows look like the ones Levqor writes (levqor/queue/events.py, levqor/queue/intake.py): a
distinct uuid4 per job, `echo` with a small payload, mostly `succeeded` (1 in 50 `failed`, 1 in 200
`cancelled`), one attempt, created over the past 30 days in `seq` order, and three events each
(`submitted`, `claimed`, then the outcome), written job by job in time order.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

SEED_DAYS = 30
FAILED_EVERY = 50  # 2 % of the seeded jobs failed
CANCELLED_EVERY = 200  # 0.5 % were cancelled
SEED_WORKERS = 4  # worker ids the seeded jobs ran on
SQLITE_SEED_CACHE_KIB = 512 * 1024  # page cache of the seeding connection only
GROWTH_TABLES = ("jobs", "job_events")


@dataclass(frozen=True)
class Baseline:
    """The last job and event of the seeded state: whatever a measurement adds comes after them."""

    job_seq: int
    event_id: int


def libpq_url(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def sqlite_path(url: str) -> str:
    database = make_url(url).database
    assert database is not None
    return database


# --- seeding ----------------------------------------------------------------------------------------

_PG_SEED_JOBS = """
INSERT INTO jobs (id, workflow, payload, callback_url, priority, status, user_id, submitted_by,
    idempotency_key, request_hash, run_at, attempts, max_attempts, timeout_s, lease_expires_at,
    worker_id, cancel_requested, result, error, cost_estimate_micros, cost_actual_micros,
    created_at, updated_at, started_at, finished_at)
SELECT gen_random_uuid(), 'echo', jsonb_build_object('message', 'job ' || g), NULL, 1, s.status, NULL,
    'static:bench', NULL, NULL, t.created, 1, 3, 60, NULL,
    'bench-host:' || (g %% %(workers)s) || ':seeded', false,
    CASE WHEN s.status = 'succeeded' THEN jsonb_build_object('message', 'job ' || g) ELSE 'null' END,
    CASE s.status WHEN 'failed' THEN '{"type": "error", "message": "seeded failure"}'::jsonb
        WHEN 'cancelled' THEN '{"type": "cancelled"}'::jsonb ELSE 'null' END,
    NULL, NULL, t.created, t.finished, t.started, t.finished
FROM generate_series(1, %(n)s) AS g
CROSS JOIN LATERAL (SELECT CASE WHEN g %% %(failed)s = 0 THEN 'failed'
    WHEN g %% %(cancelled)s = 1 THEN 'cancelled' ELSE 'succeeded' END AS status) AS s
CROSS JOIN LATERAL (SELECT %(start)s::timestamptz + g * %(step_s)s * interval '1 second' AS created) AS c
CROSS JOIN LATERAL (SELECT c.created AS created,
    c.created + random() * interval '50 milliseconds' AS started) AS d
CROSS JOIN LATERAL (SELECT d.created, d.started,
    d.started + random() * interval '20 milliseconds' AS finished) AS t
"""

_PG_SEED_EVENTS = """
INSERT INTO job_events (job_id, at, type, from_status, to_status, attempt, worker_id, detail)
SELECT j.id, e.at, e.type, e.from_status, e.to_status, e.attempt, e.worker_id, e.detail
FROM jobs AS j CROSS JOIN LATERAL (VALUES
    (1, j.created_at, 'submitted', NULL::varchar, 'queued'::varchar, 0, NULL::varchar, 'null'::jsonb),
    (2, j.started_at, 'claimed', 'queued', 'running', 1, j.worker_id, 'null'),
    (3, j.finished_at, j.status, 'running', j.status, 1, j.worker_id,
        CASE WHEN j.status = 'failed' THEN '{"reason": "not retryable"}'::jsonb ELSE 'null' END)
) AS e(k, at, type, from_status, to_status, attempt, worker_id, detail)
ORDER BY j.seq, e.k
"""


def _seed_parameters(n: int) -> dict[str, Any]:
    start = datetime.now(UTC) - timedelta(days=SEED_DAYS)
    return {
        "n": n,
        "start": start,
        "step_s": SEED_DAYS * 86_400 / max(n, 1),
        "workers": SEED_WORKERS,
        "failed": FAILED_EVERY,
        "cancelled": CANCELLED_EVERY,
    }


def seed_postgres(url: str, n: int) -> dict[str, float]:
    """N finished jobs and their events by INSERT ... SELECT, then VACUUM ANALYZE (autovacuum would
    have run many times over 30 days); the seconds each step took."""
    timings: dict[str, float] = {}
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        started = time.perf_counter()
        with conn.transaction():
            conn.execute(_PG_SEED_JOBS, _seed_parameters(n))  # type: ignore[arg-type]
            conn.execute(_PG_SEED_EVENTS)
        timings["insert_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE jobs, job_events")
        timings["vacuum_analyze_s"] = time.perf_counter() - started
    return timings


def _sqlite_time(micros: str) -> str:
    """SQL for the text form Levqor's UtcDateTime stores on SQLite, from microseconds since 1970."""
    seconds = f"strftime('%Y-%m-%d %H:%M:%S', ({micros}) / 1000000, 'unixepoch')"
    return f"({seconds} || printf('.%06d', ({micros}) % 1000000))"


def _sqlite_seed_jobs() -> str:
    # A uuid4 as SQLAlchemy's Uuid stores it on SQLite: 32 hex digits, version 4, variant 10xx.
    uuid4 = "substr(h, 1, 12) || '4' || substr(h, 14, 3) || substr('89ab', 1 + (v % 4), 1) || substr(h, 18)"
    return f"""
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :n),
r AS MATERIALIZED (SELECT n, lower(hex(randomblob(16))) AS h, abs(random()) AS v,
    :start_us + n * :step_us AS created_us, abs(random()) % 50000 AS claim_us,
    abs(random()) % 20000 AS run_us,
    CASE WHEN n % :failed = 0 THEN 'failed' WHEN n % :cancelled = 1 THEN 'cancelled'
        ELSE 'succeeded' END AS status
    FROM g)
INSERT INTO jobs (id, workflow, payload, callback_url, priority, status, user_id, submitted_by,
    idempotency_key, request_hash, run_at, attempts, max_attempts, timeout_s, lease_expires_at,
    worker_id, cancel_requested, result, error, cost_estimate_micros, cost_actual_micros,
    created_at, updated_at, started_at, finished_at)
SELECT {uuid4}, 'echo', json_object('message', 'job ' || n), NULL, 1, status, NULL, 'static:bench',
    NULL, NULL, {_sqlite_time("created_us")}, 1, 3, 60, NULL,
    'bench-host:' || (n % :workers) || ':seeded', 0,
    CASE WHEN status = 'succeeded' THEN json_object('message', 'job ' || n) ELSE 'null' END,
    CASE status WHEN 'failed' THEN '{{"type": "error", "message": "seeded failure"}}'
        WHEN 'cancelled' THEN '{{"type": "cancelled"}}' ELSE 'null' END,
    NULL, NULL, {_sqlite_time("created_us")}, {_sqlite_time("created_us + claim_us + run_us")},
    {_sqlite_time("created_us + claim_us")}, {_sqlite_time("created_us + claim_us + run_us")}
FROM r
"""


# CROSS JOIN keeps `jobs` the outer loop, so the rows come out in (seq, k) order without a sort.
_SQLITE_SEED_EVENTS = """
INSERT INTO job_events (job_id, at, type, from_status, to_status, attempt, worker_id, detail)
SELECT j.id,
    CASE e.k WHEN 1 THEN j.created_at WHEN 2 THEN j.started_at ELSE j.finished_at END,
    CASE e.k WHEN 1 THEN 'submitted' WHEN 2 THEN 'claimed' ELSE j.status END,
    CASE e.k WHEN 1 THEN NULL WHEN 2 THEN 'queued' ELSE 'running' END,
    CASE e.k WHEN 1 THEN 'queued' WHEN 2 THEN 'running' ELSE j.status END,
    CASE e.k WHEN 1 THEN 0 ELSE 1 END,
    CASE e.k WHEN 1 THEN NULL ELSE j.worker_id END,
    CASE WHEN e.k = 3 AND j.status = 'failed' THEN '{"reason": "not retryable"}' ELSE 'null' END
FROM jobs AS j CROSS JOIN (SELECT 1 AS k UNION ALL SELECT 2 UNION ALL SELECT 3) AS e
ORDER BY j.seq, e.k
"""


def seed_sqlite(url: str, n: int) -> dict[str, float]:
    """N finished jobs and their events in one transaction, then ANALYZE; the seconds each took.
    The rollback journal rather than the WAL while seeding (a 1 GB transaction would pass through
    the WAL twice); the file is back in WAL mode, as Levqor opens it, before anything measures it."""
    params = _seed_parameters(n)
    params["start_us"] = int(params.pop("start").timestamp() * 1_000_000)
    params["step_us"] = int(params.pop("step_s") * 1_000_000)
    timings: dict[str, float] = {}
    conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute(f"PRAGMA cache_size=-{SQLITE_SEED_CACHE_KIB}")
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_sqlite_seed_jobs(), params)
        conn.execute(_SQLITE_SEED_EVENTS)
        conn.execute("COMMIT")
        timings["insert_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("ANALYZE")
        timings["analyze_s"] = time.perf_counter() - started
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    return timings


# --- the state between measurements ------------------------------------------------------------------


def baseline(kind: str, url: str) -> Baseline:
    query = "SELECT (SELECT coalesce(max(seq), 0) FROM jobs), (SELECT coalesce(max(id), 0) FROM job_events)"
    with _connection(kind, url) as conn:
        seq, event_id = conn.execute(query).fetchone()
    return Baseline(int(seq), int(event_id))


def reset(kind: str, url: str, to: Baseline) -> None:
    """Back to the seeded state: the jobs and events a measurement added go, and the workers it ran.
    PostgreSQL then VACUUM ANALYZEs the two tables (this server runs without autovacuum), SQLite
    checkpoints its WAL, so each measurement starts from the same state on both sides."""
    with _connection(kind, url) as conn:
        params = (to.event_id,) if kind == "sqlite" else {"id": to.event_id}
        marker = "?" if kind == "sqlite" else "%(id)s"
        conn.execute(f"DELETE FROM job_events WHERE id > {marker}", params)
        params = (to.job_seq,) if kind == "sqlite" else {"id": to.job_seq}
        conn.execute(f"DELETE FROM jobs WHERE seq > {marker}", params)
        conn.execute("DELETE FROM workers")
        if kind == "sqlite":
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        else:
            conn.execute("VACUUM ANALYZE jobs, job_events, workers")


@contextmanager
def _connection(kind: str, url: str) -> Iterator[Any]:
    """A plain autocommit connection of the driver (each statement its own transaction)."""
    if kind == "sqlite":
        sqlite_conn = sqlite3.connect(sqlite_path(url), isolation_level=None)
        try:
            yield sqlite_conn
        finally:
            sqlite_conn.close()
        return
    with psycopg.connect(libpq_url(url), autocommit=True) as pg_conn:
        yield pg_conn


def old_job_ids(kind: str, url: str, upto_seq: int, count: int, seed: int) -> list[str]:
    """`count` ids of seeded jobs spread over the whole table (every part of the 30 days)."""
    step = max(1, upto_seq // max(count, 1))
    seqs = [min(upto_seq, 1 + i * step + (seed + i * 7919) % step) for i in range(count)]
    with _connection(kind, url) as conn:
        if kind == "sqlite":
            marks = ",".join("?" * len(seqs))
            rows = conn.execute(f"SELECT id FROM jobs WHERE seq IN ({marks})", seqs).fetchall()
            return [str(_uuid_of(row[0])) for row in rows]
        rows = conn.execute("SELECT id FROM jobs WHERE seq = ANY(%s)", (seqs,)).fetchall()
        return [str(row[0]) for row in rows]


def _uuid_of(hex_id: str) -> str:
    return f"{hex_id[:8]}-{hex_id[8:12]}-{hex_id[12:16]}-{hex_id[16:20]}-{hex_id[20:]}"


# --- sizes -------------------------------------------------------------------------------------------


def sizes(kind: str, url: str) -> dict[str, Any]:
    """Bytes of each growth table, of its indexes together and of each index, and its rows."""
    with _connection(kind, url) as conn:
        return _sqlite_sizes(conn) if kind == "sqlite" else _postgres_sizes(conn)


def _postgres_sizes(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    report: dict[str, Any] = {"source": "pg_relation_size"}
    for table in GROWTH_TABLES:
        heap, indexes, total, rows = conn.execute(
            "SELECT pg_relation_size(%(t)s::regclass), pg_indexes_size(%(t)s::regclass),"
            " pg_total_relation_size(%(t)s::regclass), (SELECT count(*) FROM " + table + ")",
            {"t": table},
        ).fetchone()  # type: ignore[misc]
        each = conn.execute(
            "SELECT indexrelid::regclass::text, pg_relation_size(indexrelid) FROM pg_index"
            " WHERE indrelid = %(t)s::regclass ORDER BY 1",
            {"t": table},
        ).fetchall()
        report[table] = {
            "rows": rows,
            "table_bytes": heap,
            "indexes_bytes": indexes,
            "total_bytes": total,  # with TOAST and the free-space and visibility maps
            "index_bytes": dict(each),
        }
    return report


def _sqlite_sizes(conn: sqlite3.Connection) -> dict[str, Any]:
    indexes = dict(conn.execute("SELECT name, tbl_name FROM sqlite_master WHERE type = 'index'").fetchall())
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    report: dict[str, Any] = {"source": "dbstat", "file_bytes": page_size * pages}
    try:
        by_name = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    except sqlite3.OperationalError:  # built without SQLITE_ENABLE_DBSTAT_VTAB: the file's pages only
        report["source"] = "page_count"
        by_name = None
    for table in GROWTH_TABLES:
        report[table] = {"rows": conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]}
        if by_name is not None:
            each = {name: by_name.get(name, 0) for name, owner in sorted(indexes.items()) if owner == table}
            report[table].update(
                table_bytes=by_name.get(table, 0), indexes_bytes=sum(each.values()), index_bytes=each
            )
    return report
