"""HTTP benchmark (issue 2): Levqor's REST intake, status GET and GraphQL `submitJob` against the
framework ceiling, a bare Starlette JSON route (bench/bare_app.py) on the same uvicorn settings, in one
run. Prints one line of JSON: the figures, the ratios DESIGN.md sets goals for, and a pass flag each.

    python bench/http.py [--duration 5] [--rounds 3] [--warmup 2] [--connections 32] [--postgres]
                         [--no-floor]

What is measured, and why so:
- Every server is one uvicorn process (httptools + uvloop, as uvicorn[standard] picks), on loopback,
  uvicorn's access log off, on the HTTP protocol `levqor serve` uses: the reference servers get
  `--http levqor.http.protocol:HeadHoldingProtocol` (uvicorn's httptools protocol, writing a small
  answer's head and body in one write), so that no ratio measures a difference of uvicorn settings.
  Levqor runs as in production: `levqor serve` on a fresh SQLite file (or, with --postgres, also on a
  scratch PostgreSQL database), no in-process worker, an API key configured and sent (X-Api-Key), rate
  limits raised far above the load, and its JSON access log on (to a file).
- The load generator is wrk, with Lua scripts for the bodies. On the 2-core machine the server is pinned
  to CPU 0 and wrk to CPU 1 (--no-pin to turn off), the same for every target, so the figures compare
  one server core against one server core. With wrk on one core, one wrk thread is right (-t1); 32
  connections keep a single-threaded server always busy, while staying under the 40 threads anyio
  lends to blocking calls, so Levqor's database calls never queue for a thread token.
- The speed of this shared machine drifts by a third within a minute, so a ratio of two figures taken a
  minute apart would mostly measure the drift. Hence rounds: all servers start once and stay up; each
  target gets one warm-up; then each round measures every target for --duration seconds, each right
  next to its reference (bare_post, intake, graphql_submit, bare_get, status, floor_get; with
  --postgres the PostgreSQL targets sit on the other side of the same reference), every other round
  in reverse order so that a steady drift favours neither side. A ratio is the median of its rounds'
  ratios, and the pass flag is on that median. Each ratio also gives the ratio of server CPU time per
  request (the reference's over the target's), which other load disturbs less than req/s, as a
  cross-check.
- The floor (bench/floor_app.py, target floor_get; --no-floor to skip it) does the status GET's
  duties and nothing else (rate limit, API key, the batched read off the event loop, the body, the
  headers, the metrics, the access line), with Levqor's own parts, straight on ASGI, on the same
  uvicorn settings, reading the SQLite Levqor server's file. Of the gap between bare_get and status,
  floor_get/bare_get is what the duties cost whatever the code looks like, and status/floor_get what
  Levqor spends beyond them. Both are reported, without a goal and not judged. The status GETs hold
  both sides of bare_get, so floor_get runs next to the SQLite status, one run from bare_get.
- The writes are checked after every run, warm-ups included: the jobs table must hold at least as many
  new jobs as wrk counted answers. Any non-2xx answer, socket error or failed check makes the run
  invalid (exit status 1), because a fast error is not throughput.
- CPU use of the server, of wrk and of everything else on the machine (other people's tests) is
  recorded for each measured run, in cores, with the load average before it; each target reports the
  medians over its rounds and every round's req/s and CPU time per request.
- `--profile-dir DIR` (needs py-spy) records the GIL-holding stacks of each Levqor run to DIR, one file
  per target and round, in py-spy's collapsed format; profiling slows the server a little, and the
  JSON says it was on.

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
import statistics
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
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
    quotients,
    settled,
    start_server,
    status_script,
    summarize_rounds,
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

# name: (numerator, denominator, goal) — DESIGN.md, "Targets and how they are measured". A goal of None
# is a ratio reported for information, not judged: it has no pass flag and no say in the run's.
RATIOS: dict[str, tuple[str, str, float | None]] = {
    "intake/bare_post": ("intake", "bare_post", 0.25),
    "graphql_submit/intake": ("graphql_submit", "intake", 0.60),
    "status/bare_get": ("status", "bare_get", 0.40),
    "floor_get/bare_get": ("floor_get", "bare_get", None),
    "status/floor_get": ("status", "floor_get", None),
}
# The database whose file the floor reads: only its status has the floor for a reference.
FLOOR_DATABASE = "sqlite"
REFERENCE_SERVERS = ("bare", "floor")  # the servers that are not Levqor on a database


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
    parser.add_argument(
        "--duration", type=_bounded(1, 300), default=5, help="seconds per target in each round (5)"
    )
    parser.add_argument(
        "--rounds", type=_bounded(1, 50), default=3, help="rounds; ratios are their median (3)"
    )
    parser.add_argument(
        "--warmup",
        type=_bounded(0, 60),
        default=2,
        help="warm-up seconds per target, once, before round 1 (2)",
    )
    parser.add_argument("--connections", type=_bounded(1, 1000), default=32, help="wrk connections (32)")
    parser.add_argument("--threads", type=_bounded(1, 64), default=1, help="wrk threads (1)")
    parser.add_argument("--pool", type=_bounded(1, 100_000), default=256, help="jobs for status GETs (256)")
    parser.add_argument("--postgres", action="store_true", help="also measure Levqor on PostgreSQL")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL, help="where to create the scratch database")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server and wrk")
    parser.add_argument(
        "--no-floor", dest="floor", action="store_false", help="do not measure the status GET's floor"
    )
    parser.add_argument(
        "--profile-dir", type=Path, help="record py-spy collapsed stacks of each Levqor run into this folder"
    )
    args = parser.parse_args(argv)
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections (wrk gives each thread a connection)")
    return args


def round_order(kinds: Sequence[str], index: int, floor: bool = False) -> list[tuple[str, str]]:
    """The (server, target) runs of round `index`, each goal's two targets back to back: the second
    database's targets mirror the first's around the shared reference. The floor follows the first
    database's status, next to it; bare_get's two sides are taken by the status GETs, so the floor
    is one run away from bare_get. Odd rounds run in reverse, so a steady drift of the machine
    favours the numerator in half the rounds and the reference in the other half."""
    if not 1 <= len(kinds) <= 2:
        raise ValueError(f"one or two databases keep every target next to its reference, not {kinds}")
    first, *others = kinds
    posts = [("bare", "bare_post"), (first, "intake"), (first, "graphql_submit")]
    gets = [("bare", "bare_get"), (first, "status")]
    if floor:
        gets.append(("floor", "floor_get"))
    for kind in others:
        posts = [(kind, "graphql_submit"), (kind, "intake"), *posts]
        gets = [(kind, "status"), *gets]
    order = posts + gets
    return order[::-1] if index % 2 else order


def ratio_report(rounds: Mapping[str, Sequence[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each ratio of req/s, the median of the per-round ratios (each round measures the target next
    to its reference), with its pass flag when it has a goal; and, for information, the same for the
    ratio of server CPU time per request, the reference's over the target's."""
    report: dict[str, dict[str, Any]] = {}
    for name, (numerator, denominator, goal) in RATIOS.items():
        if numerator not in rounds or denominator not in rounds:
            continue
        rps = quotients(_column(rounds[numerator], "rps"), _column(rounds[denominator], "rps"))
        if rps is None:
            continue
        value = statistics.median(rps)
        report[name] = {"value": round(value, 3), "goal": goal}
        if goal is not None:
            report[name]["pass"] = value >= goal
        report[name]["rounds"] = [round(ratio, 3) for ratio in rps]
        cpu_key = "server_cpu_us_per_request"
        cpu = quotients(_column(rounds[denominator], cpu_key), _column(rounds[numerator], cpu_key))
        if cpu is not None:
            report[name]["cpu_per_request"] = {
                "value": round(statistics.median(cpu), 3),
                "rounds": [round(ratio, 3) for ratio in cpu],
            }
    return report


def _column(rounds: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [figures[key] for figures in rounds]


def assemble(
    settings: dict[str, Any],
    bare: Mapping[str, Sequence[dict[str, Any]]],
    levqor: Mapping[str, Mapping[str, Sequence[dict[str, Any]]]],
    problems: Sequence[str] = (),
    floor: Mapping[str, Sequence[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """The one JSON object the run prints. `bare` maps each reference to its figures in every round;
    `levqor` maps a database kind to its targets' figures in every round; `floor`, when measured,
    floor_get to its figures in every round (a reference for FLOOR_DATABASE's status only)."""
    databases: dict[str, Any] = {}
    for kind, targets in levqor.items():
        summaries = {name: summarize_rounds(rounds) for name, rounds in targets.items()}
        references = {**bare, **(floor or {})} if kind == FLOOR_DATABASE else bare
        databases[kind] = {**summaries, "ratios": ratio_report({**references, **targets})}
    ratios_pass = all(
        ratio["pass"]
        for database in databases.values()
        for ratio in database["ratios"].values()
        if ratio["goal"] is not None
    )
    return {
        "bench": "http",
        "settings": settings,
        "bare": {name: summarize_rounds(rounds) for name, rounds in bare.items()},
        "floor": {name: summarize_rounds(rounds) for name, rounds in (floor or {}).items()},
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


@dataclass(frozen=True)
class Target:
    """One route of a running server that wrk loads, with its Lua script."""

    name: str  # in the log, the problems and the profile files: "intake_sqlite"
    server: subprocess.Popen[bytes]
    url: str
    script: Path
    count_rows: Callable[[], int] | None = None  # the jobs table, for a target that writes
    profiled: bool = False


@dataclass
class Bench:
    args: argparse.Namespace
    run: Run
    problems: list[str] = field(default_factory=list)

    def target(
        self,
        name: str,
        server: subprocess.Popen[bytes],
        url: str,
        script_text: str,
        count_rows: Callable[[], int] | None = None,
        profiled: bool = False,
    ) -> Target:
        script = self.run.workdir / f"{name}.lua"
        script.write_text(script_text)
        return Target(name, server, url, script, count_rows, profiled)

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

    def rounds(self, servers: dict[str, dict[str, Target]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Every target's figures in every round; `servers` maps "bare", "floor" (when measured) and
        each database kind to its targets. The servers stay up throughout, so no round pays for a
        start."""
        kinds = [kind for kind in servers if kind not in REFERENCE_SERVERS]
        floor = "floor" in servers
        if self.args.warmup:
            for server, name in round_order(kinds, 0, floor):
                self.warm_up(servers[server][name])
        figures: dict[str, dict[str, list[dict[str, Any]]]] = {
            server: {name: [] for name in targets} for server, targets in servers.items()
        }
        for index in range(self.args.rounds):
            for server, name in round_order(kinds, index, floor):
                figures[server][name].append(self.measure(servers[server][name], index + 1))
        return figures

    def warm_up(self, target: Target) -> None:
        rows_before = target.count_rows() if target.count_rows else 0
        figures = self.wrk(target.url, target.script, self.args.warmup)
        self.check_run(target, "warm-up", figures, rows_before)

    def measure(self, target: Target, round_number: int) -> dict[str, Any]:
        rows_before = target.count_rows() if target.count_rows else 0
        load_1m = round(os.getloadavg()[0], 2)
        with self.profiled(target, round_number):
            before = cpu_sample(target.server.pid)
            figures = self.wrk(target.url, target.script, self.args.duration)
            after = cpu_sample(target.server.pid)
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
        written = self.check_run(target, f"round {round_number}", figures, rows_before)
        if written is not None:
            result["jobs_written"] = written
        log(f"{target.name} round {round_number}: {result}")
        return result

    def check_run(self, target: Target, label: str, figures: Figures, rows_before: int) -> int | None:
        """Records what makes the run invalid: wrk errors, or fewer new jobs than answers to a write
        (a fast error is not throughput). Returns the jobs written, for a target that writes."""
        errors = sum(figures.errors.values())
        if errors:
            self.problems.append(f"{target.name} {label}: wrk saw errors {figures.errors}")
        if target.count_rows is None:
            return None
        written = settled(target.count_rows) - rows_before
        if written < figures.requests - errors:
            self.problems.append(
                f"{target.name} {label}: {figures.requests} answers but only {written} new jobs"
            )
        return written

    @contextmanager
    def profiled(self, target: Target, round_number: int) -> Iterator[None]:
        if self.args.profile_dir is None or not target.profiled:
            yield
            return
        py_spy = find_py_spy()
        assert py_spy is not None  # main() refused to start without it
        self.args.profile_dir.mkdir(parents=True, exist_ok=True)
        out = self.args.profile_dir / f"{target.name}_round{round_number}.txt"
        # Collapsed stacks ("raw") of the thread holding the GIL: on one pinned core, that is where
        # the server's Python time goes (py-spy's idle detection counts threads waiting on a lock as
        # busy, so without --gil the thread pool's waits swamp the profile). C code that releases
        # the GIL (sqlite3 steps, socket I/O) is not in it; the CPU figures of the run include it.
        command = [py_spy, "record", "--pid", str(target.server.pid), "--duration", str(self.args.duration)]
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


# --- the servers and their targets ------------------------------------------------------------------


def uvicorn_command(app: str, port: int) -> list[str]:
    """A reference app (bare, floor) under uvicorn, run from the repository root: one process, no
    uvicorn access log, no Server header, X-Forwarded-For not read, and Levqor's HTTP protocol (one
    write per small answer), as `levqor serve` runs."""
    from levqor.cli import http_protocol

    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1", "--no-access-log", "--no-server-header"]
    command += ["--no-proxy-headers", "--http", http_protocol()]
    return [*command, "--log-level", "warning"]


def start_reference(
    bench: Bench, name: str, app: str, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """A reference app under uvicorn, pinned like Levqor; its server and base URL, once it answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = pinned(uvicorn_command(app, port), SERVER_CPU, bench.args.pin)
    return start_server(bench.run, name, command, env, ROOT, base, "/api/v1/status/ready"), base


def start_bare(bench: Bench) -> dict[str, Target]:
    import httpx

    server, base = start_reference(bench, "bare", "bench.bare_app:app", dict(os.environ))
    answer = httpx.post(base + INTAKE_PATH, json=INTAKE_BODY)
    check(answer.status_code == 202, f"bare POST answered {answer.status_code}")
    ids = [str(uuid.uuid4()) for _ in range(bench.args.pool)]
    return {
        "bare_post": bench.target("bare_post", server, base + INTAKE_PATH, post_script(INTAKE_BODY)),
        "bare_get": bench.target("bare_get", server, base, status_script(ids)),
    }


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


def start_levqor(
    bench: Bench, kind: str, database_env: dict[str, str], count_jobs: Callable[[], int]
) -> tuple[dict[str, Target], list[str]]:
    """Levqor's targets, and the ids of the jobs its status GETs cycle through."""
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
    targets = {
        "intake": bench.target(
            f"intake_{kind}",
            server,
            base + INTAKE_PATH,
            post_script(INTAKE_BODY),
            count_rows=count_jobs,
            profiled=True,
        ),
        "status": bench.target(f"status_{kind}", server, base, status_script(ids), profiled=True),
        "graphql_submit": bench.target(
            f"graphql_{kind}",
            server,
            base + "/graphql",
            post_script(GRAPHQL_BODY),
            count_rows=count_jobs,
            profiled=True,
        ),
    }
    return targets, ids


def floor_env(sqlite_path: str, log_path: Path) -> dict[str, str]:
    return {**os.environ, "SQLITE_PATH": sqlite_path, "FLOOR_LOG": str(log_path), "API_KEYS": API_KEY}


def start_floor(bench: Bench, sqlite_path: str, status: Target, ids: Sequence[str]) -> dict[str, Target]:
    """The floor on the SQLite Levqor server's file, loaded with the very script of its status GETs
    (the same ids, in the same order); it must answer what Levqor answers."""
    import httpx

    env = floor_env(sqlite_path, bench.run.workdir / "floor-access.log")
    server, base = start_reference(bench, "floor", "bench.floor_app:app", env)
    path = f"/api/v1/status/{ids[0]}"
    expected = httpx.get(status.url + path, headers={"X-Api-Key": API_KEY})
    answer = httpx.get(base + path, headers={"X-Api-Key": API_KEY})
    check(
        answer.status_code == 200 and answer.content == expected.content,
        f"floor answered {answer.status_code}: {answer.text} where Levqor answered {expected.text}",
    )
    return {"floor_get": replace(status, name="floor_get", server=server, url=base, profiled=False)}


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
        "rounds": args.rounds,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "threads": args.threads,
        "pinned": args.pin,
        "floor": args.floor,
        "profiled": args.profile_dir is not None,
        "cpus": os.cpu_count(),
        "load_1m_at_start": round(os.getloadavg()[0], 2),
    }
    try:
        servers = {"bare": start_bare(bench)}
        database_env, count_jobs = sqlite_target(run)
        servers["sqlite"], ids = start_levqor(bench, "sqlite", database_env, count_jobs)
        if args.floor:
            status = servers["sqlite"]["status"]
            servers["floor"] = start_floor(bench, database_env["SQLITE_PATH"], status, ids)
        if args.postgres:
            servers["postgres"] = start_levqor(bench, "postgres", *postgres_target(run, args.pg_admin_url))[0]
        levqor = bench.rounds(servers)
        bare = levqor.pop("bare")
        floor = levqor.pop("floor", None)  # what is left is one entry per database kind
    except BenchError as exc:
        log(f"failed: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted: stopping the servers and removing the scratch files")
        return 130
    finally:
        run.close()
    result = assemble(settings, bare, levqor, bench.problems, floor)
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0 if result["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
