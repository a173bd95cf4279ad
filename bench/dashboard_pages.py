"""Dashboard pages benchmark: how fast the dashboard's job list and overview pages answer, signed in,
with N finished jobs in the tables (issue 14: under 200 ms with 100,000 jobs on this machine);
bench/dashboard.py measures the API routes they read through.

    python -m bench.dashboard_pages [--finished 100000] [--requests 50] [--no-postgres]

On SQLite and on PostgreSQL, a migrated database is seeded with N finished jobs and their events
(bench/growth_support.py, as the growth benchmark does), then `levqor serve --no-worker` answers a
signed-in dashboard session one request at a time: the job list (first page, a page deep in by
cursor, filtered by state, by text), the overview, and beside them the REST list and overview the
pages are built on. Each figure is the p50 and p95 of `--requests` requests after a warm-up, in ms
from the request's start to the last byte of its answer. Prints one line of JSON.
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
import re
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.growth_support import seed_postgres, seed_sqlite
from bench.http import API_KEY, PG_ADMIN_URL, levqor_env, levqor_serve_command
from bench.http_support import Run, free_port, start_server

WARM_UP_REQUESTS = 5
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
CURSOR = re.compile(r'href="/dashboard/jobs\?[^"]*cursor=([\w-]+)"')


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": round(statistics.median(ordered), 2), "p95_ms": round(p95, 2)}


def timed(http: httpx.Client, path: str, requests: int) -> dict[str, float]:
    for _ in range(WARM_UP_REQUESTS):
        http.get(path).raise_for_status()
    samples: list[float] = []
    for _ in range(requests):
        started = time.perf_counter()
        http.get(path).raise_for_status()
        samples.append((time.perf_counter() - started) * 1000)
    return percentiles(samples)


def deep_cursor(http: httpx.Client, pages: int) -> str:
    """The cursor `pages` pages of 100 into the list, followed as a user clicking "Older" would."""
    path = "/dashboard/jobs?limit=100"
    cursor = ""
    for _ in range(pages):
        found = CURSOR.search(http.get(path).text)
        if found is None:
            break
        cursor = found.group(1)
        path = f"/dashboard/jobs?limit=100&cursor={cursor}"
    return cursor


def measure(database_env: dict[str, str], run: Run, requests: int) -> dict[str, Any]:
    port = free_port()
    env = levqor_env(database_env, port)
    base_url = f"http://127.0.0.1:{port}"
    server = start_server(run, "levqor", levqor_serve_command(), env, run.workdir, base_url, "/health")
    try:
        with httpx.Client(base_url=base_url, timeout=60) as http:
            token = CSRF.search(http.get("/dashboard/login").text)
            assert token is not None
            signed = http.post("/dashboard/login", data={"key": API_KEY, "csrf": token.group(1)})
            assert signed.status_code == 303, signed.text
            cursor = deep_cursor(http, 10)
            with httpx.Client(base_url=base_url, timeout=60, headers={"X-Api-Key": API_KEY}) as api:
                reference = {
                    "rest_jobs": timed(api, "/api/v1/jobs", requests),
                    "rest_overview": timed(api, "/api/v1/overview", requests),
                }
            return {
                "jobs": timed(http, "/dashboard/jobs", requests),
                "jobs_page_11": timed(http, f"/dashboard/jobs?limit=100&cursor={cursor}", requests),
                "jobs_failed": timed(http, "/dashboard/jobs?status=failed", requests),
                "jobs_text": timed(http, "/dashboard/jobs?text=job%2099999", requests),
                "overview": timed(http, "/dashboard/", requests),
                **reference,
            }
    finally:
        run.stop(server)


def migrate(database_env: dict[str, str], cwd: Path) -> None:
    env = levqor_env(database_env, free_port())
    subprocess.run(
        [sys.executable, "-m", "levqor", "migrate"], env=env, cwd=cwd, check=True, capture_output=True
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--finished", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    figures: dict[str, Any] = {"finished_jobs": args.finished, "requests": args.requests}
    with tempfile.TemporaryDirectory(prefix="levqor-bench-dashboard-") as folder:
        run = Run(workdir=Path(folder))
        try:
            sqlite_file = Path(folder) / "levqor.db"
            sqlite_env = {"SQLITE_PATH": str(sqlite_file)}
            migrate(sqlite_env, run.workdir)
            figures["sqlite_seed"] = seed_sqlite(f"sqlite:///{sqlite_file}", args.finished)
            figures["sqlite"] = measure(sqlite_env, run, args.requests)
            if not args.no_postgres:
                figures["postgres"] = _on_postgres(run, args.finished, args.requests, figures)
        finally:
            run.close()
    print(json.dumps(figures))


def _on_postgres(run: Run, finished: int, requests: int, figures: dict[str, Any]) -> dict[str, Any]:
    import psycopg

    from bench.growth_support import libpq_url

    name = f"levqor_bench_dashboard_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(libpq_url(PG_ADMIN_URL), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        pg_env = {"LEVQOR_DATABASE_URL": url}
        migrate(pg_env, run.workdir)
        figures["postgres_seed"] = seed_postgres(url, finished)
        return measure(pg_env, run, requests)
    finally:
        with psycopg.connect(libpq_url(PG_ADMIN_URL), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
