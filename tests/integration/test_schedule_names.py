"""A schedule's name addresses one schedule, on both databases: a second schedule of a taken name, or
a rename to one, is a conflict on REST (409), GraphQL (a CONFLICT user error) and the CLI, also when
requests race for one name; revision 0009 renames the duplicates made before names were unique."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, inspect, text

from levqor.db.migrate import upgrade
from tests.conftest import LiveServer
from tests.integration.test_migrations import empty_engine  # noqa: F401 - the fixture, on both dialects
from tests.support import assert_error, gql_data, levqor_on

ECHO = {"workflow": "echo", "payload": {}}
CREATE = """mutation($i: CreateScheduleInput!) {
  createSchedule(input: $i) { schedule { id name } userErrors { field message code } } }"""
UPDATE = """mutation($id: ID!, $i: UpdateScheduleInput!) {
  updateSchedule(id: $id, input: $i) { schedule { id name } userErrors { field message code } } }"""


@pytest.fixture
def live(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(LEVQOR_SCHEDULER="false")


def create(http: httpx.Client, name: str) -> httpx.Response:
    return http.post("/api/v1/schedules", json={"name": name, "every_s": 3600, "job": ECHO})


def test_a_taken_name_is_a_conflict_on_both_surfaces(live: LiveServer) -> None:
    with live.client() as http:
        made = create(http, "nightly-report")
        assert made.status_code == 201, made.text
        first = made.json()["schedule"]["id"]
        refused = assert_error(create(http, "nightly-report"), 409, "conflict")
        assert "'nightly-report'" in refused["message"]
        assert first in refused["message"]  # which schedule has it
        by_gql = gql_data(http, CREATE, {"i": {"name": "nightly-report", "everyS": 60, "job": ECHO}})
        assert by_gql["createSchedule"]["schedule"] is None
        assert by_gql["createSchedule"]["userErrors"] == [
            {"field": None, "message": refused["message"], "code": "CONFLICT"}
        ]
        # Names are compared as given: another spelling is another name.
        assert create(http, "Nightly-Report").status_code == 201
        listed = http.get("/api/v1/schedules").json()["schedules"]
        assert sorted(s["name"] for s in listed) == ["Nightly-Report", "nightly-report"]


def test_renaming_to_a_taken_name_is_a_conflict_and_to_its_own_is_not(live: LiveServer) -> None:
    with live.client() as http:
        one = create(http, "one").json()["schedule"]
        two = create(http, "two").json()["schedule"]
        refused = assert_error(
            http.patch(f"/api/v1/schedules/{two['id']}", json={"name": "one"}), 409, "conflict"
        )
        assert "'one'" in refused["message"]
        by_gql = gql_data(http, UPDATE, {"id": two["id"], "i": {"name": "one"}})["updateSchedule"]
        assert by_gql["userErrors"] == [{"field": None, "message": refused["message"], "code": "CONFLICT"}]
        assert http.get(f"/api/v1/schedules/{two['id']}").json()["schedule"]["name"] == "two"
        # Its own name again, with another change: no conflict.
        same = http.patch(f"/api/v1/schedules/{one['id']}", json={"name": "one", "every_s": 60})
        assert same.status_code == 200, same.text
        # A name is free again once its schedule is removed, or renamed.
        assert http.patch(f"/api/v1/schedules/{one['id']}", json={"name": "uno"}).status_code == 200
        renamed = gql_data(http, UPDATE, {"id": two["id"], "i": {"name": "one"}})["updateSchedule"]
        assert renamed["userErrors"] == []
        assert renamed["schedule"]["name"] == "one"
        assert http.delete(f"/api/v1/schedules/{one['id']}").status_code == 200
        assert create(http, "uno").status_code == 201


def test_racing_requests_for_one_name_make_one_schedule(live: LiveServer) -> None:
    with live.client() as http, ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _n: create(http, "raced").status_code, range(8)))
        listed = http.get("/api/v1/schedules").json()["schedules"]
    assert sorted(statuses) == [201] + [409] * 7
    assert [s["name"] for s in listed] == ["raced"]


def test_the_cli_names_the_conflict(live: LiveServer, db_url: str, tmp_path: Path) -> None:
    with live.client() as http:
        assert create(http, "from-config").status_code == 201
    command = ["schedules", "create", "--name", "from-config", "--every", "60", "--workflow", "echo"]
    done = levqor_on(db_url, tmp_path, *command)
    assert done.returncode == 1
    assert "a schedule named 'from-config' already exists" in done.stderr


def _insert_schedule(engine: Engine, schedule_id: uuid.UUID, name: str, created: datetime) -> None:
    sqlite = engine.dialect.name == "sqlite"

    def at(value: datetime) -> Any:
        # As text on SQLite: its driver's datetime adapter is deprecated since Python 3.12.
        return value.replace(tzinfo=None).isoformat(sep=" ") if sqlite else value

    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO schedules (id, name, every_s, timezone, anchor_at, job, on_missed, enabled, "
                "owner, created_at, updated_at) VALUES (:id, :name, 60, 'UTC', :at, :job, 'skip', "
                "false, 'cli', :at, :at)"
            ),
            {
                "id": schedule_id.hex if sqlite else schedule_id,
                "name": name,
                "at": at(created),
                "job": '{"workflow": "echo", "payload": {}}',
            },
        )


def test_revision_0009_renames_duplicates_made_before(empty_engine: Engine) -> None:  # noqa: F811
    upgrade(empty_engine, "0008")
    start = datetime(2026, 12, 1, tzinfo=UTC)
    ids = [uuid.UUID(int=n) for n in (30, 20, 10, 40, 50)]
    long_name = "n" * 128
    rows = [
        (ids[0], "nightly", start),  # the oldest of three: keeps the name
        (ids[1], "nightly", start + timedelta(seconds=1)),
        (ids[2], "nightly", start + timedelta(seconds=2)),
        (ids[3], long_name, start),
        (ids[4], long_name, start + timedelta(seconds=1)),
    ]
    for row in rows:
        _insert_schedule(empty_engine, *row)
    # A name that happens to be what the rename would choose is not taken twice.
    _insert_schedule(empty_engine, uuid.UUID(int=60), f"nightly ({ids[2]})", start)

    upgrade(empty_engine)

    with empty_engine.connect() as conn:
        names = {
            (uuid.UUID(str(schedule_id)) if not isinstance(schedule_id, uuid.UUID) else schedule_id): name
            for schedule_id, name in conn.execute(text("SELECT id, name FROM schedules")).all()
        }
    assert names[ids[0]] == "nightly"
    assert names[ids[1]] == f"nightly ({ids[1]})"
    assert names[ids[2]] == f"nightly ({ids[2]}) 2"
    assert names[ids[3]] == long_name
    assert names[ids[4]] == f"{'n' * (128 - 39)} ({ids[4]})"
    assert len(set(names.values())) == len(names)
    [index] = [i for i in inspect(empty_engine).get_indexes("schedules") if i["name"] == "ux_schedules_name"]
    assert index["unique"]
    assert index["column_names"] == ["name"]
