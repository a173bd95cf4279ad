"""Dashboard benchmark: the job list, with each of its filters on a first page and a deep cursor,
and the overview, over REST and as the dashboard's pages, with 100,000 jobs in the table (issue 14:
each under 200 ms).

    python -m bench.dashboard [--jobs 100000] [--requests 30] [--limit 50] [--no-postgres]

On SQLite and on PostgreSQL: a fresh migrated database seeded once with `--jobs` jobs by bulk inserts
(mixed states, several workflows, keys and users, created over the past week; then ANALYZE, as
autovacuum would), one `levqor serve --no-worker` on loopback, and for each case `--requests`
GETs one after another on one httpx connection after `--warmup` untimed ones: the REST cases with
an API key, then each dashboard page, signed in once, right before the REST read it goes through
(the same resolver query). Each case's median is judged against the target; p95 is shown beside
it. Prints a table, then one line of JSON; bench/README.md says more.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Run as a file, this folder comes first on sys.path, where bench/queue.py would hide the
    # standard library's `queue` (and bench/http.py its `http`); the repository root takes its place.
    _HERE = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != _HERE]
    sys.path.insert(0, os.path.dirname(_HERE))

import argparse
import json
import random
import re
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Table, insert, text
from sqlmodel import Session, SQLModel, col, func, select
from uuid_utils.compat import uuid7

from bench.http import PG_ADMIN_URL, levqor_env, levqor_serve_command
from bench.http_support import API_KEY, BenchError, Run, free_port, start_server
from bench.queue import fresh_database
from bench.queue_support import percentile, scratch_postgres
from bench.result_file import add_json_option, write_json
from levqor.db.engine import Database
from levqor.db.models import Job, JobStatus, Priority, User, Worker
from levqor.resolvers.jobs import MAX_LIST_LIMIT, JobListFilter, cursor_of

TARGET_MS = 200.0  # issue 14: the job list and the overview answer in under 200 ms
JOBS: Table = SQLModel.metadata.tables[Job.__tablename__]
SEED_CHUNK = 5000  # rows per INSERT batch
WEEK = timedelta(days=7)
WORKFLOWS = ("echo", "http.request", "llm.chat", "sleep")
KEYS = [uuid.UUID(int=0x0193A000_0000_7000_8000_000000000000 + index) for index in range(6)]
USERS = [uuid.UUID(int=0x0193B000_0000_7000_8000_000000000000 + index) for index in range(40)]
WORKER_IDS = [f"bench-host:{index}:dashboard" for index in range(4)]
RUNNING = 40  # jobs running on the workers now
QUEUED_DUE = 1500  # queued and due, the newest jobs
QUEUED_LATER = 300  # queued for later
# Of the finished jobs: one in 20 failed, one in 50 cancelled, the rest succeeded.
FAILED_EVERY = 20
CANCELLED_EVERY = 50
RARE_CUSTOMER = "cust-0421"  # in one job in 500: a text search with few matches
PAGE_11_SKIPPED = 10 * MAX_LIST_LIMIT  # the list's page 11 at its largest page size
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
JOB_LINK = re.compile(r'href="/dashboard/jobs/[0-9a-f-]{36}"')  # one per row of the list page


def log(message: str) -> None:
    print(f"[bench/dashboard] {message}", file=sys.stderr, flush=True)


# --- seeding -----------------------------------------------------------------------------------------


def job_rows(count: int, now: datetime, rng: random.Random) -> Iterator[dict[str, Any]]:
    """`count` jobs created over the week before `now` in `seq` order: the newest are queued (some
    for later), the ones just before them running, the rest finished."""
    step = WEEK / count
    for index in range(count):
        created = now - WEEK + step * index
        from_end = count - index
        workflow = WORKFLOWS[index % len(WORKFLOWS)]
        row: dict[str, Any] = {
            "id": uuid7(),
            "workflow": workflow,
            "payload": {"customer": f"cust-{index % 500:04d}", "message": f"job {index}", "n": index},
            "priority": Priority.NORMAL.rank,
            "submitted_by": f"key:{KEYS[index % len(KEYS)]}" if index % 7 else None,
            "user_id": USERS[index % len(USERS)] if index % 3 else None,
            "created_at": created,
            "updated_at": created,
            "run_at": created,
            "max_attempts": 3,
            "attempts": 1,
            "error": None,
            "result": None,
            "started_at": None,
            "finished_at": None,
            "worker_id": None,
            "lease_expires_at": None,
        }
        started = created + timedelta(milliseconds=rng.uniform(1, 40))
        if from_end <= QUEUED_LATER:
            row.update(status=JobStatus.QUEUED.value, attempts=0, run_at=now + timedelta(hours=from_end))
        elif from_end <= QUEUED_LATER + QUEUED_DUE:
            row.update(status=JobStatus.QUEUED.value, attempts=0)
        elif from_end <= QUEUED_LATER + QUEUED_DUE + RUNNING:
            row.update(
                status=JobStatus.RUNNING.value,
                started_at=started,
                worker_id=WORKER_IDS[index % len(WORKER_IDS)],
                lease_expires_at=now + timedelta(seconds=30),
            )
        else:
            finished = started + timedelta(milliseconds=rng.uniform(5, 2000))
            if index % FAILED_EVERY == 0:
                status, error = JobStatus.FAILED, {"type": "error", "message": "upstream answered 504"}
            elif index % CANCELLED_EVERY == 1:
                status, error = JobStatus.CANCELLED, {"type": "cancelled"}
            else:
                status, error = JobStatus.SUCCEEDED, None
            row.update(
                status=status.value,
                started_at=started,
                finished_at=finished,
                updated_at=finished,
                error=error,
                result={"ok": True} if status is JobStatus.SUCCEEDED else None,
            )
        yield row


def seed(db: Database, kind: str, count: int, now: datetime) -> float:
    """Users, workers and `count` jobs, then fresh planner statistics; the seconds it took."""
    started = time.perf_counter()
    rng = random.Random(count)

    def write(session: Session) -> None:
        for user_id in USERS:
            session.add(User(id=user_id, email=f"{user_id}@bench.test", name="Bench"))
        for worker_id in WORKER_IDS:
            session.add(Worker(id=worker_id, workflows=list(WORKFLOWS), started_at=now, last_seen_at=now))
        session.flush()
        batch: list[dict[str, Any]] = []
        for row in job_rows(count, now, rng):
            batch.append(row)
            if len(batch) == SEED_CHUNK:
                session.execute(insert(JOBS), batch)
                batch = []
        if batch:
            session.execute(insert(JOBS), batch)

    db.write_sync(write)
    if kind == "postgres":
        # Statistics as autovacuum would gather them (this server may run without it). SQLite gets
        # none: Levqor never runs ANALYZE there, so a real SQLite database has no statistics either.
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE jobs"))
    return time.perf_counter() - started


# --- the cases ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    params: dict[str, Any]
    reads_through: Case | None = None  # a dashboard page: the REST read with the page's query


def cases(db: Database, now: datetime, limit: int) -> list[Case]:
    """Each filter on its first page and past a cursor deep in its results (nine tenths of the way
    from its newest job to its oldest), and the overview over its default hour, a day and a week."""
    day = now - timedelta(days=3)
    filters: dict[str, dict[str, Any]] = {
        "no filter": {},
        "status=failed": {"status": "failed"},
        "status=queued": {"status": "queued"},
        "workflow": {"workflow": "llm.chat"},
        "key_id": {"key_id": str(KEYS[2])},
        "user_id": {"user_id": str(USERS[7])},
        "created in one day": {
            "created_after": day.isoformat(),
            "created_before": (day + timedelta(days=1)).isoformat(),
        },
        "text, few matches": {"text": RARE_CUSTOMER},
        "text, no match": {"text": "no job says this"},
        "status+workflow+key": {"status": "succeeded", "workflow": "echo", "key_id": str(KEYS[2])},
    }
    found = []
    for name, params in filters.items():
        found.append(Case(f"jobs {name}", "/api/v1/jobs", {**params, "limit": limit}))
        cursor = db.read_sync(lambda session, params=params: deep_cursor(session, params))
        if cursor is not None:
            deep = {**params, "limit": limit, "cursor": cursor}
            found.append(Case(f"jobs {name}, deep", "/api/v1/jobs", deep))
    found.append(Case("overview 1 h / 60", "/api/v1/overview", {}))
    found.append(Case("overview 1 d / 96", "/api/v1/overview", {"window_s": 86_400, "buckets": 96}))
    found.append(Case("overview 7 d / 120", "/api/v1/overview", {"window_s": 604_800, "buckets": 120}))
    return found


def pages(db: Database) -> list[Case]:
    """The dashboard's job list (its first page, page 11 of 100 by its cursor, by state, by text)
    and its overview, each with the REST read it goes through: the same query of the same resolver
    (the page's default list limit, and the overview's default hour in 60 buckets)."""
    page_11 = db.read_sync(lambda session: cursor_past(session, {}, PAGE_11_SKIPPED))
    listed: dict[str, dict[str, Any]] = {
        "jobs": {},
        "jobs, page 11 of 100": {"limit": MAX_LIST_LIMIT, "cursor": page_11},
        "jobs status=failed": {"status": "failed"},
        "jobs text": {"text": RARE_CUSTOMER},
    }
    found = []
    for name, params in listed.items():
        rest = Case(f"page {name}, REST", "/api/v1/jobs", params)
        found.append(Case(f"page {name}", "/dashboard/jobs", params, reads_through=rest))
    rest = Case("page overview, REST", "/api/v1/overview", {})
    found.append(Case("page overview", "/dashboard/", {}, reads_through=rest))
    return found


def deep_cursor(session: Session, params: dict[str, Any]) -> str | None:
    """The cursor past nine tenths of the jobs `params` select, newest first (None: too few)."""
    where = JobListFilter.model_validate(params).conditions()
    count = session.exec(select(func.count()).select_from(Job).where(*where)).one()
    if count < 10:
        return None
    return cursor_past(session, params, count * 9 // 10 + 1)


def cursor_past(session: Session, params: dict[str, Any], skipped: int) -> str:
    """The cursor past the newest `skipped` jobs `params` select."""
    where = JobListFilter.model_validate(params).conditions()
    statement = select(Job).where(*where).order_by(col(Job.seq).desc()).offset(skipped - 1).limit(1)
    return cursor_of(session.exec(statement).one())


def sign_in(http: httpx.Client) -> None:
    """A dashboard session on `http`'s cookies, signed in with the API key as a person would."""
    token = CSRF.search(http.get("/dashboard/login").text)
    if token is None:
        raise BenchError("the sign-in page has no CSRF token")
    signed = http.post("/dashboard/login", data={"key": API_KEY, "csrf": token.group(1)})
    if signed.status_code != 303:
        raise BenchError(f"sign-in: {signed.status_code} {signed.text[:300]}")


def rows_of(case: Case, response: httpx.Response) -> int | None:
    """The jobs a list answer holds, or the jobs a REST overview counts; None for the overview page."""
    if case.reads_through is None:
        body = response.json()
        return len(body["jobs"]) if "jobs" in body else sum(body["counts"].values())
    if case.path == "/dashboard/jobs":
        return len(JOB_LINK.findall(response.text))
    return None


def time_case(http: httpx.Client, case: Case, requests: int, warmup: int) -> dict[str, Any]:
    times_ms: list[float] = []
    rows = None
    for index in range(warmup + requests):
        started = time.perf_counter()
        response = http.get(case.path, params=case.params)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise BenchError(f"{case.name}: {response.status_code} {response.text[:300]}")
        if index >= warmup:
            times_ms.append(elapsed_ms)
        rows = rows_of(case, response)
    median_ms = statistics.median(times_ms)
    figure: dict[str, Any] = {
        "median_ms": round(median_ms, 2),
        "p95_ms": round(percentile(times_ms, 0.95), 2),
        "rows": rows,
        "target_ms": TARGET_MS,
        "result": "pass" if median_ms < TARGET_MS else "miss",
    }
    if case.reads_through is not None:
        figure["reads_through"] = case.reads_through.name
    return figure


def measure_kind(kind: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with ExitStack() as stack:
        pg_url = (
            stack.enter_context(scratch_postgres(args.pg_admin_url, "dashboard"))
            if kind == "postgres"
            else None
        )
        url, env = fresh_database(kind, workdir, pg_url)
        db = Database(url, pool_size=2)
        stack.callback(db.dispose)
        now = datetime.now(UTC)
        log(f"{kind}: seeding {args.jobs} jobs")
        seeded_s = seed(db, kind, args.jobs, now)
        log(f"{kind}: seeded in {seeded_s:.1f} s")
        run = Run(workdir=Path(tempfile.mkdtemp(prefix=f"serve-{kind}-", dir=workdir)))
        stack.callback(run.close)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        database = {key: value for key, value in env.items() if key in {"SQLITE_PATH", "LEVQOR_DATABASE_URL"}}
        start_server(
            run,
            f"levqor-{kind}",
            levqor_serve_command(),
            levqor_env(database, port),
            workdir,
            base,
            "/health",
        )
        figures: dict[str, Any] = {}
        api = stack.enter_context(httpx.Client(base_url=base, headers={"X-Api-Key": API_KEY}, timeout=60))
        dashboard = stack.enter_context(httpx.Client(base_url=base, timeout=60))
        sign_in(dashboard)

        def measure(http: httpx.Client, case: Case) -> dict[str, Any]:
            figure = figures[case.name] = time_case(http, case, args.requests, args.warmup)
            log(f"{kind}: {case.name}: {figure}")
            return figure

        for case in cases(db, now, args.limit):
            measure(api, case)
        # Each page is timed right before its REST read, so a drift in the machine's speed moves both.
        for page in pages(db):
            assert page.reads_through is not None  # pages() gives every page its REST read
            shown, read = measure(dashboard, page)["rows"], measure(api, page.reads_through)["rows"]
            if shown is not None and shown != read:
                raise BenchError(f"{kind}: {page.name} shows {shown} jobs, its REST read answers {read}")
        return {"seed_s": round(seeded_s, 2), "figures": figures}


def table(results: dict[str, dict[str, Any]]) -> str:
    """One line per case and database: median and p95 against the target."""
    lines = [f"{'database':<9} {'case':<36} {'median ms':>10} {'p95 ms':>9} {'target':>7}  result"]
    for kind, result in results.items():
        for name, f in result["figures"].items():
            lines.append(
                f"{kind:<9} {name:<36} {f['median_ms']:>10.1f} {f['p95_ms']:>9.1f} "
                f"{'< ' + format(f['target_ms'], '.0f'):>7}  {f['result']}"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.split("\n\n")[0])
    number = parser.add_argument
    number("--jobs", type=int, default=100_000, help="jobs seeded (100000)")
    number("--requests", type=int, default=30, help="timed requests per case (30)")
    number("--warmup", type=int, default=3, help="untimed requests per case first (3)")
    number("--limit", type=int, default=50, help="jobs per page of the list (50)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL, help="where the scratch database goes")
    add_json_option(parser)
    args = parser.parse_args(argv)
    minimum = QUEUED_DUE + QUEUED_LATER + RUNNING + 10
    if args.jobs < minimum:
        parser.error(f"--jobs must be at least {minimum} (the queued and running jobs come first)")
    if min(args.requests, args.limit) < 1 or args.warmup < 0 or args.limit > 100:
        parser.error("--requests must be positive, --warmup not negative, --limit 1 to 100")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = ["sqlite"] if args.no_postgres else ["sqlite", "postgres"]
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="levqor-bench-dashboard-") as tmp:
            results = {kind: measure_kind(kind, args, Path(tmp)) for kind in kinds}
    except (BenchError, TimeoutError, RuntimeError) as exc:
        log(f"failed: {exc}")
        return 1
    misses = [
        f"{kind}: {name}"
        for kind, r in results.items()
        for name, f in r["figures"].items()
        if f["result"] == "miss"
    ]
    print(table(results), flush=True)
    report = {
        "bench": "dashboard",
        "jobs": args.jobs,
        "requests": args.requests,
        "warmup": args.warmup,
        "limit": args.limit,
        "target_ms": TARGET_MS,
        "results": results,
        "misses": misses,
        "pass": not misses,
        "cpus": os.cpu_count(),
        "load_avg_before": [round(value, 2) for value in load_before],
        "load_avg_after": [round(value, 2) for value in os.getloadavg()],
    }
    print(json.dumps(report, separators=(",", ":")), flush=True)
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
