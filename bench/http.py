"""HTTP benchmark (issue 9): Levqor's REST intake and status GET against the same routes written with
the tutorial stack (bench/tutorial_app.py), GraphQL `submitJob` against REST intake, and a bare
Starlette route (bench/bare_app.py) as context, in one run, with wrk on loopback. Prints one line of
JSON: each figure, its reference, the ratio, the goal of DESIGN.md and pass or miss.

    python bench/http.py [--rounds 3] [--duration 5] [--warmup 2] [--connections 32] [--postgres]

How and why it measures so (rounds, ratios, CPU per request, the servers' settings): bench/README.md.
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
    quotients,
    settled,
    start_server,
    status_script,
    summarize_rounds,
)
from bench.result_file import add_json_option, write_json

ROOT = Path(__file__).resolve().parent.parent
RATE_FAR_ABOVE_LOAD = "1000000000"  # per minute, for both stacks: the limiters stay on the path, never refuse
PG_ADMIN_URL = os.environ.get("LEVQOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
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

# target: (reference, goal) — DESIGN.md, "Targets and how they are measured". The ratio is the
# target's req/s over the reference's; a goal of None is context, reported and never judged.
GOALS: dict[str, tuple[str, float | None]] = {
    "intake": ("tutorial_intake", 4.0),
    "status": ("tutorial_status", 4.0),
    "graphql_submit": ("intake", 0.5),
    # The same submits by a managed key with a budget, against a managed key without one: each is
    # held against its budget in the transaction that stores it (echo's estimate is 0 micro-USD, but
    # the budget is read, its window locked and written, and a ledger row inserted, as for any).
    "budget_intake": ("key_intake", 0.8),
    # A managed key is looked up in the database (batched); the static key is not.
    "key_intake": ("intake", None),
}
CONTEXT: dict[str, tuple[str, str]] = {  # name: (target, bare route)
    "intake/bare_post": ("intake", "bare_post"),
    "status/bare_get": ("status", "bare_get"),
    "tutorial_intake/bare_post": ("tutorial_intake", "bare_post"),
    "tutorial_status/bare_get": ("tutorial_status", "bare_get"),
}
# Which server answers each target; per database kind except the bare route's.
SERVER_OF = {
    "intake": "levqor",
    "status": "levqor",
    "graphql_submit": "levqor",
    "budget_intake": "levqor",
    "key_intake": "levqor",
    "tutorial_intake": "tutorial",
    "tutorial_status": "tutorial",
    "bare_post": "bare",
    "bare_get": "bare",
}


# --- arguments and the JSON line (pure) -------------------------------------------------------------


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
        description="Levqor's REST intake, status GET and GraphQL submitJob against the tutorial stack.",
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
    parser.add_argument("--postgres", action="store_true", help="also measure both stacks on PostgreSQL")
    parser.add_argument(
        "--pg-admin-url",
        default=PG_ADMIN_URL,
        help="where to create the scratch databases (LEVQOR_TEST_PG_URL)",
    )
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server and wrk")
    parser.add_argument(
        "--profile-dir", type=Path, help="record py-spy collapsed stacks of each Levqor run into this folder"
    )
    add_json_option(parser)
    args = parser.parse_args(argv)
    if args.threads > args.connections:
        parser.error("--threads must not exceed --connections (wrk gives each thread a connection)")
    return args


def round_order(kinds: Sequence[str], index: int) -> list[tuple[str, str]]:
    """The (database kind or "bare", target) runs of round `index`: every target right next to its
    reference (tutorial_intake, budget_intake, key_intake, intake, graphql_submit; tutorial_status,
    status), the bare routes between the two databases' chains. Odd rounds run in reverse, so a
    steady drift of the machine favours the target in half the rounds and the reference in the other
    half."""
    if not 1 <= len(kinds) <= 2:
        raise ValueError(f"one or two databases keep every target next to its reference, not {kinds}")
    posts: list[tuple[str, str]] = [("bare", "bare_post")]
    gets: list[tuple[str, str]] = [("bare", "bare_get")]
    for position, kind in enumerate(kinds):
        post_chain = [
            (kind, "tutorial_intake"),
            (kind, "budget_intake"),
            (kind, "key_intake"),
            (kind, "intake"),
            (kind, "graphql_submit"),
        ]
        get_chain = [(kind, "tutorial_status"), (kind, "status")]
        if position == 0:
            posts, gets = posts + post_chain, gets + get_chain
        else:
            posts, gets = post_chain[::-1] + posts, get_chain[::-1] + gets
    order = posts + gets
    return order[::-1] if index % 2 else order


def ratio(target: Sequence[dict[str, Any]], reference: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The median of the per-round ratios of req/s (each round measures the target next to its
    reference), and beside it the same for CPU time per request, the reference's over the target's."""
    rps = quotients(_column(target, "rps"), _column(reference, "rps"))
    if rps is None:
        return None
    report: dict[str, Any] = {
        "ratio": round(statistics.median(rps), 3),
        "ratio_rounds": [round(value, 3) for value in rps],
    }
    cpu_key = "server_cpu_us_per_request"
    cpu = quotients(_column(reference, cpu_key), _column(target, cpu_key))
    if cpu is not None:
        report["cpu_ratio"] = round(statistics.median(cpu), 3)
        report["cpu_ratio_rounds"] = [round(value, 3) for value in cpu]
    return report


def _column(rounds: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [figures[key] for figures in rounds]


def non_2xx(rounds: Sequence[dict[str, Any]]) -> int:
    return sum(figures["non_2xx"] for figures in rounds)


def assemble(
    settings: dict[str, Any],
    figures: Mapping[str, Mapping[str, Sequence[dict[str, Any]]]],
    warmup_non_2xx: Mapping[str, int] | None = None,
    problems: Sequence[str] = (),
) -> dict[str, Any]:
    """The one JSON object the run prints. `figures` maps "bare" and each database kind to its
    targets' figures in every round; `warmup_non_2xx` the non-2xx answers of each server's warm-ups
    ("levqor-sqlite", "bare"...), which count too."""
    bare = figures.get("bare", {})
    servers_non_2xx: dict[str, int] = dict.fromkeys(
        [
            f"{SERVER_OF[name]}-{kind}"
            for kind, targets in figures.items()
            if kind != "bare"
            for name in targets
        ]
        + (["bare"] if bare else []),
        0,
    )
    for server, count in (warmup_non_2xx or {}).items():
        servers_non_2xx[server] = servers_non_2xx.get(server, 0) + count
    for kind, targets in figures.items():
        for name, rounds in targets.items():
            server = "bare" if kind == "bare" else f"{SERVER_OF[name]}-{kind}"
            servers_non_2xx[server] += non_2xx(rounds)

    goals: dict[str, dict[str, Any]] = {}
    context: dict[str, dict[str, Any]] = {}
    for kind, targets in figures.items():
        if kind == "bare":
            continue
        everything = {**bare, **targets}
        for name, (reference, goal) in GOALS.items():
            if name not in targets or reference not in targets:
                continue
            mine, theirs = summarize_rounds(targets[name]), summarize_rounds(targets[reference])
            entry: dict[str, Any] = {
                "rps": mine["rps"],
                "reference": reference,
                "reference_rps": theirs["rps"],
                "cpu_us_per_request": mine["server_cpu_us_per_request"],
                "reference_cpu_us_per_request": theirs["server_cpu_us_per_request"],
            }
            measured = ratio(targets[name], targets[reference])
            failed_answers = {
                server: servers_non_2xx[server]
                for server in {f"{SERVER_OF[name]}-{kind}", f"{SERVER_OF[reference]}-{kind}"}
                if servers_non_2xx[server]
            }
            entry.update(measured or {"ratio": None})
            entry["goal"] = goal
            entry["non_2xx"] = sum(non_2xx(targets[side]) for side in (name, reference))
            met = measured is not None and goal is not None and measured["ratio"] >= goal
            if goal is None:
                entry["result"] = "context" if measured is not None and not failed_answers else "miss"
            else:
                entry["result"] = "pass" if met and not failed_answers else "miss"
            goals[f"{name}_{kind}"] = entry
        for label, (name, reference) in CONTEXT.items():
            if name in everything and reference in everything:
                measured = ratio(everything[name], everything[reference])
                if measured is not None:
                    mine, theirs = summarize_rounds(everything[name]), summarize_rounds(everything[reference])
                    context[f"{label}_{kind}"] = {
                        "rps": mine["rps"],
                        "reference_rps": theirs["rps"],
                        "cpu_us_per_request": mine["server_cpu_us_per_request"],
                        "reference_cpu_us_per_request": theirs["server_cpu_us_per_request"],
                        **measured,
                    }
    non_2xx_goal = {
        "counts": servers_non_2xx,
        "goal": 0,
        "result": "pass" if not any(servers_non_2xx.values()) else "miss",
    }
    passed = bool(goals) and all(entry["result"] in ("pass", "context") for entry in goals.values())
    return {
        "bench": "http",
        "settings": settings,
        "targets": goals,
        "non_2xx": non_2xx_goal,
        "context": context,
        "figures": {
            kind: {name: summarize_rounds(rounds) for name, rounds in targets.items()}
            for kind, targets in figures.items()
        },
        "valid": not problems,
        "problems": list(problems),
        "pass": passed and non_2xx_goal["result"] == "pass" and not problems,
    }


# --- measuring ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One route of a running server that wrk loads, with its Lua script."""

    name: str  # in the log, the problems and the profile files: "intake_sqlite"
    server_name: str  # "levqor-sqlite", "tutorial-sqlite", "bare"
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
    warmup_non_2xx: dict[str, int] = field(default_factory=dict)

    def target(
        self,
        name: str,
        server_name: str,
        server: subprocess.Popen[bytes],
        url: str,
        script_text: str,
        count_rows: Callable[[], int] | None = None,
        profiled: bool = False,
    ) -> Target:
        script = self.run.workdir / f"{name}.lua"
        script.write_text(script_text)
        return Target(name, server_name, server, url, script, count_rows, profiled)

    def wrk(self, url: str, script: Path, duration_s: int) -> Figures:
        command = ["wrk", f"-t{self.args.threads}", f"-c{self.args.connections}", f"-d{duration_s}s"]
        command += [f"--timeout={WRK_TIMEOUT_S}s", "-s", str(script), url]
        done = subprocess.run(
            pinned(command, LOAD_CPU, self.args.pin), capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
        return parse_wrk(done.stdout)

    def rounds(self, servers: dict[str, dict[str, Target]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Every target's figures in every round; `servers` maps "bare" and each database kind to
        its targets. The servers stay up throughout, so no round pays for a start."""
        kinds = [kind for kind in servers if kind != "bare"]
        if self.args.warmup:
            for kind, name in round_order(kinds, 0):
                self.warm_up(servers[kind][name])
        figures: dict[str, dict[str, list[dict[str, Any]]]] = {
            kind: {name: [] for name in targets} for kind, targets in servers.items()
        }
        for index in range(self.args.rounds):
            for kind, name in round_order(kinds, index):
                figures[kind][name].append(self.measure(servers[kind][name], index + 1))
        return figures

    def warm_up(self, target: Target) -> None:
        rows_before = target.count_rows() if target.count_rows else 0
        figures = self.wrk(target.url, target.script, self.args.warmup)
        server = target.server_name
        self.warmup_non_2xx[server] = self.warmup_non_2xx.get(server, 0) + figures.errors["status"]
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
            # Server CPU per answer moves less than req/s when other work shares the machine.
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
        """Records what makes the run invalid: socket errors or timeouts, or fewer new jobs than 2xx
        answers to a write. Non-2xx answers are counted per server and fail the targets instead.
        Returns the jobs written, for a target that writes."""
        transport = {name: count for name, count in figures.errors.items() if name != "status" and count}
        if transport:
            self.problems.append(f"{target.name} {label}: wrk saw errors {transport}")
        if target.count_rows is None:
            return None
        written = settled(target.count_rows) - rows_before
        accepted = figures.requests - sum(figures.errors.values())
        if written < accepted:
            self.problems.append(
                f"{target.name} {label}: {accepted} accepted answers but only {written} new jobs"
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
        # Collapsed stacks of the thread holding the GIL (bench/README.md, "Profiles").
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
    """A reference app as `uvicorn app:app` runs it: uvicorn's defaults but for the port."""
    return [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)]


def reference_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in SETTINGS_WE_SET}
    return {
        **env,
        "API_KEYS": API_KEY,
        "RATE_BURST": RATE_FAR_ABOVE_LOAD,
        "RATE_GLOBAL": RATE_FAR_ABOVE_LOAD,
        **extra,
    }


def start_reference(
    bench: Bench, name: str, app: str, env: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    """A reference app under uvicorn, pinned like Levqor; its server and base URL, once it answers.
    Run from the repository root, with the repository first on the path, for `bench.*`."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = pinned(uvicorn_command(app, port), SERVER_CPU, bench.args.pin)
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}
    return start_server(bench.run, name, command, env, ROOT, base, "/api/v1/status/ready"), base


def start_bare(bench: Bench) -> dict[str, Target]:
    import httpx

    server, base = start_reference(bench, "bare", "bench.bare_app:app", reference_env({}))
    answer = httpx.post(base + INTAKE_PATH, json=INTAKE_BODY)
    check(answer.status_code == 202, f"bare POST answered {answer.status_code}")
    ids = [str(uuid.uuid4()) for _ in range(bench.args.pool)]
    return {
        "bare_post": bench.target("bare_post", "bare", server, base + INTAKE_PATH, post_script(INTAKE_BODY)),
        "bare_get": bench.target("bare_get", "bare", server, base, status_script(ids)),
    }


def seed_jobs(base: str, pool: int) -> list[str]:
    """`pool` jobs through a server's intake, for its status GETs; the first one read back."""
    import httpx

    with httpx.Client(base_url=base, headers={"X-Api-Key": API_KEY}, timeout=10.0) as client:
        ids = []
        for _ in range(pool):
            answer = client.post(INTAKE_PATH, json=INTAKE_BODY)
            check(answer.status_code == 202, f"{base} intake answered {answer.status_code}: {answer.text}")
            ids.append(answer.json()["job_id"])
        answer = client.get(f"/api/v1/status/{ids[0]}")
        check(answer.status_code == 200 and answer.json()["job_id"] == ids[0], f"status: {answer.text}")
    return ids


def start_tutorial(
    bench: Bench, kind: str, database_url: str, count_jobs: Callable[[], int]
) -> dict[str, Target]:
    env = reference_env({"TUTORIAL_DATABASE_URL": database_url})
    server, base = start_reference(bench, f"tutorial-{kind}", "bench.tutorial_app:app", env)
    ids = seed_jobs(base, bench.args.pool)
    name = f"tutorial-{kind}"
    return {
        "tutorial_intake": bench.target(
            f"tutorial_intake_{kind}", name, server, base + INTAKE_PATH, post_script(INTAKE_BODY), count_jobs
        ),
        "tutorial_status": bench.target(f"tutorial_status_{kind}", name, server, base, status_script(ids)),
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
            "LEVQOR_RATE_KEY": RATE_FAR_ABOVE_LOAD,  # the per-key allowance, where the code has one
            "LEVQOR_INPROCESS_WORKER": "false",
            "LEVQOR_LOG_FORMAT": "json",
            **database_env,
        }
    )
    return env


def levqor_serve_command() -> list[str]:
    """`levqor serve` as a user runs it, one process and no in-process worker, with this interpreter
    (so PYTHONPATH picks the package)."""
    command = [sys.executable, "-m", "levqor", "serve", "--workers", "1"]
    help_text = subprocess.run(
        [*command[:4], "--help"], capture_output=True, text=True, check=False, cwd=tempfile.gettempdir()
    ).stdout
    return [*command, "--no-worker"] if "--no-worker" in help_text else command


def levqor_package(env: dict[str, str], cwd: Path) -> dict[str, str]:
    """Which `levqor` package the server imports, and the commit of its checkout."""
    where = subprocess.run(
        [sys.executable, "-c", "import levqor; print(levqor.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    folder = Path(where).parent.parent
    git = ["git", "-C", str(folder)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run([*git, "status", "--porcelain", "--", "levqor"], capture_output=True, text=True)
    return {
        "path": where,
        "commit": commit.strip(),
        "levqor_changed_files": str(len(dirty.stdout.splitlines())),
    }


def start_levqor(
    bench: Bench, kind: str, database_env: dict[str, str], count_jobs: Callable[[], int]
) -> dict[str, Target]:
    import httpx

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = levqor_env(database_env, port)
    bench.run.notes.setdefault("levqor_package", levqor_package(env, bench.run.workdir))
    # The working folder is the scratch one, so no `.env` of the repository changes the settings.
    name = f"levqor-{kind}"
    server = start_server(
        bench.run,
        name,
        pinned(levqor_serve_command(), SERVER_CPU, bench.args.pin),
        env,
        bench.run.workdir,
        base,
        "/health",
    )
    ids = seed_jobs(base, bench.args.pool)
    answer = httpx.post(base + "/graphql", json=GRAPHQL_BODY, headers={"X-Api-Key": API_KEY})
    submitted = ((answer.json() or {}).get("data") or {}).get("submitJob") or {}
    check(
        answer.status_code == 200
        and submitted.get("userErrors") == []
        and (submitted.get("job") or {}).get("status") == "QUEUED",
        f"submitJob answered {answer.status_code}: {answer.text}",
    )
    budgeted = managed_key(base, {"period": "month", "limit_micros": 10**12})
    unbudgeted = managed_key(base, None)
    return {
        "intake": bench.target(
            f"intake_{kind}", name, server, base + INTAKE_PATH, post_script(INTAKE_BODY), count_jobs, True
        ),
        "budget_intake": bench.target(
            f"budget_intake_{kind}",
            name,
            server,
            base + INTAKE_PATH,
            post_script(INTAKE_BODY, budgeted),
            count_jobs,
            True,
        ),
        "key_intake": bench.target(
            f"key_intake_{kind}",
            name,
            server,
            base + INTAKE_PATH,
            post_script(INTAKE_BODY, unbudgeted),
            count_jobs,
            True,
        ),
        "status": bench.target(f"status_{kind}", name, server, base, status_script(ids), profiled=True),
        "graphql_submit": bench.target(
            f"graphql_{kind}", name, server, base + "/graphql", post_script(GRAPHQL_BODY), count_jobs, True
        ),
    }


def managed_key(base: str, budget: dict[str, Any] | None) -> str:
    """The secret of a new managed key, with `budget` (far above the load) when one is given."""
    import httpx

    admin = {"X-Api-Key": API_KEY}
    created = httpx.post(
        base + "/api/v1/keys", json={"name": "bench", "scopes": ["jobs:write"]}, headers=admin
    )
    check(created.status_code == 201, f"creating a key answered {created.status_code}: {created.text}")
    key = created.json()
    if budget is not None:
        answer = httpx.put(f"{base}/api/v1/budgets/keys/{key['key']['id']}", json=budget, headers=admin)
        check(answer.status_code == 200, f"setting its budget answered {answer.status_code}: {answer.text}")
    secret: str = key["secret"]
    return secret


def sqlite_counter(path: Path) -> Callable[[], int]:
    def count() -> int:
        with sqlite3.connect(path) as conn:
            rows: int = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
            return rows

    return count


def postgres_database(run: Run, admin_url: str, label: str) -> tuple[str, Callable[[], int]]:
    """A scratch database, dropped when the run ends: its SQLAlchemy URL and its jobs counter."""
    import psycopg
    from sqlalchemy.engine import make_url

    admin = make_url(admin_url)
    plain = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"levqor_bench_http_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    run.cleanups.append(drop)
    url = admin.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    direct = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)

    def count() -> int:
        with psycopg.connect(direct) as conn:
            row = conn.execute("SELECT count(*) FROM jobs").fetchone()
            return int(row[0]) if row else 0

    return url, count


def start_database_kind(bench: Bench, kind: str) -> dict[str, Target]:
    """Levqor's and the tutorial stack's targets on one kind of database, each on its own."""
    if kind == "sqlite":
        levqor_db, tutorial_db = bench.run.workdir / "levqor.db", bench.run.workdir / "tutorial.db"
        levqor_env_part = {"SQLITE_PATH": str(levqor_db)}
        levqor_count, tutorial_url = sqlite_counter(levqor_db), f"sqlite:///{tutorial_db}"
        tutorial_count = sqlite_counter(tutorial_db)
    else:
        levqor_url, levqor_count = postgres_database(bench.run, bench.args.pg_admin_url, "levqor")
        tutorial_url, tutorial_count = postgres_database(bench.run, bench.args.pg_admin_url, "tutorial")
        levqor_env_part = {"LEVQOR_DATABASE_URL": levqor_url}
    return {
        **start_levqor(bench, kind, levqor_env_part, levqor_count),
        **start_tutorial(bench, kind, tutorial_url, tutorial_count),
    }


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
    settings: dict[str, Any] = {
        "duration_s": args.duration,
        "rounds": args.rounds,
        "warmup_s": args.warmup,
        "connections": args.connections,
        "threads": args.threads,
        "pinned": args.pin,
        "profiled": args.profile_dir is not None,
        "cpus": os.cpu_count(),
        "load_1m_at_start": round(os.getloadavg()[0], 2),
    }
    try:
        servers = {"bare": start_bare(bench), "sqlite": start_database_kind(bench, "sqlite")}
        if args.postgres:
            servers["postgres"] = start_database_kind(bench, "postgres")
        figures = bench.rounds(servers)
    except BenchError as exc:
        log(f"failed: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted: stopping the servers and removing the scratch files")
        return 130
    finally:
        run.close()
    settings.update(run.notes)
    result = assemble(settings, figures, bench.warmup_non_2xx, bench.problems)
    write_json(args.json, result)
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0 if result["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
