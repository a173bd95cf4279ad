"""A key's limits, set and lifted on every surface: PATCH /api/v1/keys/<id>, the `updateApiKey`
mutation and `levqor keys update`, over one resolver; bad input refused alike; the key's rate
enforced on intake at once (429 with the limit headers), in memory and in Redis."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import LiveServer
from tests.e2e.test_cli import clean_env

ADMIN = "static-limits-admin-key-0123456789"
UPDATE = (
    "mutation($id: ID!, $input: UpdateApiKeyInput!) { updateApiKey(id: $id, input: $input) "
    "{ apiKey { id rateLimit maxRunning } userErrors { field code message } } }"
)


def _admin(live: LiveServer) -> httpx.Client:
    return live.client(headers={"X-Api-Key": ADMIN})


def _new_key(http: httpx.Client, **extra: Any) -> dict[str, Any]:
    made = http.post("/api/v1/keys", json={"name": "limits", "scopes": ["jobs:write", "jobs:read"], **extra})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


def _gql(http: httpx.Client, key_id: str, data: dict[str, Any]) -> dict[str, Any]:
    answer = http.post("/graphql", json={"query": UPDATE, "variables": {"id": key_id, "input": data}})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"SQLITE_PATH": make_url(db_url).database or ""} if db_url.startswith("sqlite") else {}
    if not db_url.startswith("sqlite"):
        env["LEVQOR_DATABASE_URL"] = db_url
    return subprocess.run(
        [sys.executable, "-m", "levqor", "keys", *args],
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_patch_sets_and_lifts_both_limits_and_listings_show_them(
    make_server: Callable[..., LiveServer],
) -> None:
    live = make_server(API_KEYS=ADMIN)
    with _admin(live) as http:
        made = _new_key(http, max_running=3)
        key_id = made["key"]["id"]
        assert made["key"]["max_running"] == 3
        patched = http.patch(f"/api/v1/keys/{key_id}", json={"rate_limit": 120, "max_running": 2})
        assert patched.status_code == 200, patched.text
        assert (patched.json()["key"]["rate_limit"], patched.json()["key"]["max_running"]) == (120, 2)
        # A field left out is kept; null lifts it.
        kept = http.patch(f"/api/v1/keys/{key_id}", json={"max_running": None})
        assert (kept.json()["key"]["rate_limit"], kept.json()["key"]["max_running"]) == (120, None)
        listed = {key["id"]: key for key in http.get("/api/v1/keys").json()["keys"]}
        assert (listed[key_id]["rate_limit"], listed[key_id]["max_running"]) == (120, None)
        gql = http.post("/graphql", json={"query": "{ apiKeys { id rateLimit maxRunning } }"}).json()
        assert {"id": key_id, "rateLimit": 120, "maxRunning": None} in gql["data"]["apiKeys"]


def test_the_mutation_and_the_route_agree(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(API_KEYS=ADMIN)
    with _admin(live) as http:
        by_rest, by_graphql = _new_key(http)["key"]["id"], _new_key(http)["key"]["id"]
        for change in ({"rate_limit": 30, "max_running": 4}, {"rate_limit": None}, {"max_running": None}):
            rest = http.patch(f"/api/v1/keys/{by_rest}", json=change).json()["key"]
            camel = {
                "rateLimit" if name == "rate_limit" else "maxRunning": value for name, value in change.items()
            }
            graphql = _gql(http, by_graphql, camel)["data"]["updateApiKey"]
            assert graphql["userErrors"] == []
            assert (graphql["apiKey"]["rateLimit"], graphql["apiKey"]["maxRunning"]) == (
                rest["rate_limit"],
                rest["max_running"],
            )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_running": 0}, "max_running"),
        ({"max_running": -1}, "max_running"),
        ({"max_running": "2"}, "max_running"),
        ({"max_running": 2.5}, "max_running"),
        ({"max_running": True}, "max_running"),
        ({"max_running": 10**12}, "max_running"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"rate_limit": 10**7}, "rate_limit"),
        ({"rate_limit": "fast"}, "rate_limit"),
        ({"scopes": ["admin"]}, "scopes"),
        ({}, None),
    ],
)
def test_bad_input_is_a_400_on_both_surfaces(
    make_server: Callable[..., LiveServer], body: dict[str, Any], field: str | None
) -> None:
    live = make_server(API_KEYS=ADMIN)
    with _admin(live) as http:
        key_id = _new_key(http, max_running=5)["key"]["id"]
        answer = http.patch(f"/api/v1/keys/{key_id}", json=body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"] == "invalid_request"
        if field is not None:
            assert answer.json()["details"][0]["field"] == field
        # GraphQL: a wrong type is the document's error; a wrong value the resolver's userError.
        camel = {
            "rateLimit" if k == "rate_limit" else "maxRunning" if k == "max_running" else k: v
            for k, v in body.items()
        }
        graphql = http.post(
            "/graphql", json={"query": UPDATE, "variables": {"id": key_id, "input": camel}}
        ).json()
        if "errors" in graphql:
            assert graphql["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
        else:
            errors = graphql["data"]["updateApiKey"]["userErrors"]
            assert errors, graphql
            assert errors[0]["code"] != "INTERNAL_SERVER_ERROR"
        # Nothing changed.
        listed = {key["id"]: key for key in http.get("/api/v1/keys").json()["keys"]}
        assert listed[key_id]["max_running"] == 5


def test_unknown_and_malformed_ids_are_404(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(API_KEYS=ADMIN)
    with _admin(live) as http:
        for key_id in (str(uuid.uuid4()), "not-a-uuid"):
            answer = http.patch(f"/api/v1/keys/{key_id}", json={"max_running": 2})
            assert answer.status_code == 404, answer.text
            assert answer.json()["error"] == "not_found"
            errors = _gql(http, key_id, {"maxRunning": 2})["data"]["updateApiKey"]["userErrors"]
            assert errors[0]["code"] == "NOT_FOUND"


def test_only_admin_may_change_limits(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(API_KEYS=ADMIN)
    with _admin(live) as http:
        made = _new_key(http)
    with live.client(headers={"X-Api-Key": made["secret"]}) as own:
        # Not even its own limits.
        answer = own.patch(f"/api/v1/keys/{made['key']['id']}", json={"max_running": None})
        assert answer.status_code == 403
        graphql = own.post(
            "/graphql",
            json={"query": UPDATE, "variables": {"id": made["key"]["id"], "input": {"rateLimit": 9}}},
        ).json()
        codes = [error["extensions"]["code"] for error in graphql.get("errors", [])]
        if graphql.get("data") and graphql["data"]["updateApiKey"]:
            codes += [error["code"] for error in graphql["data"]["updateApiKey"]["userErrors"]]
        assert codes == ["FORBIDDEN"], graphql
    with live.client() as anonymous:
        assert (
            anonymous.patch(f"/api/v1/keys/{made['key']['id']}", json={"max_running": 1}).status_code == 401
        )


def test_the_command_line_sets_lifts_and_refuses(make_server: Callable[..., LiveServer], db_url: str) -> None:
    live = make_server(API_KEYS=ADMIN)
    with _admin(live) as http:
        key_id = _new_key(http)["key"]["id"]
        done = _cli(db_url, "update", key_id, "--max-running", "2", "--rate-limit", "90")
        assert done.returncode == 0, done.stderr
        assert "90 requests/min" in done.stderr
        assert "at most 2 running" in done.stderr
        listed = {key["id"]: key for key in http.get("/api/v1/keys").json()["keys"]}
        assert (listed[key_id]["rate_limit"], listed[key_id]["max_running"]) == (90, 2)
        listing = _cli(db_url, "list")
        assert "MAX RUNNING" in listing.stdout
        assert "90/min" in listing.stdout
        lifted = _cli(db_url, "update", key_id, "--max-running", "none")
        assert lifted.returncode == 0, lifted.stderr
        listed = {key["id"]: key for key in http.get("/api/v1/keys").json()["keys"]}
        assert (listed[key_id]["rate_limit"], listed[key_id]["max_running"]) == (90, None)
    for args, says in (
        (("--max-running", "0"), "max_running"),
        (("--max-running", "lots"), "max_running"),
        (("--rate-limit", "-5"), "rate_limit"),
        ((), "at least one"),
    ):
        refused = _cli(db_url, "update", key_id, *args)
        assert refused.returncode != 0
        assert says in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    missing = _cli(db_url, "update", str(uuid.uuid4()), "--max-running", "1")
    assert missing.returncode != 0
    assert "no API key" in missing.stderr


def _intake(http: httpx.Client, secret: str) -> httpx.Response:
    return http.post(
        "/api/v1/intake", json={"workflow": "echo", "payload": {}}, headers={"X-Api-Key": secret}
    )


def test_a_rate_limit_set_later_holds_on_intake_at_once(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(API_KEYS=ADMIN, LEVQOR_RATE_KEY="1000/minute")
    with _admin(live) as admin, live.client() as http:
        made = _new_key(admin)
        assert [_intake(http, made["secret"]).status_code for _ in range(4)] == [202] * 4
        assert admin.patch(f"/api/v1/keys/{made['key']['id']}", json={"rate_limit": 5}).status_code == 200
        answers = [_intake(http, made["secret"]) for _ in range(6)]
        # The new limit counts from its own window: five more, then 429.
        assert [a.status_code for a in answers] == [202] * 5 + [429]
        refused = answers[-1]
        assert refused.json()["error"] == "rate_limited"
        assert refused.headers["RateLimit-Limit"] == "5"
        assert refused.headers["RateLimit-Remaining"] == "0"
        assert int(refused.headers["Retry-After"]) >= 1
        # Lifted: the server's per-key default again.
        assert admin.patch(f"/api/v1/keys/{made['key']['id']}", json={"rate_limit": None}).status_code == 200
        again = _intake(http, made["secret"])
        assert again.status_code == 202
        assert again.headers["RateLimit-Limit"] == "1000"


def test_the_key_rate_is_shared_through_redis_by_two_servers(
    make_server: Callable[..., LiveServer], redis_url: str, redis_prefix: str
) -> None:
    env = {"API_KEYS": ADMIN, "LEVQOR_RATE_STORAGE": redis_url, "LEVQOR_RATE_KEY_PREFIX": redis_prefix}
    first, second = make_server(**env), make_server(**env)
    with _admin(first) as admin:
        made = _new_key(admin, rate_limit=4)
    with first.client() as one, second.client() as two:
        statuses = [_intake(http, made["secret"]).status_code for http in (one, two, one, two, one, two)]
    assert statuses == [202, 202, 202, 202, 429, 429]
