"""Queue benchmark (issue 4): Levqor's queue against PgQueuer, Celery, RQ and procrastinate, in one run.

    python -m bench.queue [--jobs 20000] [--rounds 1] [--latency-samples 200] [--levqor-concurrency N]
                          [--pg-admin-url URL] [--no-postgres]

What is measured, and why so (bench/README.md has the long version):
- Throughput: N no-op jobs are enqueued first (not measured), then 2 worker processes per system
  drain them. Levqor: `levqor worker` x2 on `echo` (its default concurrency, or
  --levqor-concurrency), on a fresh SQLite file and on a scratch PostgreSQL database. PgQueuer: 2
  processes of bench/pgqueuer_peer.py (`PgQueuer.run()`, its default batches of 10) on a scratch
  database of its own. Celery: the Redis broker, 2 workers of the solo pool (prefetch 64, a little
  faster than its default 4 here). RQ: 2 `SimpleWorker`s. procrastinate, as context (DESIGN.md sets
  no goal against it): 2 of its own workers with their defaults, on a scratch database of its own
  (bench/procrastinate_peer.py). The drain counts from the first job starting to the last one
  finishing, as the system itself recorded them; `startup_s` is from spawning the workers to the
  first job starting, reported apart, and `wall_s` is both. Every job is checked succeeded, once,
  and the JSON says so per system.
- The ratios are Levqor's jobs/s, on SQLite and on PostgreSQL, over PgQueuer's (DESIGN.md's goal: at
  least 1.5) and over the faster of Celery and RQ (at least 3), from the median round of each system
  (--rounds; the rounds interleave the systems), and again from the best rounds.
- Pickup latency, enqueue to running: jobs are submitted one at a time over HTTP (random gaps of
  20-60 ms, far below capacity, so no job waits behind another) to `levqor serve` with its in-process
  worker (one process), and to `levqor serve --no-worker` plus one `levqor worker` (across processes),
  from `created_at` to `started_at` as the server wrote them. The first 10 are a warm-up and dropped.
  p50, p95, p99 and max; goals: p50 at most 10 ms in one process, 25 ms across processes.
- Runs (issue 13): a run of --run-steps steps, one root, a fan-out of all but two, and one sink
  that waits for the whole fan-out, is drained by the same 2 `levqor worker` processes as N plain
  `echo` jobs (N = --run-steps), on the same database kind, in the same round. The ratio is the
  run's drain time over the plain jobs' (the scheduling cost per step against a plain job's); goal:
  at most 2. The run's critical path (root, fan-out, sink) is in its time: two wake-ups that plain
  jobs do not wait for.
- Only loopback services: PostgreSQL (--pg-admin-url, default LEVQOR_TEST_PG_URL or
  127.0.0.1:5432 as postgres) and Redis 127.0.0.1:6379, DBs 12-14. Everything the run starts or
  creates is removed at the end, on Ctrl-C too.

Prints one line of JSON.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Run as a file, this folder comes first on sys.path, where this file would hide the standard
    # library's `queue` (and bench/http.py its `http`) from everything imported below.
    _HERE = os.path.dirname(os.path.realpath(__file__))
    sys.path[:] = [entry for entry in sys.path if os.path.realpath(entry or os.curdir) != _HERE]

import argparse
import asyncio
import json
import random
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func
from sqlmodel import col, select

from bench.queue_support import (
    Drain,
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
from levqor.config import Settings
from levqor.db.engine import Database, create_db_engine
from levqor.db.migrate import upgrade
from levqor.db.models import TERMINAL_STATUSES, Job, JobStatus
from levqor.resolvers.context import Context
from levqor.resolvers.runs import MAX_RUN_STEPS, submit_run

PG_ADMIN_URL = os.environ.get("LEVQOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
DEFAULT_JOBS = 20_000
ENQUEUE_CHUNK = 1000
WORKER_PROCESSES = 2
LATENCY_WARMUP = 10
LATENCY_GAP_S = (0.02, 0.06)
# DESIGN.md, "Targets": Levqor's jobs/s over each reference's, and the pickup p50 in ms.
TARGET_RATIO_VS_PGQUEUER = 1.5
TARGET_RATIO_VS_CELERY_RQ = 3.0
TARGET_PICKUP_P50_MS = {"in_process": 10.0, "cross_process": 25.0}
TARGET_RUN_STEP_OVER_PLAIN = 2.0
DEFAULT_RUN_STEPS = 1000
START_TIMEOUT_S = 60.0
TERMINAL = [status.value for status in TERMINAL_STATUSES]


def fresh_database(kind: str, workdir: Path, pg_url: str | None) -> tuple[str, dict[str, str]]:
    """A migrated, empty database and the environment that points Levqor at it."""
    if kind == "sqlite":
        path = workdir / f"levqor-{uuid.uuid4().hex[:6]}.db"
        url, env = f"sqlite:///{path}", {"SQLITE_PATH": str(path)}
    else:
        assert pg_url is not None
        url, env = pg_url, {"LEVQOR_DATABASE_URL": pg_url}
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        engine.dispose()
    engine = create_db_engine(url)
    upgrade(engine)
    engine.dispose()
    base_env = {"LEVQOR_LOG_FORMAT": "json", "RATE_BURST": "1000000000", "RATE_GLOBAL": "1000000000"}
    return url, {**base_env, **env}


def enqueue_echo_jobs(db: Database, n: int) -> None:
    for start in range(0, n, ENQUEUE_CHUNK):
        batch = [Job(workflow="echo", payload={"n": i}) for i in range(start, min(n, start + ENQUEUE_CHUNK))]
        db.write_sync(lambda session, batch=batch: queue.enqueue_many(session, batch))


def enqueue_fan_run(db: Database, steps: int) -> None:
    """One run through the resolver that `POST /api/v1/runs` calls: a root, `steps - 2` children of
    it, and a sink that waits for every child."""
    middle = [f"s{i}" for i in range(steps - 2)]
    body = {
        "steps": [
            {"key": "root", "workflow": "echo", "payload": {}},
            *(
                {"key": key, "workflow": "echo", "payload": {"n": key}, "depends_on": ["root"]}
                for key in middle
            ),
            {"key": "sink", "workflow": "echo", "payload": {}, "depends_on": middle},
        ]
    }
    settings = Settings.from_mapping({"LEVQOR_LOG_FORMAT": "json"})
    asyncio.run(submit_run(Context(db, settings), body))


def terminal_count(db: Database) -> int:
    statement = select(func.count()).select_from(Job).where(col(Job.status).in_(TERMINAL))
    return int(db.read_sync(lambda session: session.exec(statement).one()))


def run_levqor(
    kind: str,
    n: int,
    workdir: Path,
    pg_url: str | None,
    *,
    timeout_s: float,
    concurrency: int | None = None,
    as_run: bool = False,
) -> Drain:
    """Enqueue `n` echo jobs (or one run of `n` steps, `as_run`), then drain them with 2 workers."""
    url, env = fresh_database(kind, workdir, pg_url)
    if concurrency is not None:
        env["LEVQOR_WORKER_CONCURRENCY"] = str(concurrency)
    db = Database(url, pool_size=2)
    try:
        if as_run:
            enqueue_fan_run(db, n)
        else:
            enqueue_echo_jobs(db, n)
        with Processes(workdir) as processes:
            spawned_at, started = utc_now(), time.monotonic()
            for index in range(WORKER_PROCESSES):
                processes.spawn(
                    f"levqor-{kind}-{index}", python("-m", "levqor", "worker", "--workflows", "echo"), env
                )
            wait_until(
                lambda: terminal_count(db) >= n,
                timeout_s=timeout_s,
                what=f"the Levqor {kind} drain",
                processes=processes,
            )
            wall_s = time.monotonic() - started

        def figures(session: Any) -> tuple[Any, Any, int]:
            first, last = session.exec(select(func.min(Job.started_at), func.max(Job.finished_at))).one()
            succeeded = (
                select(func.count()).select_from(Job).where(col(Job.status) == JobStatus.SUCCEEDED.value)
            )
            return first, last, int(session.exec(succeeded).one())

        first, last, succeeded = db.read_sync(figures)
        return drain_from(
            f"levqor_{kind}{'_run' if as_run else ''}",
            n,
            succeeded,
            spawned_at=spawned_at,
            first=first,
            last=last,
            wall_s=wall_s,
        )
    finally:
        db.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pickup_latency(kind: str, mode: str, samples: int, workdir: Path, pg_url: str | None) -> dict[str, Any]:
    """Enqueue-to-running, in ms, for `samples` jobs submitted one at a time over HTTP."""
    url, env = fresh_database(kind, workdir, pg_url)
    port = free_port()
    server_env = {**env, "PORT": str(port), "LEVQOR_HOST": "127.0.0.1"}
    server_env["LEVQOR_INPROCESS_WORKER"] = "true" if mode == "in_process" else "false"
    ids: list[str] = []
    with (
        Processes(workdir) as processes,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
    ):
        processes.spawn(f"serve-{kind}-{mode}", python("-m", "levqor", "serve", "--no-migrate"), server_env)
        if mode == "cross_process":
            processes.spawn(
                f"worker-{kind}-{mode}", python("-m", "levqor", "worker", "--workflows", "echo"), env
            )
        wait_until(
            lambda: _answers(http), timeout_s=START_TIMEOUT_S, what="levqor serve", processes=processes
        )
        for i in range(LATENCY_WARMUP + samples):
            response = http.post("/api/v1/intake", json={"workflow": "echo", "payload": {"i": i}})
            response.raise_for_status()
            ids.append(response.json()["job_id"])
            time.sleep(random.uniform(*LATENCY_GAP_S))
        db = Database(url, pool_size=1)
        try:
            wait_until(
                lambda: terminal_count(db) >= len(ids),
                timeout_s=START_TIMEOUT_S,
                what="the latency jobs",
                processes=processes,
            )
            rows = db.read_sync(
                lambda session: list(
                    session.exec(select(Job.id, Job.created_at, Job.started_at).order_by(col(Job.seq)))
                )
            )
        finally:
            db.dispose()
    latencies_ms = [
        (started - created).total_seconds() * 1000 for _id, created, started in rows[LATENCY_WARMUP:]
    ]
    p50 = round(percentile(latencies_ms, 0.50), 2)
    return {
        "samples": len(latencies_ms),
        "p50_ms": p50,
        "p95_ms": round(percentile(latencies_ms, 0.95), 2),
        "p99_ms": round(percentile(latencies_ms, 0.99), 2),
        "max_ms": round(max(latencies_ms), 2),
        "goal_p50_ms": TARGET_PICKUP_P50_MS[mode],
        "pass": p50 <= TARGET_PICKUP_P50_MS[mode],
    }


def _answers(http: httpx.Client) -> bool:
    try:
        return http.get("/health").status_code == 200
    except httpx.TransportError:
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.queue", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--jobs", type=int, default=DEFAULT_JOBS, help=f"jobs each system drains (default {DEFAULT_JOBS})"
    )
    parser.add_argument(
        "--latency-samples", type=int, default=200, help="measured pickups per case (default 200)"
    )
    parser.add_argument(
        "--levqor-concurrency", type=int, help="jobs each Levqor worker runs at once (default: its setting)"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="drains per system, interleaved; the median counts (default 1)"
    )
    parser.add_argument(
        "--pg-admin-url",
        default=PG_ADMIN_URL,
        help="where to create the scratch databases (LEVQOR_TEST_PG_URL)",
    )
    parser.add_argument(
        "--no-postgres",
        action="store_true",
        help="measure Levqor on SQLite only; leave PgQueuer and procrastinate out",
    )
    parser.add_argument(
        "--run-steps",
        type=int,
        default=DEFAULT_RUN_STEPS,
        help=f"steps of the fan-out/fan-in run, and plain jobs it is measured against (default "
        f"{DEFAULT_RUN_STEPS}; 0 leaves runs out)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds a drain may take (default 600)")
    add_json_option(parser)
    args = parser.parse_args(argv)
    if args.jobs < 100 or args.latency_samples < 10 or args.rounds < 1:
        parser.error("--jobs must be at least 100, --latency-samples at least 10, --rounds at least 1")
    if args.run_steps != 0 and not 3 <= args.run_steps <= MAX_RUN_STEPS:
        parser.error(f"--run-steps must be 0, or 3 to {MAX_RUN_STEPS}")
    return args


def peer_drains(args: argparse.Namespace) -> dict[str, Callable[[int, Processes], Drain]]:
    """The peers, in the order a round runs them; those on PostgreSQL unless --no-postgres."""
    from bench.queue_peers import run_celery, run_pgqueuer, run_procrastinate, run_rq

    on_redis = {
        "celery": partial(run_celery, timeout_s=args.timeout),
        "rq": partial(run_rq, timeout_s=args.timeout),
    }
    if args.no_postgres:
        return on_redis
    on_postgres = {"timeout_s": args.timeout, "pg_admin_url": args.pg_admin_url}
    return {
        "pgqueuer": partial(run_pgqueuer, **on_postgres),
        **on_redis,
        "procrastinate": partial(run_procrastinate, **on_postgres),
    }


def settle(args: argparse.Namespace) -> None:
    """Before each drain, a PostgreSQL checkpoint: the dirty pages and WAL the system before it left
    are written out now, not during the next system's drain."""
    if args.no_postgres:
        return
    admin = create_engine(args.pg_admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql("CHECKPOINT")
    finally:
        admin.dispose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    kinds = ["sqlite"] if args.no_postgres else ["sqlite", "postgres"]
    peers = peer_drains(args)
    load_before = os.getloadavg()
    rounds: dict[str, list[Drain]] = {}
    with tempfile.TemporaryDirectory(prefix="levqor-bench-") as tmp:
        workdir = Path(tmp)
        with scratch_postgres(args.pg_admin_url, "levqor") if "postgres" in kinds else _none() as pg_url:
            # Rounds interleave the systems, so a burst of other load on the machine hits them alike.
            for _round in range(args.rounds):
                for kind in kinds:
                    settle(args)
                    drain = run_levqor(
                        kind,
                        args.jobs,
                        workdir,
                        pg_url,
                        timeout_s=args.timeout,
                        concurrency=args.levqor_concurrency,
                    )
                    rounds.setdefault(kind, []).append(drain)
                    if args.run_steps:
                        for as_run in (False, True):
                            settle(args)
                            drain = run_levqor(
                                kind,
                                args.run_steps,
                                workdir,
                                pg_url,
                                timeout_s=args.timeout,
                                concurrency=args.levqor_concurrency,
                                as_run=as_run,
                            )
                            rounds.setdefault(f"{kind}_{'run' if as_run else 'plain'}", []).append(drain)
                for name, run_peer in peers.items():
                    settle(args)
                    with Processes(workdir) as processes:
                        rounds.setdefault(name, []).append(run_peer(args.jobs, processes))
            latency = {
                mode: {
                    kind: pickup_latency(kind, mode, args.latency_samples, workdir, pg_url) for kind in kinds
                }
                for mode in ("in_process", "cross_process")
            }
    # Without PostgreSQL there is no PgQueuer to measure against: that target is null.
    targets: dict[str, dict[str, Any] | None] = {
        "vs_pgqueuer": _target(rounds, kinds, ["pgqueuer"], TARGET_RATIO_VS_PGQUEUER)
        if "pgqueuer" in peers
        else None,
        "vs_faster_of_celery_rq": _target(rounds, kinds, ["celery", "rq"], TARGET_RATIO_VS_CELERY_RQ),
    }
    runs = _run_target(rounds, kinds, args.run_steps) if args.run_steps else None
    all_done = all(drain.all_succeeded for drains in rounds.values() for drain in drains)
    ratios_pass = all(all(target["pass"].values()) for target in targets.values() if target is not None)
    ratios_pass = ratios_pass and (runs is None or all(runs["pass"].values()))
    latency_pass = all(case["pass"] for cases in latency.values() for case in cases.values())
    report = {
        "bench": "queue",
        "jobs": args.jobs,
        "worker_processes": WORKER_PROCESSES,
        "levqor_concurrency": args.levqor_concurrency or "default",
        "rounds": args.rounds,
        "levqor": {kind: _report(rounds[kind]) for kind in kinds},
        "peers": {name: _report(rounds[name]) for name in peers},
        "targets": targets,
        "runs": runs,
        "pickup_latency": latency,
        "all_jobs_succeeded": all_done,
        "pass": all_done and ratios_pass and latency_pass,
        "cpus": os.cpu_count(),
        "load_avg_before": [round(value, 2) for value in load_before],
        "load_avg_after": [round(value, 2) for value in os.getloadavg()],
    }
    write_json(args.json, report)
    print(json.dumps(report, separators=(",", ":")))
    return 0 if all_done else 1


def _target(
    rounds: dict[str, list[Drain]], kinds: list[str], references: list[str], goal: float
) -> dict[str, Any]:
    """Levqor's median jobs/s on each database over the reference's: the faster of `references`,
    median round against median round; and best round against best round, the rounds least disturbed
    by other load on the machine."""
    reference = max(references, key=lambda name: _median(rounds[name]).jobs_per_s)
    reference_best = max(_best(rounds[name]) for name in references)
    ratios = {
        kind: round(_median(rounds[kind]).jobs_per_s / _median(rounds[reference]).jobs_per_s, 2)
        for kind in kinds
    }
    return {
        "reference": reference,
        "goal": goal,
        "ratio": ratios,
        "ratio_best": {kind: round(_best(rounds[kind]) / reference_best, 2) for kind in kinds},
        "pass": {kind: ratio >= goal for kind, ratio in ratios.items()},
    }


def _run_target(rounds: dict[str, list[Drain]], kinds: list[str], steps: int) -> dict[str, Any]:
    """A run's drain time over as many plain jobs', median round against median round; at most the
    goal passes (lower is better)."""
    ratios = {
        kind: round(_median(rounds[f"{kind}_run"]).drain_s / _median(rounds[f"{kind}_plain"]).drain_s, 2)
        for kind in kinds
    }
    return {
        "steps": steps,
        "shape": f"1 root -> {steps - 2} -> 1 sink",
        "goal_at_most": TARGET_RUN_STEP_OVER_PLAIN,
        "run": {kind: _report(rounds[f"{kind}_run"]) for kind in kinds},
        "plain": {kind: _report(rounds[f"{kind}_plain"]) for kind in kinds},
        "ratio": ratios,
        "pass": {kind: ratio <= TARGET_RUN_STEP_OVER_PLAIN for kind, ratio in ratios.items()},
    }


def _median(drains: list[Drain]) -> Drain:
    return sorted(drains, key=lambda drain: drain.jobs_per_s)[len(drains) // 2]


def _best(drains: list[Drain]) -> float:
    return max(drain.jobs_per_s for drain in drains)


def _report(drains: list[Drain]) -> dict[str, Any]:
    """The median round's figures, every round's jobs/s to show the spread, and whether every job of
    every round succeeded."""
    return {
        **_median(drains).report(),
        "all_succeeded": all(drain.all_succeeded for drain in drains),
        "jobs_per_s_rounds": [round(drain.jobs_per_s, 1) for drain in drains],
    }


@contextmanager
def _none() -> Iterator[None]:
    yield None


if __name__ == "__main__":
    sys.exit(main())
