"""Runs (graphs of jobs) on both databases, through a live server and its in-process worker: the
diamond in order with the sink seeing both results, a failing step cancelling its descendants and
not its siblings, a retry resuming the run, edges that run anyway, cancelling a run, the run's one
signed callback, its budget reservation refused whole, idempotency, and every way a graph or a step
can be refused, on REST and GraphQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select
from standardwebhooks import Webhook

from levqor import queue
from levqor.db.engine import Database
from levqor.db.models import BudgetWindow, Job, Run, RunEdge
from levqor.db.types import utcnow
from tests.callback_support import Receiver, new_webhook_secret, receivers
from tests.conftest import LiveServer
from tests.support import gql_data

pytestmark = pytest.mark.timeout(120)

SECRET = new_webhook_secret()
TERMINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture
def live(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(
        LEVQOR_INPROCESS_WORKER="true",
        LEVQOR_WORKFLOWS="tests.support_workflows",
        LEVQOR_POLL_INTERVAL_MS="20",
        LEVQOR_WEBHOOK_SECRET=SECRET,
        LEVQOR_CALLBACK_RETRY_S="1,1",
    )


@pytest.fixture
def idle(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A server without a worker: steps stay where intake put them."""
    return make_server(LEVQOR_WORKFLOWS="tests.support_workflows")


@pytest.fixture
def make_receiver() -> Iterator[Callable[[], Receiver]]:
    yield from receivers()


def step(key: str, *depends_on: Any, workflow: str = "test.step", **fields: Any) -> dict[str, Any]:
    body = {"key": key, "workflow": workflow, "payload": fields.pop("payload", {}), **fields}
    if depends_on:
        body["depends_on"] = list(depends_on)
    return body


def diamond(marker: Path | None = None) -> list[dict[str, Any]]:
    failing = {"fail_while": str(marker)} if marker else {}
    return [
        step("a"),
        step("b", "a", payload=failing),
        step("c", "a"),
        step("d", "b", "c"),
    ]


def submit(http: httpx.Client, steps: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    response = http.post("/api/v1/runs", json={"steps": steps, **fields})
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/api/v1/runs/{body['run_id']}"
    return body


def wait_run(
    http: httpx.Client, run_id: str, statuses: tuple[str, ...] = TERMINAL, timeout_s: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = http.get(f"/api/v1/runs/{run_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in statuses:
            return body
        time.sleep(0.03)
    raise AssertionError(f"run {run_id} did not reach {statuses}: {body}")


def steps_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["key"]: item for item in run["steps"]}


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_a_diamond_runs_in_order_and_the_sink_sees_both_results(live: LiveServer) -> None:
    with live.client() as http:
        accepted = submit(http, diamond())
        assert accepted["status"] == "queued"
        assert sorted(accepted["jobs"]) == ["a", "b", "c", "d"]
        run = wait_run(http, accepted["run_id"])
    assert run["status"] == "succeeded"
    assert run["counts"] == {"queued": 0, "running": 0, "succeeded": 4, "failed": 0, "cancelled": 0}
    steps = steps_of(run)
    assert steps["d"]["depends_on"] == [
        {"key": "b", "on_failure": "cancel"},
        {"key": "c", "on_failure": "cancel"},
    ]
    # Each step started only after every parent had finished.
    for child, parents in {"b": ["a"], "c": ["a"], "d": ["b", "c"]}.items():
        for parent in parents:
            assert at(steps[child]["started_at"]) >= at(steps[parent]["finished_at"]), (child, parent)
    sink = steps["d"]["result"]
    assert sink["key"] == "d"
    assert sink["run_id"] == run["run_id"]
    assert sink["parents"] == {"b": steps["b"]["result"], "c": steps["c"]["result"]}
    assert sink["parent_statuses"] == {"b": "succeeded", "c": "succeeded"}
    assert steps["b"]["result"]["parents"] == {"a": steps["a"]["result"]}
    assert [event["type"] for event in run["events"]] == ["submitted", "succeeded"]
    assert run["finished_at"] is not None
    assert run["jobs"] == {key: item["job_id"] for key, item in steps.items()}


def test_a_failing_step_cancels_its_descendants_not_its_siblings_and_a_retry_resumes(
    live: LiveServer, tmp_path: Path
) -> None:
    marker = tmp_path / "b-fails"
    marker.write_text("until removed")
    with live.client() as http:
        accepted = submit(http, diamond(marker))
        run = wait_run(http, accepted["run_id"])
        assert run["status"] == "failed"
        steps = steps_of(run)
        assert {key: item["status"] for key, item in steps.items()} == {
            "a": "succeeded",
            "b": "failed",
            "c": "succeeded",
            "d": "cancelled",
        }
        assert steps["d"]["error"]["type"] == "parent_failed"
        assert steps["d"]["error"]["parent"] == "b"
        assert "step 'b' failed" in steps["d"]["error"]["message"]
        assert steps["d"]["started_at"] is None  # never ran
        # The cancelled step names why in its own event log.
        events = http.get(f"/api/v1/jobs/{steps['d']['job_id']}").json()["events"]
        assert events[-1]["type"] == "cancelled"
        assert events[-1]["detail"]["parent"] == "b"

        # D cannot be retried while B, whose failure cancelled it, has failed.
        refused = http.post(f"/api/v1/jobs/{steps['d']['job_id']}/retry")
        assert refused.status_code == 409, refused.text
        assert "'b'" in refused.json()["message"]

        marker.unlink()
        retried = http.post(f"/api/v1/jobs/{steps['b']['job_id']}/retry")
        assert retried.status_code == 200, retried.text
        assert retried.json()["run_id"] == run["run_id"]
        resumed = wait_run(http, accepted["run_id"])
    assert resumed["status"] == "succeeded"
    steps = steps_of(resumed)
    assert all(item["status"] == "succeeded" for item in steps.values())
    assert steps["d"]["result"]["parents"]["b"]["key"] == "b"
    assert [event["type"] for event in resumed["events"]] == ["submitted", "failed", "resumed", "succeeded"]


def test_an_edge_that_runs_anyway(live: LiveServer, tmp_path: Path) -> None:
    marker = tmp_path / "fails"
    marker.write_text("always")
    steps = [
        step("flaky", payload={"fail_while": str(marker)}),
        step("cleanup", {"key": "flaky", "on_failure": "run"}),
        step("report", "flaky"),
    ]
    with live.client() as http:
        run = wait_run(http, submit(http, steps)["run_id"])
    found = steps_of(run)
    assert found["flaky"]["status"] == "failed"
    assert found["cleanup"]["status"] == "succeeded"
    assert found["cleanup"]["result"]["parent_statuses"] == {"flaky": "failed"}
    assert found["cleanup"]["result"]["parents"] == {"flaky": None}
    assert found["report"]["status"] == "cancelled"
    assert run["status"] == "failed"


def test_a_cascade_reaches_every_descendant(live: LiveServer, tmp_path: Path) -> None:
    marker = tmp_path / "root-fails"
    marker.write_text("x")
    chain = [step("s0", payload={"fail_while": str(marker)})] + [
        step(f"s{i}", f"s{i - 1}") for i in range(1, 6)
    ]
    with live.client() as http:
        run = wait_run(http, submit(http, chain)["run_id"])
        assert [item["status"] for item in run["steps"]] == ["failed"] + ["cancelled"] * 5
        assert {item["error"]["parent"] for item in run["steps"][1:]} == {f"s{i}" for i in range(5)}
        marker.unlink()
        assert http.post(f"/api/v1/jobs/{run['jobs']['s0']}/retry").status_code == 200
        again = wait_run(http, run["run_id"])
    assert again["status"] == "succeeded"
    assert [item["status"] for item in again["steps"]] == ["succeeded"] * 6


def test_cancelling_a_run_cancels_what_has_not_finished(live: LiveServer) -> None:
    steps = [
        step("first", workflow="echo"),
        step("slow", "first", workflow="sleep", payload={"seconds": 30}),
        step("after", "slow", workflow="echo"),
        step("aside", workflow="sleep", payload={"seconds": 30}, run_at="2999-01-01T00:00:00Z"),
    ]
    with live.client() as http:
        accepted = submit(http, steps)
        deadline = time.monotonic() + 20
        while steps_of(http.get(f"/api/v1/runs/{accepted['run_id']}").json())["slow"]["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.03)
        assert http.get(f"/api/v1/runs/{accepted['run_id']}").json()["status"] == "running"
        cancelled = http.post(f"/api/v1/runs/{accepted['run_id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        body = cancelled.json()
        assert body["cancel_requested"] is True
        now = steps_of(body)
        assert now["after"]["status"] == "cancelled"
        assert now["after"]["error"]["type"] == "run_cancelled"
        assert now["aside"]["status"] == "cancelled"
        run = wait_run(http, accepted["run_id"])
        assert run["status"] == "cancelled"
        final = steps_of(run)
        assert final["first"]["status"] == "succeeded"
        assert final["slow"]["status"] == "cancelled"  # stopped through its heartbeat
        assert [event["type"] for event in run["events"]] == ["submitted", "cancel_requested", "cancelled"]
        again = http.post(f"/api/v1/runs/{accepted['run_id']}/cancel")
        assert again.status_code == 409
        assert again.json()["error"] == "conflict"


def test_a_run_calls_back_once_signed_when_it_finishes(
    live: LiveServer, make_receiver: Callable[[], Receiver]
) -> None:
    receiver = make_receiver()
    with live.client() as http:
        accepted = submit(http, diamond(), callback_url=f"{receiver.url}/run")
        run = wait_run(http, accepted["run_id"])
        [hit] = receiver.wait_for(1)
        event = Webhook(SECRET).verify(hit.body, hit.headers)
        assert event["type"] == "run.succeeded"
        assert event["data"]["run_id"] == accepted["run_id"]
        assert event["data"]["status"] == "succeeded"
        assert {key: item["status"] for key, item in event["data"]["steps"].items()} == dict.fromkeys(
            "abcd", "succeeded"
        )
        assert event["data"]["steps"]["d"]["job_id"] == accepted["jobs"]["d"]
        time.sleep(0.5)
        assert len(receiver.snapshot()) == 1  # one for the run, none for its steps (they have no URL)
        deliveries = wait_run(http, run["run_id"])["deliveries"]
        assert [d["event_type"] for d in deliveries] == ["run.succeeded"]


@pytest.mark.parametrize(
    ("steps", "field", "words"),
    [
        ([step("a", "b"), step("b", "a")], "steps", "cycle: a -> b -> a"),
        ([step("a", "a")], "steps", "cycle: a -> a"),
        ([step("a"), step("b", "a", "zzz")], "steps.1.depends_on.1", "no step 'zzz'"),
        ([step("a"), step("a")], "steps.1.key", "already steps.0"),
        ([step("a"), step("b", "a", "a")], "steps.1.depends_on.1", "named twice"),
        ([step("a", workflow="no.such")], "steps.0.workflow", "no.such"),
        ([step("a"), step("b", workflow="sleep", payload={"seconds": -1})], "steps.1.payload.seconds", ""),
        ([step("a", budget_policy="defer")], "steps.0.budget_policy", ""),
        ([step("a b")], "steps.0.key", ""),
        ([step("a", surprise=1)], "steps.0.surprise", ""),
        ([], "steps", ""),
        ([step(f"s{i}") for i in range(1001)], "steps", ""),
    ],
)
def test_a_bad_graph_or_step_is_refused_whole_naming_it(
    idle: LiveServer, db: Database, steps: list[dict[str, Any]], field: str, words: str
) -> None:
    with idle.client() as http:
        response = http.post("/api/v1/runs", json={"steps": steps})
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"] == "invalid_request"
        assert field in [detail["field"] for detail in body["details"]], body
        assert words in body["message"]
    assert db.read_sync(lambda session: list(session.exec(select(Job)))) == []
    assert db.read_sync(lambda session: list(session.exec(select(Run)))) == []


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"steps": "a"},
        {"steps": [1]},
        {"steps": [step("a")], "callback_url": "ftp://x"},
        {"steps": [step("a")], "extra": True},
        {"steps": [{**step("a"), "depends_on": [{"key": "b", "on_failure": "maybe"}]}, step("b")]},
        {"steps": [{**step("a"), "depends_on": "b"}, step("b")]},
    ],
)
def test_malformed_run_bodies_are_400(idle: LiveServer, body: Any) -> None:
    with idle.client() as http:
        response = http.post("/api/v1/runs", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_request"


def test_unknown_runs_are_404(idle: LiveServer) -> None:
    with idle.client() as http:
        for path in ("/api/v1/runs/not-a-uuid", "/api/v1/runs/00000000-0000-0000-0000-000000000000"):
            assert http.get(path).status_code == 404
            assert http.post(f"{path}/cancel").status_code == 404


def test_steps_wait_out_of_the_claim_until_their_parents_finish(idle: LiveServer, db: Database) -> None:
    with idle.client() as http:
        accepted = submit(http, diamond())
        run = http.get(f"/api/v1/runs/{accepted['run_id']}").json()
        assert run["status"] == "queued"
        assert {key: item["waiting_on"] for key, item in steps_of(run).items()} == {
            "a": 0,
            "b": 1,
            "c": 1,
            "d": 2,
        }
        # A worker asking for everything gets the root only.
        claimed = http.post(
            "/api/v1/workers/claim", json={"worker_id": "w", "workflows": ["test.step"], "max_jobs": 10}
        ).json()["jobs"]
        assert [job["id"] for job in claimed] == [accepted["jobs"]["a"]]
        assert claimed[0]["run_id"] == accepted["run_id"]
        assert claimed[0]["step_key"] == "a"
        assert claimed[0]["parents"] == {}
        assert http.get(f"/api/v1/runs/{accepted['run_id']}").json()["status"] == "running"
        done = http.post(
            f"/api/v1/jobs/{claimed[0]['id']}/complete",
            json={"worker_id": "w", "attempt": 1, "result": {"from": "a"}},
        )
        assert done.status_code == 200, done.text
        claimed = http.post(
            "/api/v1/workers/claim", json={"worker_id": "w", "workflows": ["test.step"], "max_jobs": 10}
        ).json()["jobs"]
        assert sorted(job["step_key"] for job in claimed) == ["b", "c"]
        for job in claimed:  # a remote worker is told its parents' outcomes
            assert job["parents"] == {
                "a": {
                    "job_id": accepted["jobs"]["a"],
                    "status": "succeeded",
                    "result": {"from": "a"},
                    "error": None,
                }
            }
    edges = db.read_sync(lambda session: list(session.exec(select(RunEdge))))
    assert len(edges) == 4


def test_idempotency_key_replays_a_run(idle: LiveServer, db: Database) -> None:
    with idle.client() as http:
        headers = {"Idempotency-Key": "run-1"}
        first = http.post("/api/v1/runs", json={"steps": diamond()}, headers=headers)
        second = http.post("/api/v1/runs", json={"steps": diamond()}, headers=headers)
        assert first.status_code == second.status_code == 202
        assert second.headers["idempotent-replayed"] == "true"
        assert first.json() == second.json()
        other = http.post("/api/v1/runs", json={"steps": diamond()[:1]}, headers=headers)
        assert other.status_code == 409
    assert len(db.read_sync(lambda session: list(session.exec(select(Job))))) == 4


def budgeted_key(http: httpx.Client, limit: int) -> str:
    """A managed key with a daily budget of `limit` (the first key made is an admin's: once a key
    exists, development mode is over)."""
    admin = http.post("/api/v1/keys", json={"name": "admin", "scopes": ["admin"]})
    assert admin.status_code == 201, admin.text
    headers = {"X-Api-Key": admin.json()["secret"]}
    made = http.post(
        "/api/v1/keys", json={"name": "runs", "scopes": ["jobs:read", "jobs:write"]}, headers=headers
    )
    assert made.status_code == 201, made.text
    key_id = made.json()["key"]["id"]
    budget = http.put(
        f"/api/v1/budgets/keys/{key_id}", json={"period": "day", "limit_micros": limit}, headers=headers
    )
    assert budget.status_code == 200, budget.text
    return str(made.json()["secret"])


def test_a_run_past_its_budget_is_refused_whole(idle: LiveServer, db: Database) -> None:
    priced = [step(f"p{i}", workflow="test.priced", payload={"estimate": 4}) for i in range(3)]
    with idle.client() as http:
        secret = budgeted_key(http, 10)
        headers = {"X-Api-Key": secret}
        refused = http.post("/api/v1/runs", json={"steps": priced}, headers=headers)
        assert refused.status_code == 402, refused.text
        body = refused.json()
        assert body["error"] == "budget_exceeded"
        assert "12 micro-USD" in body["message"]
        assert body["details"][0]["run_estimate_micros"] == 12
        assert body["details"][0]["remaining_micros"] == 10 - 8
        assert db.read_sync(lambda session: list(session.exec(select(Job)))) == []  # never half-started
        assert all(
            row.reserved_micros == 0 for row in db.read_sync(lambda s: list(s.exec(select(BudgetWindow))))
        )

        fits = http.post("/api/v1/runs", json={"steps": priced[:2]}, headers=headers)
        assert fits.status_code == 202, fits.text
        run = http.get(f"/api/v1/runs/{fits.json()['run_id']}", headers=headers).json()
        assert run["cost_estimate_micros"] == 8
        assert run["reserved_micros"] == 8
        assert http.post("/api/v1/runs", json={"steps": priced[:1]}, headers=headers).status_code == 402


def test_graphql_submit_read_and_cancel(idle: LiveServer) -> None:
    mutation = """
      mutation($input: SubmitRunInput!) {
        submitRun(input: $input) {
          run { id status stepsTotal steps { key waitingOn dependsOn { key onFailure } job { id stepKey } } }
          userErrors { field message code }
        }
      }"""
    steps = [
        {"key": "a", "workflow": "echo", "payload": {}},
        {"key": "b", "workflow": "echo", "payload": {}, "dependsOn": [{"key": "a", "onFailure": "RUN"}]},
    ]
    with idle.client() as http:
        made = gql_data(http, mutation, {"input": {"steps": steps}})["submitRun"]
        assert made["userErrors"] == []
        run = made["run"]
        assert run["status"] == "QUEUED"
        assert run["stepsTotal"] == 2
        b = run["steps"][1]
        assert b["dependsOn"] == [{"key": "a", "onFailure": "RUN"}]
        assert b["waitingOn"] == 1
        assert b["job"]["stepKey"] == "b"
        job = gql_data(
            http, "query($id: ID!) { job(id: $id) { run { id counts { queued } } } }", {"id": b["job"]["id"]}
        )
        assert job["job"]["run"] == {"id": run["id"], "counts": {"queued": 2}}
        read = gql_data(http, "query($id: ID!) { run(id: $id) { id jobs { stepKey } } }", {"id": run["id"]})
        assert [item["stepKey"] for item in read["run"]["jobs"]] == ["a", "b"]
        cancelled = gql_data(
            http,
            "mutation($id: ID!) { cancelRun(id: $id) {"
            " run { status counts { cancelled } } userErrors { code } } }",
            {"id": run["id"]},
        )["cancelRun"]
        assert cancelled["run"] == {"status": "CANCELLED", "counts": {"cancelled": 2}}
        again = gql_data(
            http,
            "mutation($id: ID!) { cancelRun(id: $id) { run { id } userErrors { code } } }",
            {"id": run["id"]},
        )["cancelRun"]
        assert again == {"run": None, "userErrors": [{"code": "CONFLICT"}]}
        cycle = gql_data(
            http,
            mutation,
            {
                "input": {
                    "steps": [
                        {"key": "x", "workflow": "echo", "payload": {}, "dependsOn": [{"key": "y"}]},
                        {"key": "y", "workflow": "echo", "payload": {}, "dependsOn": [{"key": "x"}]},
                    ]
                }
            },
        )["submitRun"]
        assert cycle["run"] is None
        assert cycle["userErrors"][0]["field"] == "steps"
        assert "x -> y -> x" in cycle["userErrors"][0]["message"]
        plain = gql_data(
            http,
            'mutation { submitJob(input: {workflow: "echo", payload: {}})'
            " { job { id run { id } stepKey } } }",
        )
        assert plain["submitJob"]["job"]["run"] is None
        assert plain["submitJob"]["job"]["stepKey"] is None


def test_a_step_whose_worker_died_for_good_fails_and_cancels_its_children(
    idle: LiveServer, db: Database
) -> None:
    steps = [step("root", max_attempts=1), step("child", "root"), step("other")]
    with idle.client() as http:
        accepted = submit(http, steps)
        claimed = http.post(
            "/api/v1/workers/claim",
            json={"worker_id": "gone", "workflows": ["test.step"], "max_jobs": 1, "lease_s": 5},
        ).json()["jobs"]
        assert [job["step_key"] for job in claimed] == ["root"]
        # The worker never reports; its lease runs out with no attempt left.
        taken = db.write_sync(lambda s: queue.reap_expired(s, now=utcnow() + timedelta(seconds=10)))
        assert taken == 1
        run = http.get(f"/api/v1/runs/{accepted['run_id']}").json()
    found = steps_of(run)
    assert found["root"]["status"] == "failed"
    assert found["root"]["error"]["type"] == "lease_expired"
    assert found["child"]["status"] == "cancelled"
    assert found["child"]["error"]["parent"] == "root"
    assert found["other"]["status"] == "queued"  # not its descendant
    assert run["status"] == "running"
    assert run["counts"] == {"queued": 1, "running": 0, "succeeded": 0, "failed": 1, "cancelled": 1}


def test_cancelling_one_step_cancels_its_descendants_and_the_run_ends_cancelled(idle: LiveServer) -> None:
    with idle.client() as http:
        accepted = submit(http, [step("a"), step("b", "a")])
        cancelled = http.post(f"/api/v1/jobs/{accepted['jobs']['a']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        run = http.get(f"/api/v1/runs/{accepted['run_id']}").json()
        assert run["status"] == "cancelled"
        assert steps_of(run)["b"]["error"] == {
            "type": "parent_failed",
            "message": "step 'a' cancelled",
            "parent": "a",
            "parent_job_id": accepted["jobs"]["a"],
        }
        # Retrying the cancelled step brings its child back and reopens the run.
        assert http.post(f"/api/v1/jobs/{accepted['jobs']['a']}/retry").status_code == 200
        run = http.get(f"/api/v1/runs/{accepted['run_id']}").json()
        assert run["status"] == "queued"
        assert {key: (item["status"], item["waiting_on"]) for key, item in steps_of(run).items()} == {
            "a": ("queued", 0),
            "b": ("queued", 1),
        }
        assert [event["type"] for event in run["events"]] == ["submitted", "cancelled", "resumed"]
