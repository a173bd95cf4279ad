"""Callback benchmark (issue 11): signed webhooks from the outbox to a local receiver, in one run.

    python -m bench.callbacks [--deliveries 5000] [--latency-samples 200] [--processes 1]
                              [--concurrency 64] [--pg-admin-url URL] [--no-postgres]

What is measured:
- Throughput: N `echo` jobs are finished with a `callback_url` through the queue's own functions
  (not measured), which leaves N deliveries in the outbox. Then `levqor worker` processes
  (--processes) send them, signed, to bench/callback_receiver.py, a bare ASGI app under uvicorn
  that answers 204. Deliveries per second are N over the time from the first arrival to the last, as
  the receiver saw them; `startup_s` (spawn to first arrival) is reported apart. Every delivery is
  checked delivered once (by `webhook-id` at the receiver and by status in the outbox), and the
  first few are verified with `standardwebhooks`' own `Webhook.verify`.
- Latency: with the worker idle, one job at a time (random gaps of 20-60 ms) is put in the queue with
  a callback; from the job's `finished_at`, as the worker wrote it, to the callback's arrival at the
  receiver. The first 10 are a warm-up and dropped. p50, p95, p99 and max.
- On SQLite and on a scratch PostgreSQL database. Goals (DESIGN.md): at least 1,000 deliveries/s,
  and a p50 of at most 50 ms from completion to arrival.

Prints one line of JSON. Only loopback: the receiver and PostgreSQL (--pg-admin-url, default
LEVQOR_TEST_PG_URL or 127.0.0.1:5432 as postgres).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlmodel import col
from standardwebhooks import Webhook

from bench.queue import PG_ADMIN_URL, free_port, fresh_database
from bench.queue_support import Processes, percentile, python, scratch_postgres, wait_until
from bench.result_file import add_json_option, write_json
from levqor import queue
from levqor.db.engine import Database
from levqor.db.models import CallbackDelivery, DeliveryStatus, Job

DEFAULT_DELIVERIES = 5000
DEFAULT_SAMPLES = 200
WARMUP = 10
GAP_S = (0.02, 0.06)
CHUNK = 1000
TARGET_DELIVERIES_PER_S = 1000.0
TARGET_P50_MS = 50.0
WORKER = "bench-seed"


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@contextmanager
def receiver(processes: Processes) -> Iterator[str]:
    port = free_port()
    processes.spawn("receiver", python("-m", "bench.callback_receiver", "--port", str(port)))
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/arrivals", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, timeout_s=30, what="the receiver to start", processes=processes)
    yield base


def arrivals(base: str) -> dict[str, Any]:
    return dict(httpx.get(f"{base}/arrivals", timeout=30).json())


def finish_with_callbacks(db: Database, n: int, url: str) -> None:
    """N succeeded jobs with a callback: N pending deliveries, written as the worker writes them."""
    for start in range(0, n, CHUNK):
        size = min(CHUNK, n - start)
        jobs = [Job(workflow="echo", payload={"n": start + i}, callback_url=url) for i in range(size)]

        def finish(session: Any, jobs: list[Job] = jobs) -> None:
            queue.enqueue_many(session, jobs)
            claimed = queue.claim_jobs(
                session, worker_id=WORKER, workflows=None, max_jobs=len(jobs), lease_s=60
            )
            outcomes = [
                queue.Outcome(c.id, WORKER, c.attempt, queue.OutcomeKind.SUCCEEDED, result=c.payload)
                for c in claimed
            ]
            queue.record_outcomes(session, outcomes)

        db.write_sync(finish)


def delivered_count(db: Database) -> int:
    statement = select(func.count()).where(col(CallbackDelivery.status) == DeliveryStatus.DELIVERED.value)
    return int(db.read_sync(lambda session: session.execute(statement).scalar_one()))


def verified(samples: list[dict[str, Any]], secret: str) -> int:
    for sample in samples:
        Webhook(secret).verify(sample["body"], sample["headers"])  # raises if one does not verify
    return len(samples)


def run_kind(kind: str, args: argparse.Namespace, workdir: Path, pg_url: str | None) -> dict[str, Any]:
    url, env = fresh_database(kind, workdir, pg_url)
    secret = new_secret()
    env.update(
        {
            "LEVQOR_CALLBACK_ALLOW_PRIVATE": "true",
            "LEVQOR_WEBHOOK_SECRET": secret,
            "LEVQOR_CALLBACK_CONCURRENCY": str(args.concurrency),
        }
    )
    db = Database(url, pool_size=2)
    try:
        with Processes(workdir) as processes, receiver(processes) as base:
            hook = f"{base}/hooks"
            finish_with_callbacks(db, args.deliveries, hook)
            spawned = time.time()
            for index in range(args.processes):
                worker = python("-m", "levqor", "worker", "--workflows", "echo", "--concurrency", "8")
                processes.spawn(f"levqor-{kind}-{index}", worker, env)
            wait_until(
                lambda: delivered_count(db) >= args.deliveries,
                timeout_s=args.timeout,
                what=f"the {kind} deliveries",
                processes=processes,
            )
            seen = arrivals(base)
            times = sorted(at for _, at in seen["arrivals"])
            distinct = len({webhook_id for webhook_id, _ in seen["arrivals"]})
            span_s = times[-1] - times[0] if len(times) > 1 else 0.0
            throughput = {
                "deliveries": args.deliveries,
                "arrived": len(times),
                "distinct_webhook_ids": distinct,
                "all_delivered_once": len(times) == distinct == args.deliveries,
                "verified_signatures": verified(seen["samples"], secret),
                "startup_s": round(times[0] - spawned, 3) if times else None,
                "drain_s": round(span_s, 3),
                "deliveries_per_s": round((len(times) - 1) / span_s, 1) if span_s > 0 else 0.0,
            }
            latency = completion_to_arrival(db, base, hook, args.latency_samples)
    finally:
        db.dispose()
    return {"throughput": throughput, "latency": latency}


def completion_to_arrival(db: Database, base: str, hook: str, samples: int) -> dict[str, Any]:
    httpx.post(f"{base}/reset", timeout=10)
    job_ids = []
    for index in range(samples + WARMUP):
        job = Job(workflow="echo", payload={"sample": index}, callback_url=hook)
        db.write_sync(lambda session, job=job: queue.enqueue(session, job))
        job_ids.append(job.id)
        deadline = time.monotonic() + 30
        while len(arrivals(base)["arrivals"]) <= index:
            if time.monotonic() > deadline:
                raise TimeoutError(f"callback {index} did not arrive within 30 s")
            time.sleep(0.002)
        time.sleep(random.uniform(*GAP_S))
    arrived = {webhook_id: at for webhook_id, at in arrivals(base)["arrivals"]}

    def finished(session: Any) -> dict[Any, tuple[str, float]]:
        rows = session.execute(
            select(Job.id, CallbackDelivery.webhook_id, Job.finished_at)
            .join(CallbackDelivery, col(CallbackDelivery.job_id) == col(Job.id))
            .where(col(Job.id).in_(job_ids))
        )
        return {row.id: (row.webhook_id, row.finished_at.timestamp()) for row in rows}

    found = db.read_sync(finished)
    latencies_ms = [(arrived[found[job_id][0]] - found[job_id][1]) * 1000 for job_id in job_ids[WARMUP:]]
    return {
        "samples": len(latencies_ms),
        "p50_ms": round(percentile(latencies_ms, 0.50), 2),
        "p95_ms": round(percentile(latencies_ms, 0.95), 2),
        "p99_ms": round(percentile(latencies_ms, 0.99), 2),
        "max_ms": round(max(latencies_ms), 2),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=DEFAULT_DELIVERIES)
    parser.add_argument("--latency-samples", type=int, default=DEFAULT_SAMPLES)
    parser.add_argument("--processes", type=int, default=1, help="`levqor worker` processes sending")
    parser.add_argument("--concurrency", type=int, default=64, help="LEVQOR_CALLBACK_CONCURRENCY")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--pg-admin-url", default=PG_ADMIN_URL)
    parser.add_argument("--no-postgres", action="store_true")
    add_json_option(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="levqor-bench-callbacks-") as tmp:
        workdir = Path(tmp)
        results["sqlite"] = run_kind("sqlite", args, workdir, None)
        if not args.no_postgres:
            with (
                scratch_postgres(args.pg_admin_url, "callbacks") if args.pg_admin_url else nullcontext() as pg
            ):
                results["postgres"] = run_kind("postgres", args, workdir, pg)
    targets = {
        kind: {
            "deliveries_per_s": {
                "value": figures["throughput"]["deliveries_per_s"],
                "goal": TARGET_DELIVERIES_PER_S,
                "met": figures["throughput"]["deliveries_per_s"] >= TARGET_DELIVERIES_PER_S,
            },
            "completion_to_arrival_p50_ms": {
                "value": figures["latency"]["p50_ms"],
                "goal": TARGET_P50_MS,
                "met": figures["latency"]["p50_ms"] <= TARGET_P50_MS,
            },
        }
        for kind, figures in results.items()
    }
    report = {"bench": "callbacks", "processes": args.processes, "results": results, "targets": targets}
    write_json(args.json, report)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
