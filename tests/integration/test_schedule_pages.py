"""GET /api/v1/schedules and the `schedules` connection on both databases: pages of `limit` (1-100,
20 by default, as GET /api/v1/jobs) oldest first, cursors that add up to the whole listing on both
surfaces alike, a page that goes on past a schedule removed meanwhile, and bad limits or cursors
refused as bad input, never a 500."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from levqor.db.engine import Database
from levqor.db.models import Schedule
from levqor.resolvers.jobs import MAX_LIST_LIMIT
from tests.conftest import LiveServer
from tests.support import assert_error, gql, gql_data, gql_error_code, levqor_on

ECHO = {"workflow": "echo", "payload": {}}
SCHEDULES = """query($n: Int!, $a: String) {
  schedules(first: $n, after: $a) {
    edges { cursor node { id name } } pageInfo { hasNextPage endCursor } } }"""


@pytest.fixture
def live(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(LEVQOR_SCHEDULER="false")


def make_schedules(http: httpx.Client, count: int) -> list[str]:
    ids = []
    for index in range(count):
        body = {"name": f"page-{index}", "every_s": 3600, "job": ECHO}
        response = http.post("/api/v1/schedules", json=body)
        assert response.status_code == 201, response.text
        ids.append(response.json()["schedule"]["id"])
    return ids


def test_pages_add_up_to_the_listing_alike_on_both_surfaces(live: LiveServer) -> None:
    with live.client() as http:
        made = make_schedules(http, 5)
        rest_cursor: str | None = None
        gql_cursor: str | None = None
        pages: list[list[str]] = []
        while True:
            params = {"limit": 2, **({"cursor": rest_cursor} if rest_cursor else {})}
            page = http.get("/api/v1/schedules", params=params)
            assert page.status_code == 200, page.text
            body = page.json()
            connection = gql_data(http, SCHEDULES, {"n": 2, "a": gql_cursor})["schedules"]
            ids = [schedule["id"] for schedule in body["schedules"]]
            assert ids == [edge["node"]["id"] for edge in connection["edges"]]
            assert body["next_cursor"] == connection["pageInfo"]["endCursor"]
            assert (body["next_cursor"] is not None) == connection["pageInfo"]["hasNextPage"]
            if body["next_cursor"] is not None:  # the last edge's cursor is the page's
                assert connection["edges"][-1]["cursor"] == body["next_cursor"]
            pages.append(ids)
            rest_cursor = gql_cursor = body["next_cursor"]
            if rest_cursor is None:
                break
            assert len(pages) < 10, "the cursor never ends"
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [schedule_id for page in pages for schedule_id in page] == made  # oldest first, each once


def test_default_limit_is_twenty_and_the_most_a_hundred(live: LiveServer) -> None:
    with live.client() as http:
        assert http.get("/api/v1/schedules").json() == {"schedules": [], "next_cursor": None}
        made = make_schedules(http, 21)
        first = http.get("/api/v1/schedules").json()
        assert [s["id"] for s in first["schedules"]] == made[:20]
        rest = http.get("/api/v1/schedules", params={"cursor": first["next_cursor"]}).json()
        assert [s["id"] for s in rest["schedules"]] == made[20:]
        assert rest["next_cursor"] is None
        assert len(http.get("/api/v1/schedules", params={"limit": 100}).json()["schedules"]) == 21
        connection = gql_data(http, "{ schedules { edges { node { id } } pageInfo { hasNextPage } } }")
        assert len(connection["schedules"]["edges"]) == 20
        assert connection["schedules"]["pageInfo"]["hasNextPage"] is True


def test_a_page_goes_on_after_a_schedule_removed_meanwhile(live: LiveServer) -> None:
    with live.client() as http:
        made = make_schedules(http, 4)
        first = http.get("/api/v1/schedules", params={"limit": 2}).json()
        assert http.delete(f"/api/v1/schedules/{made[1]}").status_code == 200
        rest = http.get("/api/v1/schedules", params={"limit": 2, "cursor": first["next_cursor"]}).json()
        assert [s["id"] for s in rest["schedules"]] == made[2:]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "1.5"}, "limit"),
        ({"cursor": "zzz"}, "cursor"),
        ({"cursor": ""}, "cursor"),
        ({"cursor": "A" * 21 + "B"}, "cursor"),  # 22 characters whose last bits are not zero
        ({"cursor": "c2VxOjE"}, "cursor"),  # a cursor of GET /api/v1/jobs
        ({"order": "desc"}, "order"),
    ],
)
def test_bad_limits_and_cursors_are_a_400(live: LiveServer, params: dict[str, Any], field: str) -> None:
    with live.client() as http:
        assert_error(http.get("/api/v1/schedules", params=params), 400, "invalid_request", field=field)


@pytest.mark.parametrize(
    "variables", [{"n": 0}, {"n": 101}, {"n": -1}, {"n": 2, "a": "zzz"}, {"n": 2, "a": "c2VxOjE"}]
)
def test_bad_first_and_after_are_bad_user_input(live: LiveServer, variables: dict[str, Any]) -> None:
    with live.client() as http:
        body = gql(http, SCHEDULES, variables)
    assert gql_error_code(body) == "BAD_USER_INPUT"
    assert body["data"] is None


def test_the_cli_lists_every_page(db: Database, db_url: str, tmp_path: Path) -> None:
    # More than the largest page, so that the command must follow the cursor.
    count = MAX_LIST_LIMIT + 1
    with db.session(write=True) as session:
        rows = [Schedule(name=f"cli-{index}", every_s=3600, job=ECHO, owner="cli") for index in range(count)]
        session.add_all(rows)
        made = sorted(str(row.id) for row in rows)
    done = levqor_on(db_url, tmp_path, "schedules", "list", "--json")
    assert done.returncode == 0, done.stderr
    listed = [s["id"] for s in json.loads(done.stdout)["schedules"]]
    assert listed == made  # each once, in id order
