"""Budgets under concurrent submits through two `levqor serve` processes, on both databases.

Fifty submits of a job estimated at 1 micro-USD race against a budget of 10, spread over two server
processes (each batching its submits): exactly 10 are accepted, the rest get 402. Then a worker
process runs the accepted jobs (not before: a job that settles below its estimate frees room, which
would let an eleventh in), their holds settle to what each reported, and usage equals the ledger to
the micro-dollar."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from levqor.costs.ledger import rebuild_windows
from levqor.db.engine import Database
from levqor.db.models import BudgetWindow, CostEntry, Job
from levqor.resolvers.budgets import set_budget
from levqor.resolvers.context import Context, Principal, Scope
from tests.conftest import ROOT, ServerProcess, settings_for, start_server_process, stop_server_process
from tests.ops_support import server_env
from tests.queue_support import TEST_WORKFLOWS, worker_processes

ADMIN_KEY = "static-admin-key-for-budget-races"
SUBMITS = 50
LIMIT_MICROS = 10


@pytest.fixture
def servers(db_url: str, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    env = server_env(db_url, API_KEYS=ADMIN_KEY, LEVQOR_WORKFLOWS=TEST_WORKFLOWS, PYTHONPATH=str(ROOT))
    started = [
        start_server_process(env, tmp_path / "first.log", "--no-worker"),
        start_server_process(env, tmp_path / "second.log", "--no-worker"),
    ]
    yield started
    for proc in started:
        stop_server_process(proc)


async def race(urls: list[str], secret: str) -> list[httpx.Response]:
    """All submits at once, alternating between the servers."""
    clients = [httpx.AsyncClient(base_url=url, timeout=60, headers={"X-Api-Key": secret}) for url in urls]
    try:
        return await asyncio.gather(
            *(
                clients[n % len(clients)].post(
                    "/api/v1/intake",
                    json={"workflow": "test.priced", "payload": {"estimate": 1, "cost": n % 2, "n": n}},
                )
                for n in range(SUBMITS)
            )
        )
    finally:
        for client in clients:
            await client.aclose()


def test_concurrent_submits_through_two_servers_accept_exactly_the_budget(
    db_url: str, db: Database, servers: list[ServerProcess], tmp_path: Path
) -> None:
    admin = {"X-Api-Key": ADMIN_KEY}
    created = httpx.post(
        f"{servers[0].url}/api/v1/keys",
        headers=admin,
        json={"name": "racer", "scopes": ["jobs:write", "jobs:read"]},
    )
    assert created.status_code == 201, created.text
    key_id, secret = created.json()["key"]["id"], created.json()["secret"]
    settings = settings_for(db_url)
    asyncio.run(
        set_budget(
            Context(db, settings, Principal(id="static:admin", scopes=Scope.ALL)),
            "key",
            key_id,
            {"period": "day", "limit_micros": LIMIT_MICROS},
        )
    )
    answers = asyncio.run(race([proc.url for proc in servers], secret))
    statuses = sorted(response.status_code for response in answers)
    assert statuses == [202] * LIMIT_MICROS + [402] * (SUBMITS - LIMIT_MICROS)
    refusal = next(response.json() for response in answers if response.status_code == 402)
    assert refusal["error"] == "budget_exceeded"
    assert refusal["details"][0]["remaining_micros"] == 0
    accepted = {response.json()["job_id"] for response in answers if response.status_code == 202}

    with worker_processes(db_url, tmp_path, 1):
        deadline = time.monotonic() + 60
        while True:
            jobs = db.read_sync(lambda session: list(session.exec(select(Job))))
            if len(jobs) == LIMIT_MICROS and all(job.job_status.is_terminal for job in jobs):
                break
            assert time.monotonic() < deadline, "the accepted jobs did not finish"
            time.sleep(0.1)
    assert {str(job.id) for job in jobs} == accepted
    assert {job.status for job in jobs} == {"succeeded"}
    spent = sum(job.cost_actual_micros or 0 for job in jobs)
    assert spent == sum(job.payload["cost"] for job in jobs)

    [window] = db.read_sync(lambda session: list(session.exec(select(BudgetWindow))))
    assert (window.spent_micros, window.reserved_micros) == (spent, 0)
    assert db.read_sync(rebuild_windows) == {(window.budget_id, window.period_start): (spent, 0)}
    entries = db.read_sync(lambda session: list(session.exec(select(CostEntry))))
    assert sorted(entry.kind for entry in entries) == ["reserve"] * 10 + ["settle"] * 10

    usage = httpx.get(
        f"{servers[1].url}/api/v1/usage", headers={"X-Api-Key": secret}, params={"group_by": "key"}
    )
    if usage.status_code != 404:  # the route comes with the REST surface of budgets
        assert usage.status_code == 200, usage.text
        [row] = usage.json()["usage"]
        assert (row["jobs"], row["succeeded"], row["spent_micros"]) == (10, 10, spent)
