"""The job list's filters (key, user, creation time range, text in payload or error) on REST and
GraphQL: each selects exactly the jobs it names, and keyset pages through them without a gap."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from levqor.db.engine import Database
from levqor.db.models import Job, JobStatus, User
from tests.conftest import DB_KINDS, LiveServer
from tests.support import assert_error, gql, gql_data, gql_error_code, shared_server

BASE = datetime(2026, 12, 1, tzinfo=UTC)
KEY_A = uuid.UUID("0193a000-0000-7000-8000-00000000000a")
KEY_B = uuid.UUID("0193a000-0000-7000-8000-00000000000b")
USER_1 = uuid.UUID("0193a000-0000-7000-8000-000000000001")
USER_2 = uuid.UUID("0193a000-0000-7000-8000-000000000002")
STATUSES = [JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.RUNNING, JobStatus.CANCELLED]
SPECIAL_PAYLOADS: dict[int, dict[str, Any]] = {
    2: {"note": "Café Crème"},
    5: {"quote": 'say "hi" twice'},
    7: {"progress": "100%_done"},
    8: {"path": "C:\\temp"},
}
SPECIAL_ERRORS: dict[int, dict[str, Any]] = {9: {"message": "Timeout talking to upstream"}}
JOBS_QUERY = """query($f: JobFilter, $n: Int, $a: String) {
  jobs(filter: $f, first: $n, after: $a) { edges { node { id } } pageInfo { hasNextPage endCursor } } }"""


def seeded_job(index: int) -> Job:
    """Job `index` of the fixture: every attribute a filter reads follows from the index."""
    key = (KEY_A, KEY_B, None)[index % 3]
    return Job(
        workflow="echo" if index % 2 == 0 else "sleep",
        status=STATUSES[index % len(STATUSES)].value,
        payload=SPECIAL_PAYLOADS.get(index, {"n": index}),
        error=SPECIAL_ERRORS.get(index),
        submitted_by=None if key is None else f"key:{key}",
        user_id=(USER_1, USER_2, None, None)[index % 4],
        created_at=BASE + timedelta(hours=index),
        run_at=BASE + timedelta(hours=index),
    )


COUNT = 14


@pytest.fixture(scope="module", params=DB_KINDS)
def listing(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, list[str]]]:
    """One server over fourteen jobs written straight to its database, oldest first; yields a client
    and the jobs' ids in that order."""
    workdir: Path = tmp_path_factory.mktemp("jobs-filters")
    live: LiveServer
    with shared_server(request, str(request.param), workdir) as live, live.client() as http:
        db = Database(live.settings.db_url)
        try:

            def seed(session: Any) -> list[str]:
                for user_id in (USER_1, USER_2):
                    session.add(User(id=user_id, email=f"{user_id}@example.com", name="U"))
                session.flush()
                rows = [seeded_job(index) for index in range(COUNT)]
                for row in rows:  # one at a time, so `seq` follows creation
                    session.add(row)
                    session.flush()
                return [str(row.id) for row in rows]

            ids = db.write_sync(seed)
        finally:
            db.dispose()
        yield http, ids


def rest_walk(http: httpx.Client, params: dict[str, Any], limit: int) -> list[str]:
    found: list[str] = []
    cursor: str | None = None
    for _ in range(COUNT + 2):
        response = http.get(
            "/api/v1/jobs", params={**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["jobs"]) <= limit
        found += [job["id"] for job in body["jobs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return found
    raise AssertionError("the cursor never ends")


def gql_walk(http: httpx.Client, where: dict[str, Any], first: int) -> list[str]:
    found: list[str] = []
    after: str | None = None
    for _ in range(COUNT + 2):
        page = gql_data(http, JOBS_QUERY, {"f": where, "n": first, "a": after})["jobs"]
        found += [edge["node"]["id"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return found
        after = page["pageInfo"]["endCursor"]
    raise AssertionError("the connection never ends")


def text_of(value: dict[str, Any] | None) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False).lower()


# (REST query parameters, the same as a GraphQL JobFilter, which job indexes it selects)
Case = tuple[dict[str, Any], dict[str, Any], Callable[[int], bool]]
CASES: dict[str, Case] = {
    "key id": ({"key_id": str(KEY_A)}, {"keyId": str(KEY_A)}, lambda i: i % 3 == 0),
    "key as submitted_by": ({"key_id": f"key:{KEY_B}"}, {"keyId": f"key:{KEY_B}"}, lambda i: i % 3 == 1),
    "user": ({"user_id": str(USER_2)}, {"userId": str(USER_2)}, lambda i: i % 4 == 1),
    "created after, inclusive": (
        {"created_after": "2026-12-01T10:00:00Z"},
        {"createdAfter": "2026-12-01T10:00:00Z"},
        lambda i: i >= 10,
    ),
    "created after, RFC 3339's lower-case t and z": (
        {"created_after": "2026-12-01t10:00:00z"},
        {"createdAfter": "2026-12-01T10:00:00Z"},
        lambda i: i >= 10,
    ),
    "created before, exclusive, no offset is UTC": (
        {"created_before": "2026-12-01T03:00:00"},
        {"createdBefore": "2026-12-01T03:00:00"},
        lambda i: i < 3,
    ),
    "created in a range with an offset": (
        {"created_after": "2026-12-01T06:00:00+02:00", "created_before": "2026-12-01T09:00:00+02:00"},
        {"createdAfter": "2026-12-01T06:00:00+02:00", "createdBefore": "2026-12-01T09:00:00+02:00"},
        lambda i: 4 <= i < 7,
    ),
    "text in a payload, other case, beyond ASCII": ({"text": "CAFÉ"}, {"text": "CAFÉ"}, lambda i: i == 2),
    "text with quotes": ({"text": '"hi" tw'}, {"text": '"hi" tw'}, lambda i: i == 5),
    "text with LIKE's wildcards taken literally": ({"text": "0%_d"}, {"text": "0%_d"}, lambda i: i == 7),
    "a lone percent sign": ({"text": "%"}, {"text": "%"}, lambda i: i == 7),
    "a backslash": ({"text": "c:\\t"}, {"text": "c:\\t"}, lambda i: i == 8),
    "text in an error": ({"text": "timeout"}, {"text": "timeout"}, lambda i: i == 9),
    "text matching JSON's own syntax": (
        {"text": '"n": 1'},
        {"text": '"n": 1'},
        lambda i: i in (1, 10, 11, 12, 13),
    ),
    "text matching nothing": ({"text": "no such words"}, {"text": "no such words"}, lambda i: False),
    "every filter at once": (
        {
            "workflow": "echo",
            "status": "queued",
            "key_id": str(KEY_A),
            "user_id": str(USER_1),
            "created_after": "2026-12-01T00:00:00Z",
        },
        {
            "workflow": "echo",
            "status": "QUEUED",
            "keyId": str(KEY_A),
            "userId": str(USER_1),
            "createdAfter": "2026-12-01T00:00:00Z",
        },
        lambda i: i % 2 == 0 and i % 5 == 0 and i % 3 == 0 and i % 4 == 0,
    ),
    "key and time range": (
        {
            "key_id": str(KEY_B),
            "created_after": "2026-12-01T04:00:00Z",
            "created_before": "2026-12-01T13:00:00Z",
        },
        {
            "keyId": str(KEY_B),
            "createdAfter": "2026-12-01T04:00:00Z",
            "createdBefore": "2026-12-01T13:00:00Z",
        },
        lambda i: i % 3 == 1 and 4 <= i < 13,
    ),
}


def test_the_seed_covers_what_the_text_cases_assume() -> None:
    # `"n": 1` is in the JSON text of {"n": 1} and {"n": 10} to {"n": 13}, and of nothing else.
    texts = {i: text_of(seeded_job(i).payload) for i in range(COUNT)}
    assert {i for i, text in texts.items() if '"n": 1' in text} == {1, 10, 11, 12, 13}


@pytest.mark.parametrize("limit", [1, 3, 100])
@pytest.mark.parametrize("name", list(CASES))
def test_each_filter_selects_its_jobs_newest_first_on_every_page(
    listing: tuple[httpx.Client, list[str]], name: str, limit: int
) -> None:
    http, ids = listing
    params, _, wanted = CASES[name]
    expected = [ids[i] for i in reversed(range(COUNT)) if wanted(i)]
    assert rest_walk(http, params, limit) == expected


@pytest.mark.parametrize("name", list(CASES))
def test_graphql_filters_select_the_same_jobs(listing: tuple[httpx.Client, list[str]], name: str) -> None:
    http, _ = listing
    params, where, _ = CASES[name]
    assert gql_walk(http, where, 2) == rest_walk(http, params, 2)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"key_id": "someone"}, "key_id"),
        ({"key_id": "static:abc"}, "key_id"),
        ({"key_id": f"key:{KEY_A}x"}, "key_id"),
        ({"user_id": "not-a-uuid"}, "user_id"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_after": "1764547200"}, "created_after"),  # a Unix time, not ISO-8601
        ({"created_after": "2026-13-01T00:00:00Z"}, "created_after"),
        ({"created_before": "2026-12-01"}, "created_before"),  # a day is not a time
        ({"created_before": "9999-12-31T23:00:00-05:00"}, "created_before"),
        ({"text": ""}, "text"),
        ({"text": "x" * 201}, "text"),
    ],
)
def test_malformed_filters_are_refused_naming_the_field(
    listing: tuple[httpx.Client, list[str]], params: dict[str, str], field: str
) -> None:
    http, _ = listing
    body = assert_error(http.get("/api/v1/jobs", params=params), 400, "invalid_request", field=field)
    assert field in body["message"]


def test_a_text_of_two_hundred_characters_is_taken(listing: tuple[httpx.Client, list[str]]) -> None:
    http, _ = listing
    response = http.get("/api/v1/jobs", params={"text": "x" * 200})
    assert response.status_code == 200, response.text
    assert response.json()["jobs"] == []


@pytest.mark.parametrize(
    "where", [{"keyId": "someone"}, {"userId": "nope"}, {"text": ""}, {"createdAfter": "yesterday"}]
)
def test_graphql_refuses_the_same_malformed_filters(
    listing: tuple[httpx.Client, list[str]], where: dict[str, Any]
) -> None:
    http, _ = listing
    assert gql_error_code(gql(http, JOBS_QUERY, {"f": where, "n": 5})) == "BAD_USER_INPUT"
