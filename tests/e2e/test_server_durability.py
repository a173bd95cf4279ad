"""A server killed with SIGKILL during an intake load loses no job it acknowledged.

`levqor serve` (one and two server processes, SQLite and PostgreSQL) takes submits from several
concurrent clients: plain ones, which share the group commit (levqor/queue/intake.py), ones with an
Idempotency-Key, which take the one-row path, and GraphQL documents of several aliased `submitJob`
mutations, each job acknowledged by the document's answer. Mid-load the whole process group gets SIGKILL, as a
crash or the OOM killer would. After a restart on the same database every acknowledged job is
there, as it was sent, with its `submitted` event (the event of its `queued` state); the keyed
submits whose answer the kill cut off are sent again and are stored once, whether the first try
had been committed or not (issue 15, item 3)."""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import Session

from levqor.db.engine import Database
from tests.conftest import ServerProcess, start_server_process, stop_server_process
from tests.ops_support import server_env
from tests.queue_support import wait_for

pytestmark = pytest.mark.timeout(240)  # 10-20 s a case on a quiet machine; 70 s seen under a load of 14

PLAIN_CLIENTS = 6
KEYED_CLIENTS = 2
GRAPHQL_CLIENTS = 1
GRAPHQL_BATCH = 5  # aliased submitJob mutations per document
KILL_AFTER_ACKS = (150, 400)  # the kill lands at a random count of answers in this range
LOAD_DEADLINE_S = 60


@dataclass
class Load:
    """What the clients sent and heard; the threads append, the test reads once they have ended."""

    acked: dict[str, dict[str, object]] = field(default_factory=dict)  # job id: the payload sent
    keyed_acks: dict[str, str] = field(default_factory=dict)  # Idempotency-Key: job id
    unanswered_keys: dict[str, dict[str, object]] = field(default_factory=dict)  # key: payload
    refused: list[tuple[int, str]] = field(default_factory=list)  # answers other than success
    cut_off: int = 0  # submits that got no answer: in flight at the kill, or sent after it
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)


def submit_until_stopped(url: str, load: Load, client_no: int, *, keyed: bool) -> None:
    """One client's loop: submit, note the answer, until the load stops or the server is gone."""
    with httpx.Client(base_url=url, timeout=10) as http:
        n = 0
        while not load.stop.is_set():
            payload: dict[str, object] = {"client": client_no, "n": n}
            key = f"durable-{client_no}-{n}-{uuid.uuid4().hex[:8]}" if keyed else None
            n += 1
            try:
                response = http.post(
                    "/api/v1/intake",
                    json={"workflow": "echo", "payload": payload},
                    headers={"Idempotency-Key": key} if key else None,
                )
            except httpx.TransportError:
                with load.lock:
                    load.cut_off += 1
                    if key:
                        load.unanswered_keys[key] = payload
                if load.stop.wait(0.05):
                    return
                continue
            with load.lock:
                if response.status_code != 202:
                    load.refused.append((response.status_code, response.text))
                    continue
                job_id = response.json()["job_id"]
                load.acked[job_id] = payload
                if key:
                    load.keyed_acks[key] = job_id


def batch_document(size: int) -> str:
    """A GraphQL document of `size` aliased `submitJob` mutations, `$i0`... as their inputs."""
    variables = ", ".join(f"$i{n}: SubmitJobInput!" for n in range(size))
    fields = " ".join(
        f"j{n}: submitJob(input: $i{n}) {{ job {{ id }} userErrors {{ message }} }}" for n in range(size)
    )
    return f"mutation Batch({variables}) {{ {fields} }}"


def submit_graphql_batches_until_stopped(url: str, load: Load, client_no: int) -> None:
    """One GraphQL client's loop: documents of several submits, each acknowledged when the answer
    carries its job and no error."""
    document = batch_document(GRAPHQL_BATCH)
    with httpx.Client(base_url=url, timeout=10) as http:
        n = 0
        while not load.stop.is_set():
            payloads: list[dict[str, object]] = [
                {"client": client_no, "n": n + k} for k in range(GRAPHQL_BATCH)
            ]
            n += GRAPHQL_BATCH
            variables = {f"i{k}": {"workflow": "echo", "payload": p} for k, p in enumerate(payloads)}
            try:
                response = http.post("/graphql", json={"query": document, "variables": variables})
            except httpx.TransportError:
                with load.lock:
                    load.cut_off += GRAPHQL_BATCH
                if load.stop.wait(0.05):
                    return
                continue
            body = response.json() if response.status_code == 200 else {}
            answers = [(body.get("data") or {}).get(f"j{k}") or {} for k in range(GRAPHQL_BATCH)]
            with load.lock:
                if body.get("errors") or not all(answer.get("job") for answer in answers):
                    load.refused.append((response.status_code, response.text))
                    continue
                for answer, payload in zip(answers, payloads, strict=True):
                    load.acked[answer["job"]["id"]] = payload


def jobs_in(db: Database) -> dict[str, tuple[object, str | None, int]]:
    """Every stored job: its payload, its Idempotency-Key (as sent) and its `submitted` events."""

    def read(session: Session) -> dict[str, tuple[object, str | None, int]]:
        rows = session.execute(
            text(
                "SELECT j.id, j.payload, j.idempotency_key, "
                "(SELECT count(*) FROM job_events e WHERE e.job_id = j.id AND e.type = 'submitted' "
                "AND e.to_status = 'queued') FROM jobs j"
            )
        ).all()
        return {
            str(uuid.UUID(str(job_id))): (
                payload,
                key.rpartition(":")[2] if key else None,  # stored scoped to the caller
                int(submitted),
            )
            for job_id, payload, key, submitted in rows
        }

    found = db.read_sync(read)
    return {job_id: (decode(payload), key, n) for job_id, (payload, key, n) in found.items()}


def decode(payload: object) -> object:
    return json.loads(payload) if isinstance(payload, str) else payload  # SQLite's JSON is text


@pytest.mark.parametrize("workers", [1, 2])
def test_a_killed_server_loses_no_acknowledged_job(
    db_url: str, db: Database, tmp_path: Path, workers: int
) -> None:
    env = server_env(db_url)
    args = ("--no-worker", "--workers", str(workers))
    first = start_server_process(env, tmp_path / "first.log", *args, new_group=True)
    load = Load()
    rest = PLAIN_CLIENTS + KEYED_CLIENTS
    clients = [
        threading.Thread(
            target=submit_until_stopped, args=(first.url, load, n), kwargs={"keyed": n < KEYED_CLIENTS}
        )
        for n in range(rest)
    ] + [
        threading.Thread(target=submit_graphql_batches_until_stopped, args=(first.url, load, n))
        for n in range(rest, rest + GRAPHQL_CLIENTS)
    ]
    kill_at = random.randint(*KILL_AFTER_ACKS)
    try:
        for client in clients:
            client.start()
        wait_for(lambda: load.count() >= kill_at, timeout_s=LOAD_DEADLINE_S, what=f"{kill_at} answers")
        first.kill_group()  # requests are in flight: the clients go on sending into the dead port
        load.stop.set()
        for client in clients:
            client.join(timeout=30)
    finally:
        load.stop.set()
        if first.process.poll() is None:
            first.kill_group()
    assert not load.refused, load.refused[:5]
    assert load.cut_off > 0  # the kill landed mid-load

    acked_before_restart = dict(load.acked)
    second = start_server_process(env, tmp_path / "second.log", *args, new_group=True)
    try:
        replayed = resend_unanswered(second, load)
        stored = jobs_in(db)
        statuses = Counter(
            httpx.get(f"{second.url}/api/v1/status/{job_id}").json()["status"] for job_id in load.acked
        )
    finally:
        stop_server_process(second)

    found = [job_id for job_id in acked_before_restart if job_id in stored]
    lost = [job_id for job_id in load.acked if job_id not in stored]  # the resent ones too
    keys = Counter(key for _, key, _ in stored.values() if key is not None)
    kind = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    print(
        f"\n{kind} --workers {workers}: SIGKILL at {kill_at} answers; acknowledged "
        f"{len(acked_before_restart)}, found {len(found)}, lost {len(lost)}; cut off {load.cut_off}, "
        f"of them keyed {len(load.unanswered_keys)} (sent again: {replayed} had been stored); "
        f"jobs stored {len(stored)}"
    )
    assert lost == []
    assert statuses == {"queued": len(load.acked)}  # the restarted server reads each of them
    for job_id, payload in load.acked.items():
        assert stored[job_id][0] == payload, job_id
        assert stored[job_id][2] == 1, f"job {job_id} has {stored[job_id][2]} submitted events"
    # A key is stored once, on the job its first 202 named, whether or not a resend was needed.
    assert max(keys.values()) == 1
    assert set(keys) == set(load.keyed_acks)
    for key, job_id in load.keyed_acks.items():
        assert stored[job_id][1] == key
    # Nothing stored that no client sent: every stored job is acknowledged or was cut off.
    assert len(stored) <= len(acked_before_restart) + load.cut_off


def resend_unanswered(server: ServerProcess, load: Load) -> int:
    """Send again each keyed submit whose answer the kill cut off; returns how many of them the first
    server had stored (the answer says it replayed the stored job)."""
    replayed = 0
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for key, payload in load.unanswered_keys.items():
            response = http.post(
                "/api/v1/intake",
                json={"workflow": "echo", "payload": payload},
                headers={"Idempotency-Key": key},
            )
            assert response.status_code == 202, response.text
            replayed += response.headers.get("Idempotent-Replayed") == "true"
            job_id = response.json()["job_id"]
            load.acked[job_id] = payload
            load.keyed_acks[key] = job_id
    return replayed
