"""Growth benchmark: the queue and the API with N finished jobs already in the tables (DESIGN.md,
"growth": every figure at least 90 % of its empty-table figure, measured in the same run).

    python -m bench.growth [--finished 1000000] [--jobs 20000] [--rounds 1] [--duration 5]
                           [--claims 300] [--no-postgres] [--no-pin]

On SQLite and on PostgreSQL, two databases side by side: one empty and migrated, one seeded with
N finished jobs and their events (bench/growth_support.py). Each figure is measured on both, next
to each other, every other round in the other order; between measurements each database goes back
to its starting state. The figures:
- drain: jobs/s of 2 `levqor worker` processes draining `--jobs` pre-enqueued `echo` jobs, from
  the first start to the last finish among those jobs (after one warm-up drain per database);
- claim_p50_ms, claim_p99_ms: one `claim_jobs` transaction of `--claim-batch` jobs with
  `--claim-queued` jobs waiting (each batch is then completed and replaced, untimed, so every claim
  sees the same queue); the first tenth are a warm-up;
- intake_rps, status_rps: wrk against `levqor serve --no-worker` (bench/http.py's `Bench`), status
  cycling through `--pool` ids, half of them old seeded jobs on the seeded side.
A ratio is seeded over empty for rates, empty over seeded for latencies (1.0 is flat), the median
of the per-round ratios. Prints one line of JSON; bench/README.md says more.
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
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import col, select

from bench.growth_support import (
    Baseline,
    baseline,
    old_job_ids,
    reset,
    seed_postgres,
    seed_sqlite,
    sizes,
)
from bench.http import PG_ADMIN_URL, Bench, levqor_env, levqor_serve_command, seed_jobs
from bench.http_support import BenchError, Run, free_port, pinned, post_script, start_server, status_script
from bench.queue import enqueue_echo_jobs, fresh_database
from bench.queue_support import (
    Processes,
    drain_from,
    percentile,
    python,
    scratch_postgres,
    utc_now,
    wait_until,
)
from bench.result_file import add_json_option, write_json
from levqor import queue
from levqor.db.engine import Database
from levqor.db.models import Job, JobStatus

GOAL = 0.9
WORKER_PROCESSES = 2
SERVER_CPU = 0
LEASE_S = 30
CLAIM_WORKER_ID = "bench-growth:claims"
SIDES = ("empty", "seeded")
UNFINISHED = [JobStatus.QUEUED.value, JobStatus.RUNNING.value]
INTAKE_BODY: dict[str, Any] = {"workflow": "echo", "payload": {"message": "bench"}}
# figure: whether a higher value is better (rates) or a lower one (latencies)
FIGURES = {
    "drain_jobs_per_s": True,
    "claim_p50_ms": False,
    "claim_p99_ms": False,
    "intake_rps": True,
    "status_rps": True,
}


def log(message: str) -> None:
    print(f"[bench/growth] {message}", file=sys.stderr, flush=True)


@dataclass
class Side:
    """One database of a pair: where it is, how Levqor is pointed at it, and its starting state."""

    kind: str
    name: str  # "empty" or "seeded"
    url: str
    env: dict[str, str]
    start: Baseline
    db: Database

    def reset(self) -> None:
        reset(self.kind, self.url, self.start)

    def count(self, *where: Any) -> int:
        statement = select(func.count()).select_from(Job).where(*where)
        return int(self.db.read_sync(lambda session: session.exec(statement).one()))

    def new_jobs(self) -> int:
        return self.count(col(Job.seq) > self.start.job_seq)


# --- the queue figures -------------------------------------------------------------------------------


def drain(side: Side, jobs: int, workdir: Path, timeout_s: float) -> dict[str, Any]:
    """`jobs` echo jobs drained by 2 worker processes, timed from the first start to the last finish
    among them as the workers wrote them (process start-up is reported apart)."""
    enqueue_echo_jobs(side.db, jobs)
    with Processes(workdir) as processes:
        spawned_at, spawned = utc_now(), time.monotonic()
        for index in range(WORKER_PROCESSES):
            command = python("-m", "levqor", "worker", "--workflows", "echo")
            processes.spawn(f"worker-{side.kind}-{side.name}-{index}", command, side.env)
        # Done when nothing is queued or running (an index range), not by counting terminal jobs,
        # which would read the seeded million every poll on one side only.
        wait_until(
            lambda: side.count(col(Job.status).in_(UNFINISHED)) == 0,
            timeout_s=timeout_s,
            what=f"the {side.kind} {side.name} drain",
            processes=processes,
        )
        wall_s = time.monotonic() - spawned

    def figures(session: Any) -> tuple[Any, Any, int]:
        new = col(Job.seq) > side.start.job_seq
        first, last = session.exec(
            select(func.min(Job.started_at), func.max(Job.finished_at)).where(new)
        ).one()
        done = select(func.count()).select_from(Job).where(new, col(Job.status) == JobStatus.SUCCEEDED.value)
        return first, last, int(session.exec(done).one())

    first, last, succeeded = side.db.read_sync(figures)
    side.reset()
    system = f"levqor_{side.kind}_{side.name}"
    return drain_from(
        system, jobs, succeeded, spawned_at=spawned_at, first=first, last=last, wall_s=wall_s
    ).report()


def claim_latency(side: Side, queued: int, batch: int, samples: int) -> dict[str, float]:
    """Milliseconds of one claim transaction, with `queued` jobs waiting before each claim."""
    enqueue_echo_jobs(side.db, queued)
    warmup = max(1, samples // 10)
    times_ms: list[float] = []
    for index in range(warmup + samples):
        started = time.perf_counter()
        claimed = side.db.write_sync(
            lambda session: queue.claim_jobs(
                session, worker_id=CLAIM_WORKER_ID, workflows=["echo"], max_jobs=batch, lease_s=LEASE_S
            )
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        if index >= warmup:
            times_ms.append(elapsed_ms)
        outcomes = [
            queue.Outcome(
                job.id, CLAIM_WORKER_ID, job.attempt, queue.OutcomeKind.SUCCEEDED, result=job.payload
            )
            for job in claimed
        ]
        side.db.write_sync(lambda session, outcomes=outcomes: queue.record_outcomes(session, outcomes))
        enqueue_echo_jobs(side.db, len(claimed))
    side.reset()
    return {"p50_ms": round(percentile(times_ms, 0.5), 3), "p99_ms": round(percentile(times_ms, 0.99), 3)}


def order(index: int) -> tuple[str, ...]:
    """Empty first in even rounds, seeded first in odd ones: a steady drift favours neither."""
    return SIDES if index % 2 == 0 else SIDES[::-1]


def queue_rounds(sides: dict[str, Side], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    rounds: dict[str, dict[str, list[float]]] = {name: {} for name in SIDES}
    drained: list[dict[str, Any]] = []
    for name in SIDES:
        log(f"{sides[name].kind} {name}: warm-up drain of {args.drain_warmup} jobs")
        drained.append(drain(sides[name], args.drain_warmup, workdir, args.timeout))
    for index in range(args.rounds):
        for name in order(index):
            figures = drain(sides[name], args.jobs, workdir, args.timeout)
            log(f"{sides[name].kind} {name} round {index + 1}: drain {figures}")
            drained.append(figures)
            rounds[name].setdefault("drain_jobs_per_s", []).append(figures["jobs_per_s"])
        for name in order(index):
            latency = claim_latency(sides[name], args.claim_queued, args.claim_batch, args.claims)
            log(f"{sides[name].kind} {name} round {index + 1}: claim {latency}")
            rounds[name].setdefault("claim_p50_ms", []).append(latency["p50_ms"])
            rounds[name].setdefault("claim_p99_ms", []).append(latency["p99_ms"])
    return {"rounds": rounds, "all_succeeded": all(figures["all_succeeded"] for figures in drained)}


# --- the HTTP figures --------------------------------------------------------------------------------


def http_rounds(sides: dict[str, Side], args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Intake and status req/s of one `levqor serve --no-worker` per database, both up throughout."""
    settings = argparse.Namespace(
        threads=1,
        connections=args.connections,
        pin=args.pin,
        warmup=args.warmup,
        duration=args.duration,
        profile_dir=None,
    )
    run = Run(workdir=Path(tempfile.mkdtemp(prefix="http-", dir=workdir)))
    bench = Bench(args=settings, run=run)
    try:
        targets = {name: start_targets(bench, side, args) for name, side in sides.items()}
        chain = [("intake_rps", "empty"), ("intake_rps", "seeded"), ("status_rps", "seeded")]
        chain.append(("status_rps", "empty"))
        if args.warmup:
            for figure, name in chain:
                bench.warm_up(targets[name][figure])
        rounds: dict[str, dict[str, list[float]]] = {name: {} for name in SIDES}
        cpu: dict[str, dict[str, list[float]]] = {name: {} for name in SIDES}
        for index in range(args.rounds):
            for figure, name in chain if index % 2 == 0 else chain[::-1]:
                measured = bench.measure(targets[name][figure], index + 1)
                rounds[name].setdefault(figure, []).append(measured["rps"])
                cpu[name].setdefault(figure, []).append(measured["server_cpu_us_per_request"])
                if measured["non_2xx"]:
                    bench.problems.append(f"{figure} {name} round {index + 1}: {measured['non_2xx']} non-2xx")
    finally:
        run.close()
    for side in sides.values():
        side.reset()
    return {"rounds": rounds, "cpu_us_per_request": cpu, "problems": bench.problems}


def start_targets(bench: Bench, side: Side, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    database = {
        key: value for key, value in side.env.items() if key in {"SQLITE_PATH", "LEVQOR_DATABASE_URL"}
    }
    name = f"levqor-{side.kind}-{side.name}"
    command = pinned(levqor_serve_command(), SERVER_CPU, bench.args.pin)
    server = start_server(
        bench.run, name, command, levqor_env(database, port), bench.run.workdir, base, "/health"
    )
    old = old_status_ids(args)
    ids = seed_jobs(base, args.pool - old)
    ids += old_job_ids(side.kind, side.url, side.start.job_seq, old, seed=args.pool)
    random.Random(args.pool).shuffle(ids)
    label = f"{side.kind}_{side.name}"
    intake_url = base + "/api/v1/intake"
    intake = bench.target(
        f"intake_{label}", name, server, intake_url, post_script(INTAKE_BODY), side.new_jobs
    )
    return {
        "intake_rps": intake,
        "status_rps": bench.target(f"status_{label}", name, server, base, status_script(ids)),
    }


def old_status_ids(args: argparse.Namespace) -> int:
    """How many of the ids status reads are finished jobs from before the run (the rest are new)."""
    return args.pool // 2


# --- the run -----------------------------------------------------------------------------------------


@contextmanager
def database_pair(
    kind: str, args: argparse.Namespace, workdir: Path
) -> Iterator[tuple[dict[str, Side], dict[str, Any]]]:
    """The empty and the seeded database of one kind, and how long seeding took."""
    with ExitStack() as stack:
        sides: dict[str, Side] = {}
        seeding: dict[str, Any] = {}
        for name in SIDES:
            pg_url = (
                stack.enter_context(scratch_postgres(args.pg_admin_url, f"growth_{name}"))
                if kind == "postgres"
                else None
            )
            url, env = fresh_database(kind, workdir, pg_url)
            seed = seed_sqlite if kind == "sqlite" else seed_postgres
            if name == "seeded":
                log(f"{kind}: seeding {args.finished} finished jobs")
                started = time.perf_counter()
                steps = seed(url, args.finished)
                seeding = {"seconds": round(time.perf_counter() - started, 2), "jobs": args.finished}
                seeding.update({step: round(seconds, 2) for step, seconds in steps.items()})
                log(f"{kind}: seeded in {seeding}")
            else:
                # The finished jobs the status figure reads on this side, shaped as the seeded ones,
                # so both sides answer the same mix of queued and finished jobs.
                seed(url, old_status_ids(args))
            db = stack.enter_context(_disposing(Database(url, pool_size=2)))
            sides[name] = Side(kind, name, url, env, baseline(kind, url), db)
        yield sides, seeding


@contextmanager
def _disposing(db: Database) -> Iterator[Database]:
    try:
        yield db
    finally:
        db.dispose()


def compare(empty: Sequence[float], seeded: Sequence[float], higher_is_better: bool) -> dict[str, Any]:
    pairs = list(zip(empty, seeded, strict=True))
    ratios = [(s / e if higher_is_better else e / s) if min(e, s) > 0 else 0.0 for e, s in pairs]
    ratio = statistics.median(ratios)
    return {
        "empty": round(statistics.median(empty), 3),
        "seeded": round(statistics.median(seeded), 3),
        "ratio": round(ratio, 3),
        "goal": GOAL,
        "result": "pass" if ratio >= GOAL else "miss",
        "empty_rounds": list(empty),
        "seeded_rounds": list(seeded),
        "ratio_rounds": [round(value, 3) for value in ratios],
    }


def measure_kind(kind: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with database_pair(kind, args, workdir) as (sides, seeding):
        seeded_sizes = sizes(kind, sides["seeded"].url)
        queued = queue_rounds(sides, args, workdir)
        served = http_rounds(sides, args, workdir)
    rounds = {name: {**queued["rounds"][name], **served["rounds"][name]} for name in SIDES}
    figures = {
        figure: compare(rounds["empty"][figure], rounds["seeded"][figure], higher)
        for figure, higher in FIGURES.items()
    }
    for figure, cpu in ((f, served["cpu_us_per_request"]) for f in ("intake_rps", "status_rps")):
        figures[figure]["server_cpu_us_per_request"] = {name: cpu[name][figure] for name in SIDES}
    return {
        "seeding": seeding,
        "sizes": seeded_sizes,
        "figures": figures,
        "all_drained_jobs_succeeded": queued["all_succeeded"],
        "problems": served["problems"],
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__.split("\n\n")[0])
    number = parser.add_argument
    number("--finished", type=int, default=1_000_000, help="finished jobs seeded (1000000)")
    number("--jobs", type=int, default=20_000, help="jobs each drain runs (20000)")
    number("--drain-warmup", type=int, help="jobs of the warm-up drain (a tenth of --jobs, at most 2000)")
    number("--rounds", type=int, default=1, help="rounds; each ratio is the median of theirs (1)")
    number("--claims", type=int, default=300, help="claims timed per database and round (300)")
    number("--claim-batch", type=int, default=50, help="jobs per claim (50)")
    number("--claim-queued", type=int, default=5000, help="jobs waiting at each claim (5000)")
    number("--duration", type=int, default=5, help="seconds of wrk per HTTP figure and round (5)")
    number("--warmup", type=int, default=2, help="seconds of wrk warm-up per HTTP figure, once (2)")
    number("--connections", type=int, default=32, help="wrk connections (32)")
    number("--pool", type=int, default=512, help="job ids status cycles through (512)")
    number("--timeout", type=float, default=600, help="seconds a drain may take (600)")
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL, help="where the scratch databases go")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin server and wrk")
    add_json_option(parser)
    args = parser.parse_args(argv)
    if args.drain_warmup is None:
        args.drain_warmup = max(1, min(2000, args.jobs // 10))
    if min(args.finished, args.jobs, args.rounds, args.claims, args.claim_batch, args.pool) < 1:
        parser.error("--finished, --jobs, --rounds, --claims, --claim-batch and --pool must be positive")
    if args.claim_queued < args.claim_batch:
        parser.error("--claim-queued must be at least --claim-batch")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        log("wrk is not installed: `apt-get install -y wrk`, then run again")
        return 2
    if args.pin and (shutil.which("taskset") is None or (os.cpu_count() or 1) < 2):
        args.pin = False
    kinds = ["sqlite"] if args.no_postgres else ["sqlite", "postgres"]
    load_before = os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="levqor-bench-growth-") as tmp:
            results = {kind: measure_kind(kind, args, Path(tmp)) for kind in kinds}
    except (BenchError, TimeoutError, RuntimeError) as exc:
        log(f"failed: {exc}")
        return 1
    misses = [
        f"{kind}.{name}"
        for kind, r in results.items()
        for name, f in r["figures"].items()
        if f["result"] == "miss"
    ]
    problems = [problem for r in results.values() for problem in r["problems"]]
    succeeded = all(r["all_drained_jobs_succeeded"] for r in results.values())
    report = {
        "bench": "growth",
        "finished": args.finished,
        "jobs": args.jobs,
        "rounds": args.rounds,
        "goal": GOAL,
        "settings": {
            key: getattr(args, key)
            for key in (
                "claims",
                "claim_batch",
                "claim_queued",
                "duration",
                "warmup",
                "connections",
                "pool",
                "pin",
            )
        },
        "seeding": {kind: r["seeding"] for kind, r in results.items()},
        "figures": {kind: r["figures"] for kind, r in results.items()},
        "sizes": {kind: r["sizes"] for kind, r in results.items()},
        "misses": misses,
        "pass": not misses,
        "all_drained_jobs_succeeded": succeeded,
        "problems": problems,
        "valid": succeeded and not problems,
        "cpus": os.cpu_count(),
        "load_avg_before": [round(value, 2) for value in load_before],
        "load_avg_after": [round(value, 2) for value in os.getloadavg()],
    }
    write_json(args.json, report)
    print(json.dumps(report, separators=(",", ":")), flush=True)
    return 0 if report["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
