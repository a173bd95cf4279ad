"""Schedules on both databases: CRUD on REST, GraphQL and the CLI, bad input, next fire times,
pause and resume, run now, skip against run_once after downtime, and fires through intake (a budget's
refusal and a payload that no longer validates are recorded on the fire). The scheduler's clock is
the `now` passed to `fire_due`: nothing here waits for a tick."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import select

from levqor.config import Settings
from levqor.db.engine import Database
from levqor.db.models import Job, Schedule
from levqor.db.types import utcnow
from levqor.resolvers.schedule_fires import fire_due
from tests.conftest import LiveServer
from tests.support import levqor_on

ECHO = {"workflow": "echo", "payload": {"n": 1}}


@pytest.fixture
def live(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(LEVQOR_SCHEDULER="false")


def create(http: httpx.Client, **body: Any) -> dict[str, Any]:
    """A schedule of a fresh name unless `name` is given (names are unique)."""
    body = {"name": f"s-{uuid.uuid4().hex[:8]}", "job": ECHO, **body}
    response = http.post("/api/v1/schedules", json=body)
    assert response.status_code == 201, response.text
    schedule: dict[str, Any] = response.json()["schedule"]
    return schedule


def fire(db: Database, settings: Settings, now: datetime) -> int:
    return asyncio.run(fire_due(db, settings, now))


def schedule_of(http: httpx.Client, schedule_id: str) -> dict[str, Any]:
    response = http.get(f"/api/v1/schedules/{schedule_id}")
    assert response.status_code == 200, response.text
    return dict(response.json()["schedule"])


def test_crud_and_next_fire_times(live: LiveServer) -> None:
    with live.client() as http:
        made = create(http, cron="30 9 * * MON-FRI", timezone="Europe/London", on_missed="run_once")
        assert made["enabled"]
        assert made["on_missed"] == "run_once"
        assert made["fires"] == []
        ticks = [datetime.fromisoformat(t) for t in made["next_fire_times"]]
        assert len(ticks) == 5
        assert ticks == sorted(ticks)
        assert ticks[0] > utcnow()
        for tick in ticks:  # 09:30 London, on a weekday, whatever the offset that day
            local = tick.astimezone(__import__("zoneinfo").ZoneInfo("Europe/London"))
            assert (local.hour, local.minute) == (9, 30)
            assert local.weekday() < 5
        assert [s["id"] for s in http.get("/api/v1/schedules").json()["schedules"]] == [made["id"]]
        changed = http.patch(f"/api/v1/schedules/{made['id']}", json={"every_s": 60, "name": "t"}).json()
        assert changed["schedule"]["cron"] is None
        assert changed["schedule"]["every_s"] == 60
        gaps = {
            (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()
            for a, b in zip(
                changed["schedule"]["next_fire_times"],
                changed["schedule"]["next_fire_times"][1:],
                strict=False,
            )
        }
        assert gaps == {60.0}
        paused = http.patch(f"/api/v1/schedules/{made['id']}", json={"enabled": False}).json()["schedule"]
        assert paused["next_fire_at"] is None
        assert paused["next_fire_times"] == []
        assert http.delete(f"/api/v1/schedules/{made['id']}").json()["schedule"]["name"] == "t"
        assert http.get(f"/api/v1/schedules/{made['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "cron"),
        ({"cron": "* * 30 2 *"}, "cron"),
        ({"every_s": 0}, "every_s"),
        ({"every_s": 10**9}, "every_s"),
        ({"every_s": 5, "timezone": "Mars/Olympus"}, "timezone"),
        ({"every_s": 5, "cron": "* * * * *"}, None),
        ({}, None),
        ({"every_s": 5, "job": {"workflow": "nope", "payload": {}}}, "workflow"),
        ({"every_s": 5, "job": {"workflow": "sleep", "payload": {"bad": 1}}}, "payload"),
        ({"every_s": 5, "job": {**ECHO, "run_at": "2030-01-01T00:00:00Z"}}, "job.run_at"),
        ({"every_s": 5, "colour": "red"}, "colour"),
        ({"every_s": 5, "cron": None}, None),
        ({"every_s": 5, "on_missed": "twice"}, "on_missed"),
    ],
)
def test_bad_input_is_a_400(live: LiveServer, body: dict[str, Any], field: str | None) -> None:
    with live.client() as http:
        response = http.post("/api/v1/schedules", json={"name": "bad", "job": ECHO, **body})
        assert response.status_code == 400, response.text
        if field is not None:
            assert field in response.text
        assert http.get("/api/v1/schedules/not-a-uuid").status_code == 404
        assert http.post("/api/v1/schedules/00000000-0000-0000-0000-000000000000/run").status_code == 404
        assert (
            http.patch("/api/v1/schedules/00000000-0000-0000-0000-000000000000", json={}).status_code == 404
        )


def test_ticks_fire_once_and_skip_or_run_once_after_downtime(live: LiveServer, db: Database) -> None:
    settings = live.settings
    with live.client() as http:
        skip = create(http, every_s=10, on_missed="skip")
        once = create(http, every_s=10, on_missed="run_once")
        start = datetime.fromisoformat(skip["next_fire_at"])
        assert fire(db, settings, start - timedelta(seconds=1)) == 0
        assert fire(db, settings, start + timedelta(seconds=1)) >= 2  # each fires its first tick
        assert fire(db, settings, start + timedelta(seconds=1)) == 0  # the same tick: no second fire
        # An hour with no scheduler: `skip` fires only the ticks within the grace, `run_once` one job
        # for the missed ticks too.
        later = start + timedelta(hours=1)
        fire(db, settings, later)
        grace_ticks = settings.scheduler_grace_s // 10
        skip_fires = schedule_of(http, skip["id"])["fires"]
        once_fires = schedule_of(http, once["id"])["fires"]
        assert [f["kind"] for f in skip_fires].count("missed") == 0
        missed = [f for f in once_fires if f["kind"] == "missed"]
        assert len(missed) == 1
        assert missed[0]["ticks"] > 300
        assert missed[0]["job_id"]
        assert len([f for f in skip_fires if f["kind"] == "tick"]) in (grace_ticks + 1, grace_ticks + 2)
        assert datetime.fromisoformat(schedule_of(http, skip["id"])["next_fire_at"]) > later
    with db.session() as session:
        jobs = session.exec(select(Job)).all()
        keys = [job.idempotency_key for job in jobs]
        assert len(keys) == len(set(keys)) == len(jobs)


def test_pause_resume_and_run_now(live: LiveServer, db: Database) -> None:
    with live.client() as http:
        made = create(http, every_s=5, on_missed="run_once")
        start = datetime.fromisoformat(made["next_fire_at"])
        http.patch(f"/api/v1/schedules/{made['id']}", json={"enabled": False})
        assert fire(db, live.settings, start + timedelta(minutes=5)) == 0  # paused: nothing fires
        ran = http.post(f"/api/v1/schedules/{made['id']}/run")  # run now works while paused
        assert ran.status_code == 202, ran.text
        assert ran.json()["fire"]["kind"] == "manual"
        job = http.get(f"/api/v1/jobs/{ran.json()['job_id']}").json()
        assert job["workflow"] == "echo"
        assert job["payload"] == {"n": 1}
        resumed = http.patch(f"/api/v1/schedules/{made['id']}", json={"enabled": True}).json()["schedule"]
        # Resumed from the next tick: the ticks of the pause never fire, run_once or not.
        assert datetime.fromisoformat(resumed["next_fire_at"]) > utcnow() - timedelta(seconds=1)
        assert fire(db, live.settings, utcnow()) == 0
        assert [f["kind"] for f in schedule_of(http, made["id"])["fires"]] == ["manual"]


def test_a_fire_goes_through_intake(live: LiveServer, db: Database) -> None:
    with live.client() as http:
        user = http.post("/api/v1/users/upsert", json={"email": "s@example.com", "name": "S"}).json()["user"]
        assert (
            http.put(
                f"/api/v1/budgets/users/{user['id']}", json={"period": "day", "limit_micros": 0}
            ).status_code
            == 200
        )
        priced = {
            "workflow": "llm.chat",
            "payload": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            "user_id": user["id"],
        }
        made = create(http, every_s=5, job=priced)
        refused = http.post(f"/api/v1/schedules/{made['id']}/run")
        assert refused.status_code == 402, refused.text
        start = datetime.fromisoformat(made["next_fire_at"])
        fire(db, live.settings, start)
        fires = schedule_of(http, made["id"])["fires"]
        assert [f["error"]["error"] for f in fires] == ["budget_exceeded", "budget_exceeded"]
        assert all(f["job_id"] is None for f in fires)
        # A payload that no longer validates (the workflow's schema changed under a stored job).
    with db.session(write=True) as session:
        row = session.get(Schedule, uuid.UUID(made["id"]))
        assert row is not None
        row.job = {"workflow": "echo", "payload": "not an object"}
        session.add(row)
    with live.client() as http:
        fire(db, live.settings, start + timedelta(seconds=5))
        latest = schedule_of(http, made["id"])["fires"][0]
        assert latest["error"]["error"] == "invalid_request"
        assert latest["job_id"] is None


def test_graphql_and_cli(live: LiveServer, db_url: str, tmp_path: Any) -> None:
    with live.client() as http:
        created = http.post(
            "/graphql",
            json={
                "query": 'mutation { createSchedule(input: {name: "g", cron: "0 * * * *", timezone: "UTC", '
                'job: {workflow: "echo", payload: {n: 1}}}) '
                "{ schedule { id nextFireTimes } userErrors { field } } }"
            },
        ).json()["data"]["createSchedule"]
        assert created["userErrors"] == []
        assert len(created["schedule"]["nextFireTimes"]) == 5
        bad = http.post(
            "/graphql",
            json={
                "query": 'mutation { createSchedule(input: {name: "g", everyS: 0, job: {workflow: "echo", '
                "payload: {}}}) { userErrors { field code } } }"
            },
        ).json()["data"]["createSchedule"]
        assert bad["userErrors"] == [{"field": "everyS", "code": "out_of_range"}]

    def cli(*args: str) -> str:
        done = levqor_on(db_url, tmp_path, "schedules", *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    made = json.loads(cli("create", "--name", "c", "--every", "30", "--workflow", "echo", "--json"))
    assert made["every_s"] == 30
    assert json.loads(cli("pause", made["id"], "--json"))["enabled"] is False
    assert json.loads(cli("resume", made["id"], "--json"))["enabled"] is True
    job_id = cli("run", made["id"]).strip()
    assert len(job_id) == 36
    listed = json.loads(cli("list", "--json"))["schedules"]
    assert {s["name"] for s in listed} == {"g", "c"}
    cli("delete", made["id"])
    assert len(json.loads(cli("list", "--json"))["schedules"]) == 1
