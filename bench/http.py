"""HTTP benchmark (issue 2): Levqor's REST intake, status GET and GraphQL `submitJob` against the
framework ceiling, a bare Starlette JSON route (bench/bare_app.py) on the same uvicorn settings, in one
run. Prints one line of JSON: the figures, the ratios DESIGN.md sets goals for, and a pass flag each.

    python bench/http.py [--duration 10] [--warmup 2] [--connections 32] [--postgres]

What is measured, and why so:
- Every server is one uvicorn process (httptools + uvloop, as uvicorn[standard] picks), on loopback,
  uvicorn's access log off. Levqor runs as in production: `levqor serve` on a fresh SQLite file (or,
  with --postgres, also on a scratch PostgreSQL database), no in-process worker, an API key configured
  and sent (X-Api-Key), rate limits raised far above the load, and its JSON access log on (to a file).
- The load generator is wrk, with Lua scripts for the bodies. On the 2-core machine the server is pinned
  to CPU 0 and wrk to CPU 1 (--no-pin to turn off), the same for every target, so the figures compare
  one server core against one server core. With wrk on one core, one wrk thread is right (-t1); 32
  connections keep a single-threaded server always busy, while staying under the 40 threads anyio
  lends to blocking calls, so Levqor's database calls never queue for a thread token.
- Each target gets a warm-up, then a fixed measured run. The writes are checked afterwards: the jobs
  table must hold at least as many new jobs as wrk counted answers. Any non-2xx answer, socket error
  or failed check makes the run invalid (exit status 1), because a fast error is not throughput.
- CPU use of the server, of wrk and of everything else on the machine (other people's tests) is
  recorded for each measured run, in cores, with the load average before it, and the server's CPU
  time per answer, which other load disturbs less than req/s.
- `--profile-dir DIR` (needs py-spy) records the GIL-holding stacks of each Levqor run to DIR, in
  py-spy's collapsed format; profiling slows the server a little, and the JSON says it was on.

The script cleans up its servers, its files and its PostgreSQL database, on Ctrl-C too.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Run as a script, this file's folder comes first on sys.path, where this file would hide the
    # standard library's `http` package from everything imported below (httpx, uvicorn). The
    # repository root takes its place, for `bench.http_support`.
    _HERE = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != _HERE]
    sys.path.insert(0, os.path.dirname(_HERE))

import argparse
import json
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.http_support import (
    API_KEY,
    STOP_TIMEOUT_S,
    BenchError,
    Figures,
    Run,
    check,
    cpu_sample,
    cpu_use,
    find_py_spy,
    free_port,
    log,
    parse_wrk,
    pinned,
    post_script,
    settled,
    start_server,
    status_script,
)

ROOT = Path(__file__).resolve().parent.parent
RATE_FAR_ABOVE_LOAD = "1000000000"  # per minute: the limiter stays on the path but never refuses
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SERVER_CPU = 0
LOAD_CPU = 1
WRK_TIMEOUT_S = 5
PROFILE_RATE_HZ = 200
SETTINGS_WE_SET = {"API_KEYS", "RATE_BURST", "RATE_GLOBAL", "PORT", "SQLITE_PATH"}  # and every LEVQOR_*

INTAKE_PATH = "/api/v1/intake"
INTAKE_BODY: dict[str, Any] = {"workflow": "echo", "payload": {"message": "bench"}}
SUBMIT_JOB = (
    "mutation Submit($input: SubmitJobInput!) { submitJob(input: $input) "
    "{ job { id status } userErrors { field message code } } }"
)
GRAPHQL_BODY: dict[str, Any] = {"query": SUBMIT_JOB, "variables": {"input": INTAKE_BODY}}

# name: (numerator, denominator, goal) — DESIGN.md, "Targets and how they are measured".
RATIOS: dict[str, tuple[str, str, float]] = {
    "intake/bare_post": ("intake", "bare_post", 0.25),
    "graphql_submit/intake": ("graphql_submit", "intake", 0.60),
    "status/bare_get": ("status", "bare_get", 0.40),
}


# --- arguments and the JSON line (pure; tests/unit/test_bench_http.py covers these) ---------------


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, not {value}")
        return value

    return parse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/http.py",
        description="Levqor REST intake, status and GraphQL submitJob against a bare Starlette route.",
    )
    parser.add_argument("--duration", type=_bounded(1, 300), default=10, help="seconds per target (10)")
    parser.add_argument("--warmup", type=_bounded(0, 60), default=2, help="warm-up seconds per target (2)")
    parser.add_argument("--connections", type=_bounded(1, 1000), default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=_bounded(1, 64), default=1, help="wrk threads (1)")
    parser.add_argument("--pool", type=_bounded(1, 100_000), default=256, help="jobs for status GETs (256)")
    parser.add_argument("--postgres", action="store_true", help="also measure Levqor on PostgreSQL")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL, help="where to create the scratch database")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server and wrk")
    parser.add_argument(
        "--profile-dir", type=Path, help="record py-spy collapsed stacks of each Levqor run into this folder"
    )
    args = parser.parse_args(argv)
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections (wrk gives each thread a connection)")
    return args


def ratio_report(rps: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Each goal's ratio of req/s, with its pass flag."""
    report: dict[str, dict[str, Any]] = {}
    for name, (numerator, denominator, goal) in RATIOS.items():
        if numerator not in rps or denominator not in rps or rps[denominator] <= 0:
            continue
        value = rps[numerator] / rps[denominator]
        report[name] = {"value": round(value, 3), "goal": goal, "pass": value >= goal}
    return report


def assemble(
    settings: dict[str, Any],
    bare: dict[str, dict[str, Any]],
    levqor: dict[str, dict[str, dict[str, Any]]],
    problems: Sequence[str] = (),
) -> dict[str, Any]:
    """The one JSON object the run prints. `levqor` maps a database kind to its targets' figures."""
    databases: dict[str, Any] = {}
    for kind, targets in levqor.items():
        rps = {name: figures["rps"] for name, figures in {**bare, **targets}.items()}
        databases[kind] = {**targets, "ratios": ratio_report(rps)}
    ratios_pass = all(
        ratio["pass"] for database in databases.values() for ratio in database["ratios"].values()
    )
    return {
        "bench": "http",
        "settings": settings,
        "bare": bare,
        "levqor": databases,
        "valid": not problems,
        "problems": list(problems),
        "pass": ratios_pass and not problems and bool(databases),
    }


# --- processes --------------------------------------------------------------------------------------


def levqor_supports(flag: str) -> bool:
    help_text = subprocess.run(
        [sys.executable, "-m", "levqor", "serve", "--help"], capture_output=True, text=True, check=False
    ).stdout
    return flag in help_text


# --- measuring ----------------------------------------------------------------------------------------


@dataclass
class Bench:
    args: argparse.Namespace
    run: Run
    problems: list[str] = field(default_factory=list)

    def wrk(self, url: str, script: Path, duration_s: int) -> Figures:
        command = [
            "wrk",
            f"-t{self.args.threads}",
            f"-c{self.args.connections}",
            f"-d{duration_s}s",
            f"--timeout={WRK_TIMEOUT_S}s",
            "-s",
            str(script),
            url,
        ]
        done = subprocess.run(
            pinned(command, LOAD_CPU, self.args.pin), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
        return parse_wrk(done.stdout)

    def measure(
        self,
        name: str,
        server: subprocess.Popen[bytes],
        url: str,
        script_text: str,
        count_rows: Callable[[], int] | None = None,
    ) -> dict[str, Any]:
        script = self.run.workdir / f"{name}.lua"
        script.write_text(script_text)
        rows_before = count_rows() if count_rows else 0
        warmup = self.wrk(url, script, self.args.warmup) if self.args.warmup else None
        load_1m = round(os.getloadavg()[0], 2)
        with self.profiled(name, server.pid):
            before = cpu_sample(server.pid)
            figures = self.wrk(url, script, self.args.duration)
            after = cpu_sample(server.pid)
        result = {
            **figures.as_json(),
            # Server CPU per answer: it moves less than req/s when other work shares the machine (it
            # still moves: the two CPUs share caches), so it is the cross-check of a noisy run.
            "server_cpu_us_per_request": round(
                (after.server_s - before.server_s) / max(figures.requests, 1) * 1e6
            ),
            "cpu_cores": cpu_use(before, after),
            "load_1m_before": load_1m,
        }
        for run_figures in (warmup, figures):
            if run_figures and sum(run_figures.errors.values()):
                self.problems.append(f"{name}: wrk saw errors {run_figures.errors}")
        if count_rows is not None:
            answered = figures.requests + (warmup.requests if warmup else 0)
            written = settled(count_rows) - rows_before
            result["jobs_written"] = written
            if written < answered - sum(figures.errors.values()):
                self.problems.append(f"{name}: {answered} answers but only {written} new jobs")
        log(f"{name}: {result}")
        return result

    @contextmanager
    def profiled(self, name: str, pid: int) -> Iterator[None]:
        if self.args.profile_dir is None or not name.startswith(("intake", "status", "graphql")):
            yield
            return
        py_spy = find_py_spy()
        assert py_spy is not None  # main() refused to start without it
        self.args.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self.args.profile_dir / f"{name}.txt"
        # Collapsed stacks ("raw") of the thread holding the GIL: on one pinned core, that is where
        # the server's Python time goes (py-spy's idle detection counts threads waiting on a lock as
        # busy, so without --gil the thread pool's waits swamp the profile). C code that releases
        # the GIL (sqlite3 steps, socket I/O) is not in it; the CPU figures of the run include it.
        command = [py_spy, "record", "--pid", str(pid), "--duration", str(self.args.duration)]
        command += ["--format", "raw", "--gil", "--rate", str(PROFILE_RATE_HZ), "-o", str(out)]
        profiler = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            yield
        finally:
            try:
                profiler.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                profiler.kill()
                profiler.wait()


# --- the targets ------------------------------------------------------------------------------------


def measure_bare(bench: Bench) -> dict[str, dict[str, Any]]:
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--no-access-log", "--no-server-header"]
    command += ["--no-proxy-headers", "--log-level", "warning"]
    server = start_server(
        bench.run,
        "bare",
        pinned(command, SERVER_CPU, bench.args.pin),
        dict(os.environ),
        ROOT,
        base,
        "/api/v1/status/ready",
    )
    answer = httpx.post(base + INTAKE_PATH, json=INTAKE_BODY)
    check(answer.status_code == 202, f"bare POST answered {answer.status_code}")
    ids = [str(uuid.uuid4()) for _ in range(bench.args.pool)]
    try:
        return {
            "bare_post": bench.measure("bare_post", server, base + INTAKE_PATH, post_script(INTAKE_BODY)),
            "bare_get": bench.measure("bare_get", server, base, status_script(ids)),
        }
    finally:
        bench.run.stop(server)


def levqor_env(database_env: dict[str, str], port: int) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("LEVQOR_") and key not in SETTINGS_WE_SET
    }
    env.update(
        {
            "LEVQOR_ENV": "development",
            "LEVQOR_HOST": "127.0.0.1",
            "PORT": str(port),
            "API_KEYS": API_KEY,
            "RATE_BURST": RATE_FAR_ABOVE_LOAD,
            "RATE_GLOBAL": RATE_FAR_ABOVE_LOAD,
            "LEVQOR_INPROCESS_WORKER": "false",
            "LEVQOR_LOG_FORMAT": "json",
            **database_env,
        }
    )
    return env


def measure_levqor(
    bench: Bench, kind: str, database_env: dict[str, str], count_jobs: Callable[[], int]
) -> dict[str, dict[str, Any]]:
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "levqor", "serve", "--workers", "1"]
    if levqor_supports("--no-worker"):
        command.append("--no-worker")
    # The working folder is the scratch one, so no `.env` of the repository changes the settings.
    server = start_server(
        bench.run,
        f"levqor-{kind}",
        pinned(command, SERVER_CPU, bench.args.pin),
        levqor_env(database_env, port),
        bench.run.workdir,
        base,
        "/health",
    )
    headers = {"X-Api-Key": API_KEY}
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=10.0) as client:
            ids = []
            for _ in range(bench.args.pool):
                answer = client.post(INTAKE_PATH, json=INTAKE_BODY)
                check(answer.status_code == 202, f"intake answered {answer.status_code}: {answer.text}")
                ids.append(answer.json()["job_id"])
            answer = client.get(f"/api/v1/status/{ids[0]}")
            check(answer.status_code == 200 and answer.json()["job_id"] == ids[0], f"status: {answer.text}")
            answer = client.post("/graphql", json=GRAPHQL_BODY)
            payload = answer.json().get("data") or {}
            submitted = payload.get("submitJob") or {}
            check(
                answer.status_code == 200
                and submitted.get("userErrors") == []
                and (submitted.get("job") or {}).get("status") == "QUEUED",
                f"submitJob answered {answer.status_code}: {answer.text}",
            )
        return {
            "intake": bench.measure(
                f"intake_{kind}", server, base + INTAKE_PATH, post_script(INTAKE_BODY), count_rows=count_jobs
            ),
            "status": bench.measure(f"status_{kind}", server, base, status_script(ids)),
            "graphql_submit": bench.measure(
                f"graphql_{kind}", server, base + "/graphql", post_script(GRAPHQL_BODY), count_rows=count_jobs
            ),
        }
    finally:
        bench.run.stop(server)


def sqlite_target(run: Run) -> tuple[dict[str, str], Callable[[], int]]:
    path = run.workdir / "levqor.db"

    def count() -> int:
        with sqlite3.connect(path) as conn:
            rows: int = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
            return rows

    return {"SQLITE_PATH": str(path)}, count


def postgres_target(run: Run, admin_url: str) -> tuple[dict[str, str], Callable[[], int]]:
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"levqor_bench_http_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    run.cleanups.append(drop)
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)

    def count() -> int:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM jobs").fetchone()
            return int(row[0]) if row else 0

    return {"LEVQOR_DATABASE_URL": url}, count


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        log("wrk is not installed: `apt-get install -y wrk` (Debian/Ubuntu), then run again")
        return 2
    if args.profile_dir is not None and find_py_spy() is None:
        log("--profile-dir needs py-spy: `pip install py-spy`, then run again")
        return 2
    if args.pin and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        log("cannot pin to two CPUs here (taskset missing or one CPU): running unpinned")
        args.pin = False

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # Both, explicitly: a shell starts background jobs with SIGINT ignored, and that is inherited.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    run = Run(workdir=Path(tempfile.mkdtemp(prefix="levqor-bench-http-")))
    bench = Bench(args=args, run=run)
    settings = {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "threads": args.threads,
        "pinned": args.pin,
        "profiled": args.profile_dir is not None,
        "cpus": os.cpu_count(),
        "load_1m_at_start": round(os.getloadavg()[0], 2),
    }
    try:
        bare = measure_bare(bench)
        levqor = {"sqlite": measure_levqor(bench, "sqlite", *sqlite_target(run))}
        if args.postgres:
            levqor["postgres"] = measure_levqor(bench, "postgres", *postgres_target(run, args.pg_admin_url))
    except BenchError as exc:
        log(f"failed: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted: stopping the servers and removing the scratch files")
        return 130
    finally:
        run.close()
    result = assemble(settings, bare, levqor, bench.problems)
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0 if result["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
