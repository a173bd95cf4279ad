"""The cluster as the README's Production section builds it, under faults: nginx with the deploy/
site in front of two `levqor serve --no-worker` on PostgreSQL with Redis rate-limit counters, two
`levqor worker`, and a webhook receiver. Clients load it through nginx for LOAD_S seconds (jobs with
callbacks; a key with a budget; a key with a rate limit) while, at random moments, a worker and a
server are killed with SIGKILL and started again. Then every acknowledged job must have ended, once;
every callback must have arrived, no attempt twice; the budget must hold; the rate limit must have
held across both servers; and each server's /metrics must still scrape.

Run alone with `make test-cluster`; `make test` leaves it out (it is a stage of .ci/run).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from standardwebhooks import Webhook

from levqor.costs.ledger import rebuild_windows
from levqor.db.engine import Database
from tests.callback_support import Receiver, receivers
from tests.conftest import ROOT, ServerProcess, free_port, start_server_process, stop_server_process
from tests.deploy_support import Nginx, start_nginx
from tests.ops_support import server_env
from tests.queue_support import (
    TEST_WORKFLOWS,
    WorkerProcess,
    exactly_once_figures,
    start_worker_process,
    wait_for,
)
from tests.support import truncate_all

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(400)]

LOAD_S = float(os.environ.get("LEVQOR_CLUSTER_LOAD_S", "60"))
SEED = int(os.environ.get("LEVQOR_CLUSTER_SEED", str(random.SystemRandom().randrange(1 << 30))))
ADMIN_KEY = "static-admin-key-of-the-cluster-test"
LOAD_CLIENTS = 4  # concurrent clients of the ordinary keys
RATE_LIMIT = 60  # the limited key's requests per minute, across both servers
BUDGET_MICROS = 40  # the budgeted key's total budget; its jobs are estimated at 1 micro-USD
BUDGET_CLIENTS = 2  # concurrent clients of the budgeted key, through both servers
SETTLE_S = 90  # how long the cluster has, after the load, to end every job and make every delivery
SUBMIT_TRIES = 30  # a client retries a submit this often (same Idempotency-Key) while no server answers
RETRY_PAUSE_S = 0.2
WORKER_ENV = {
    "LEVQOR_LEASE_S": "2",  # a killed worker's jobs are retried within seconds
    "LEVQOR_RETRY_BASE_MS": "100",
    "LEVQOR_CALLBACK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
    "LEVQOR_CALLBACK_TIMEOUT_S": "2",  # a killed worker's deliveries are due again within seconds
    "LEVQOR_CALLBACK_RETRY_S": "1,1,1,1,1,1,1",
}


@dataclass
class Cluster:
    """The processes, each in a slot that a kill empties and a restart fills again."""

    directory: Path
    db_url: str
    server_env: dict[str, str]
    server_ports: list[int]
    servers: list[ServerProcess] = field(default_factory=list)
    workers: list[WorkerProcess] = field(default_factory=list)
    nginx: Nginx | None = None
    generation: int = 0
    kills: Counter[str] = field(default_factory=Counter)

    def log_path(self, name: str) -> Path:
        self.generation += 1
        return self.directory / f"{name}-{self.generation}.log"

    def start_server(self, slot: int) -> ServerProcess:
        port = self.server_ports[slot]
        return start_server_process(
            self.server_env, self.log_path(f"server-{slot}"), "--no-worker", port=port
        )

    def start_worker(self, slot: int) -> WorkerProcess:
        return start_worker_process(
            self.db_url, self.log_path(f"worker-{slot}"), "--concurrency", "50", **WORKER_ENV
        )

    def start(self) -> None:
        # One at a time, so that `stop` stops whatever started before a failure.
        for slot in range(len(self.server_ports)):
            self.servers.append(self.start_server(slot))
        for slot in range(2):
            self.workers.append(self.start_worker(slot))
        self.nginx = start_nginx(self.directory / "nginx", self.server_ports)

    def kill_server(self, slot: int) -> None:
        kill(self.servers[slot].process)
        self.kills["server"] += 1

    def kill_worker(self, slot: int) -> None:
        kill(self.workers[slot].process)
        self.kills["worker"] += 1

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.wait(timeout_s=30)
            except subprocess.TimeoutExpired:
                kill(worker.process)
        for server in self.servers:
            stop_server_process(server)


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait()


@dataclass(frozen=True)
class Caller:
    name: str
    key_id: str
    secret: str
    webhook_secret: str


@dataclass
class Submit:
    caller: str
    idempotency_key: str
    callback: bool
    status: int = 0  # the answer that ended it: 202, 402, 429 (0: no server answered, SUBMIT_TRIES times)
    job_id: str | None = None
    tries: int = 0
    replayed: bool = False


@pytest.fixture
def cluster_db(request: pytest.FixtureRequest) -> str:
    url = str(request.getfixturevalue("pg_database_url"))
    truncate_all(url)
    return url


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    for make in receivers():
        yield make()


@pytest.fixture
def cluster(cluster_db: str, redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[Cluster]:
    env = server_env(
        cluster_db,
        API_KEYS=ADMIN_KEY,
        LEVQOR_RATE_KEY="1000000/minute",  # only the limited key is limited
        LEVQOR_RATE_STORAGE=redis_url,
        LEVQOR_RATE_KEY_PREFIX=redis_prefix,
        LEVQOR_TRUSTED_PROXIES="127.0.0.1",  # nginx, as deploy/levqor.env.example has it
        LEVQOR_CALLBACK_ALLOW_PRIVATE="true",
        LEVQOR_WORKFLOWS=TEST_WORKFLOWS,
        PYTHONPATH=str(ROOT),
    )
    ports = [free_port(), free_port()]
    while ports[0] == ports[1]:
        ports[1] = free_port()
    running = Cluster(directory=tmp_path, db_url=cluster_db, server_env=env, server_ports=ports)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def create_key(http: httpx.Client, name: str, **limits: int) -> Caller:
    created = http.post(
        "/api/v1/keys",
        headers={"X-Api-Key": ADMIN_KEY},
        json={"name": name, "scopes": ["jobs:read", "jobs:write"], **limits},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    return Caller(name, body["key"]["id"], body["secret"], body["webhook_secret"])


async def submit(http: httpx.AsyncClient, caller: Caller, job: dict[str, Any]) -> Submit:
    """One intake as a careful client makes it: an Idempotency-Key, and the same request again while
    no server answers (a killed server's request may have been stored: the key returns that job)."""
    done = Submit(caller.name, uuid.uuid4().hex, "callback_url" in job)
    headers = {"X-Api-Key": caller.secret, "Idempotency-Key": done.idempotency_key}
    for tries in range(1, SUBMIT_TRIES + 1):
        done.tries = tries
        try:
            response = await http.post("/api/v1/intake", json=job, headers=headers)
        except httpx.TransportError:
            await asyncio.sleep(RETRY_PAUSE_S)
            continue
        if response.status_code in (502, 503, 504):
            await asyncio.sleep(RETRY_PAUSE_S)
            continue
        done.status = response.status_code
        assert response.status_code in (202, 402, 429), (response.status_code, response.text)
        if response.status_code == 202:
            done.job_id = response.json()["job_id"]
            done.replayed = response.headers.get("idempotent-replayed") == "true"
        return done
    return done


async def load(url: str, callers: dict[str, list[Caller]], callback_url: str, until: float) -> list[Submit]:
    results: list[Submit] = []

    async def ordinary(caller: Caller, client: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            n = 0
            while time.monotonic() < until:
                n += 1
                job: dict[str, Any] = {
                    "workflow": "echo",
                    "payload": {"client": client, "n": n},
                    "max_attempts": 10,
                }
                if n % 10 == 0:  # some run long enough to be running when their worker dies
                    job = {"workflow": "sleep", "payload": {"seconds": 0.5}, "max_attempts": 10}
                if n % 2 == 0:
                    job["callback_url"] = f"{callback_url}/{caller.name}"
                results.append(await submit(http, caller, job))
                await asyncio.sleep(0.02)

    async def budgeted(caller: Caller, client: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            n = 0
            while time.monotonic() < until:
                n += 1
                job = {
                    "workflow": "test.priced",
                    # Most cost what they hold; some nothing, which frees their hold again.
                    "payload": {"estimate": 1, "cost": 0 if n % 5 == 0 else 1, "client": client, "n": n},
                    "callback_url": f"{callback_url}/{caller.name}",
                }
                results.append(await submit(http, caller, job))
                await asyncio.sleep(0.1)

    async def limited(caller: Caller) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            n = 0
            while time.monotonic() < until:
                n += 1
                results.append(await submit(http, caller, {"workflow": "echo", "payload": {"n": n}}))
                await asyncio.sleep(0.05)

    ordinary_callers = callers["load"]
    await asyncio.gather(
        *(ordinary(ordinary_callers[n % len(ordinary_callers)], n) for n in range(LOAD_CLIENTS)),
        *(budgeted(callers["budget"][0], n) for n in range(BUDGET_CLIENTS)),
        limited(callers["limited"][0]),
    )
    return results


async def chaos(cluster: Cluster, until: float, seed: int) -> None:
    """Kill a worker and a server, each at moments of its own, and start each again after a while.
    Each has its own generator from `seed`, so a seed repeats the slots killed and the pauses."""

    async def killing(kind: str) -> None:
        rng = random.Random(f"{seed}-{kind}")
        await asyncio.sleep(rng.uniform(2, 8))
        while time.monotonic() < until - 4:
            slot = rng.randrange(2)
            if kind == "server":
                cluster.kill_server(slot)
                await asyncio.sleep(rng.uniform(0.2, 2))
                cluster.servers[slot] = await asyncio.to_thread(cluster.start_server, slot)
            else:
                cluster.kill_worker(slot)
                await asyncio.sleep(rng.uniform(0.2, 2))
                cluster.workers[slot] = await asyncio.to_thread(cluster.start_worker, slot)
            await asyncio.sleep(rng.uniform(3, 10))

    await asyncio.gather(killing("server"), killing("worker"))


async def load_under_faults(
    cluster: Cluster, callers: dict[str, list[Caller]], callback_url: str
) -> list[Submit]:
    assert cluster.nginx is not None
    until = time.monotonic() + LOAD_S
    results, _ = await asyncio.gather(
        load(cluster.nginx.url, callers, callback_url, until), chaos(cluster, until, SEED)
    )
    return results


def rows(db: Database, sql: str, **params: Any) -> list[Any]:
    return db.read_sync(lambda session: list(session.execute(text(sql), params).all()))


def test_the_cluster_loses_and_doubles_nothing_while_its_processes_are_killed(
    cluster: Cluster, cluster_db: str, receiver: Receiver
) -> None:
    assert cluster.nginx is not None
    print(f"\ncluster: seed {SEED} (LEVQOR_CLUSTER_SEED={SEED} repeats its kills), load {LOAD_S:.0f} s")
    with httpx.Client(base_url=cluster.nginx.url, timeout=30) as http:
        callers = {
            "load": [create_key(http, "load-a"), create_key(http, "load-b")],
            "budget": [create_key(http, "budget")],
            "limited": [create_key(http, "limited", rate_limit=RATE_LIMIT)],
        }
        budget_key = callers["budget"][0]
        budget = http.put(
            f"/api/v1/budgets/keys/{budget_key.key_id}",
            headers={"X-Api-Key": ADMIN_KEY},
            json={"period": "total", "limit_micros": BUDGET_MICROS},
        )
        assert budget.status_code == 200, budget.text
    secrets = {caller.name: caller.webhook_secret for group in callers.values() for caller in group}
    receiver.script = [500] * 20  # the first deliveries fail and are retried
    started = time.time()

    submits = asyncio.run(load_under_faults(cluster, callers, receiver.url))

    answers = Counter(item.status for item in submits)
    acknowledged = {item.job_id: item for item in submits if item.status == 202}
    assert None not in acknowledged
    assert answers[0] == 0, "a submit found no server to answer it, SUBMIT_TRIES times"
    assert cluster.kills["server"] >= 1
    assert cluster.kills["worker"] >= 1

    db = Database(cluster_db)
    try:
        ids = list(acknowledged)

        def unfinished() -> int:
            return int(
                rows(
                    db,
                    "SELECT count(*) FROM jobs WHERE status NOT IN ('succeeded', 'failed', 'cancelled')",
                )[0][0]
            )

        wait_for(lambda: unfinished() == 0, timeout_s=SETTLE_S, what="every stored job to end")
        jobs = {
            str(row.id): row
            for row in rows(db, "SELECT id, status, submitted_by, idempotency_key, created_at FROM jobs")
        }
        lost = [job_id for job_id in ids if job_id not in jobs]
        assert lost == []
        assert {row.status for row in jobs.values()} == {"succeeded"}
        # A job stored by a server that died before answering is asked for again under its
        # Idempotency-Key, and that answer names it; unless the retry was refused by the rate limit
        # (counted before the key is looked up), the one case of a stored job no client was told of.
        by_key = {item.idempotency_key: item for item in submits}
        unacknowledged = [row for job_id, row in jobs.items() if job_id not in acknowledged]
        for row in unacknowledged:
            item = by_key[row.idempotency_key.rsplit(":", 1)[-1]]
            assert (item.status, item.tries > 1) == (429, True), (row, item)
        figures = db.read_sync(exactly_once_figures)
        assert figures["jobs"] == len(jobs)
        assert figures["successes"] == len(jobs)
        assert (figures["double_successes"], figures["double_claims"]) == (0, 0)
        doubled = figures["double_successes"] + figures["double_claims"]

        # Callbacks: one delivery per job that asked for one, each delivered; every one arrived,
        # signed with its key's webhook secret; no attempt of one was sent twice.
        with_callback = {job_id for job_id, item in acknowledged.items() if item.callback}

        def undelivered() -> int:
            return int(rows(db, "SELECT count(*) FROM callback_deliveries WHERE status <> 'delivered'")[0][0])

        wait_for(lambda: undelivered() == 0, timeout_s=SETTLE_S, what="every callback to be delivered")
        deliveries = rows(db, "SELECT job_id, webhook_id, status FROM callback_deliveries")
        assert sorted(str(row.job_id) for row in deliveries) == sorted(with_callback)
        hits = receiver.snapshot()
        sent = Counter((hit.headers["webhook-id"], hit.headers["levqor-delivery-attempt"]) for hit in hits)
        assert max(sent.values()) == 1
        assert {webhook_id for webhook_id, _ in sent} == {row.webhook_id for row in deliveries}
        for hit in hits:
            caller = hit.path.rsplit("/", 1)[-1]
            Webhook(secrets[caller]).verify(hit.body, hit.headers)
        twice = rows(
            db,
            "SELECT delivery_id, attempt FROM callback_attempts "
            "GROUP BY delivery_id, attempt HAVING count(*) > 1",
        )
        assert twice == []

        # The budget: never more spent and held than its limit; the windows are the ledger's sums;
        # what the jobs cost is what was spent.
        [window] = rows(
            db, "SELECT budget_id, period_start, spent_micros, reserved_micros FROM budget_windows"
        )
        assert window.spent_micros + window.reserved_micros <= BUDGET_MICROS
        assert window.reserved_micros == 0
        assert db.read_sync(rebuild_windows) == {
            (window.budget_id, window.period_start): (window.spent_micros, window.reserved_micros)
        }
        [(cost,)] = rows(
            db,
            "SELECT coalesce(sum(cost_actual_micros), 0) FROM jobs WHERE submitted_by = :who",
            who=f"key:{budget_key.key_id}",
        )
        assert cost == window.spent_micros
        refused = Counter(item.status for item in submits if item.caller == "budget")[402]
        assert refused > 0, "the load never reached the budget"

        # The rate limit, counted in Redis by both servers: per window of `limits`' sliding window
        # counter (the minutes of the clock), no more accepted than the limit. One more may fall
        # across each edge: a job is stamped when it is stored, a moment after it was counted.
        limited_key = callers["limited"][0]
        accepted_at: list[datetime] = [
            row.created_at for row in jobs.values() if row.submitted_by == f"key:{limited_key.key_id}"
        ]
        per_minute = Counter(int(at.timestamp() // 60) for at in accepted_at)
        assert max(per_minute.values()) <= RATE_LIMIT + 1, per_minute
        limited_answers = Counter(item.status for item in submits if item.caller == "limited")
        assert limited_answers[429] > 0
        assert limited_answers[202] + len(unacknowledged) == len(accepted_at)
    finally:
        db.dispose()

    # Each server, however often it was killed, still serves its metrics.
    for server in cluster.servers:
        metrics = httpx.get(f"{server.url}/metrics", timeout=10)
        assert metrics.status_code == 200
        assert "levqor_" in metrics.text

    delivered = len({webhook_id for webhook_id, _ in sent})
    print(
        f"cluster: {len(submits)} submits in {time.time() - started:.0f} s: acknowledged {len(ids)} "
        f"(replayed after a lost answer {sum(item.replayed for item in acknowledged.values())}; "
        f"stored, its retry refused by the rate limit {len(unacknowledged)}), "
        f"lost {len(lost)}, doubled {doubled}, delivered {delivered} of {len(with_callback)} callbacks "
        f"in {len(hits)} requests, 402s {answers[402]} (budget spent {window.spent_micros} of "
        f"{BUDGET_MICROS}), 429s {answers[429]} (accepted per minute {sorted(per_minute.values())}, "
        f"limit {RATE_LIMIT}), retries after no answer {sum(item.tries - 1 for item in submits)}, "
        f"kills: servers {cluster.kills['server']}, workers {cluster.kills['worker']}"
    )
