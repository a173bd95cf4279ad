"""Managed API keys end to end: the admin routes, their GraphQL twins and the CLI; revocation and expiry
in every process; development mode and its end; production's refusal to start without a key or
without a session secret."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.engine import make_url
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from levqor.config import Settings
from levqor.db.engine import Database
from levqor.db.models import ApiKey
from levqor.errors import Unauthorized
from levqor.resolvers.auth import Authenticator, static_principal
from tests.conftest import LiveServer, free_port

ADMIN = "static-admin-key-for-tests"


def db_env(db_url: str) -> dict[str, str]:
    if db_url.startswith("sqlite"):
        return {"SQLITE_PATH": make_url(db_url).database or "", "LEVQOR_DATABASE_URL": ""}
    return {"LEVQOR_DATABASE_URL": db_url}


def levqor(db_url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "API_KEYS": "", "LEVQOR_ENV": "development", **db_env(db_url), **env}
    return subprocess.run(
        [sys.executable, "-m", "levqor", *args], env=full_env, capture_output=True, text=True, timeout=120
    )


def create_key(http: httpx.Client, scopes: list[str], **extra: str) -> dict[str, object]:
    response = http.post(
        "/api/v1/keys", json={"name": "test", "scopes": scopes, **extra}, headers={"X-Api-Key": ADMIN}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_create_list_revoke_over_rest(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(API_KEYS=ADMIN)
    with live.client() as http:
        created = create_key(http, ["jobs:write", "jobs:read", "jobs:write"])
        secret = str(created["secret"])
        key = dict(created["key"])
        assert secret.startswith("lvq_")
        assert len(secret) >= 36
        assert key["scopes"] == ["jobs:read", "jobs:write"]
        assert key["prefix"] == secret[:12]
        assert key["active"] is True
        assert "secret_hash" not in key
        assert secret not in str(key)

        intake = {"workflow": "echo", "payload": {}}
        assert http.post("/api/v1/intake", json=intake, headers={"X-Api-Key": secret}).status_code == 202

        listing = http.get("/api/v1/keys", headers={"X-Api-Key": ADMIN})
        assert listing.status_code == 200
        assert [item["id"] for item in listing.json()["keys"]] == [key["id"]]
        assert secret not in listing.text
        assert secret[12:] not in listing.text
        assert listing.json()["keys"][0]["last_used_at"] is not None  # it was used just now

        revoked = http.delete(f"/api/v1/keys/{key['id']}", headers={"X-Api-Key": ADMIN})
        assert revoked.status_code == 200
        assert revoked.json()["key"]["active"] is False
        refused = http.post("/api/v1/intake", json=intake, headers={"Authorization": f"Bearer {secret}"})
        assert refused.status_code == 401
        assert refused.json()["error"] == "unauthorized"
        assert "revoked" in refused.json()["message"]
        # Revoking again changes nothing; an unknown id is 404.
        again = http.delete(f"/api/v1/keys/{key['id']}", headers={"X-Api-Key": ADMIN})
        assert again.status_code == 200
        assert again.json()["key"]["revoked_at"] == revoked.json()["key"]["revoked_at"]
        for missing in (str(uuid.uuid4()), "not-a-uuid"):
            gone = http.delete(f"/api/v1/keys/{missing}", headers={"X-Api-Key": ADMIN})
            assert gone.status_code == 404
            assert gone.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": ["jobs:read", "root"]}, "scopes"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": " ", "scopes": ["admin"]}, "name"),
        ({"name": "x", "scopes": "admin"}, "scopes"),
        ({"name": "x", "scopes": ["admin"], "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "x", "scopes": ["admin"], "expires_at": "soon"}, "expires_at"),
        ({"name": "x", "scopes": ["admin"], "secret": "lvq_mine"}, "secret"),
    ],
)
def test_create_refuses_bad_input(
    make_server: Callable[..., LiveServer], body: dict[str, object], field: str
) -> None:
    live = make_server(API_KEYS=ADMIN)
    with live.client() as http:
        response = http.post("/api/v1/keys", json=body, headers={"X-Api-Key": ADMIN})
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_request"
        assert response.json()["details"][0]["field"].startswith(field)


def test_graphql_twins_match_rest(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(API_KEYS=ADMIN)
    headers = {"X-Api-Key": ADMIN}
    with live.client() as http:
        created = http.post(
            "/graphql",
            headers=headers,
            json={
                "query": "mutation($in: CreateApiKeyInput!) { createApiKey(input: $in) "
                "{ secret apiKey { id name scopes prefix active expiresAt } userErrors { field code } } }",
                "variables": {
                    "in": {"name": "gql", "scopes": ["worker"], "expiresAt": "2999-01-01T00:00:00Z"}
                },
            },
        ).json()["data"]["createApiKey"]
        assert created["userErrors"] == []
        secret, key = created["secret"], created["apiKey"]
        assert secret.startswith("lvq_")
        assert key["scopes"] == ["worker"]
        assert key["active"] is True

        rest = http.get("/api/v1/keys", headers=headers).json()["keys"]
        query = "{ apiKeys { id name prefix scopes } }"
        listed = http.post("/graphql", headers=headers, json={"query": query})
        assert listed.json()["data"]["apiKeys"] == [
            {"id": item["id"], "name": item["name"], "prefix": item["prefix"], "scopes": item["scopes"]}
            for item in rest
        ]
        assert secret not in listed.text

        bad = http.post(
            "/graphql",
            headers=headers,
            json={
                "query": 'mutation { createApiKey(input: {name: "b", scopes: ["nope"]}) '
                "{ apiKey { id } userErrors { field code } } }"
            },
        ).json()["data"]["createApiKey"]
        assert bad["apiKey"] is None
        assert bad["userErrors"][0] == {"field": "scopes", "code": "invalid"}

        revoked = http.post(
            "/graphql",
            headers=headers,
            json={
                "query": "mutation($id: ID!) { revokeApiKey(id: $id) { apiKey { active revokedAt } } }",
                "variables": {"id": key["id"]},
            },
        ).json()["data"]["revokeApiKey"]["apiKey"]
        assert revoked["active"] is False
        assert revoked["revokedAt"]
        refused = http.post("/graphql", headers={"X-Api-Key": secret}, json={"query": "{ health { ok } }"})
        assert refused.status_code == 401
        assert refused.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_revocation_and_expiry_hold_in_every_process(
    make_server: Callable[..., LiveServer], db: Database
) -> None:
    first, second = make_server(API_KEYS=ADMIN), make_server(API_KEYS=ADMIN)
    with first.client() as one, second.client() as two:
        revoking = create_key(one, ["jobs:read"])
        expiring = create_key(one, ["jobs:read"])
        for key in (revoking, expiring):
            assert two.get("/api/v1/jobs", headers={"X-Api-Key": str(key["secret"])}).status_code == 200

        revoke_url = f"/api/v1/keys/{revoking['key']['id']}"
        assert one.delete(revoke_url, headers={"X-Api-Key": ADMIN}).status_code == 200
        past = datetime.now(UTC) - timedelta(seconds=1)
        expired_id = uuid.UUID(str(expiring["key"]["id"]))
        db.write_sync(
            lambda session: session.execute(
                update(ApiKey).where(ApiKey.id == expired_id).values(expires_at=past)
            )
        )
        # The very next request, on the other server, is refused: no cache to wait out.
        for key, why in ((revoking, "revoked"), (expiring, "expired")):
            response = two.get("/api/v1/jobs", headers={"X-Api-Key": str(key["secret"])})
            assert response.status_code == 401
            assert why in response.json()["message"]
            # Even a public route refuses a bad key, so the client learns of it at once.
            assert two.get("/health", headers={"X-Api-Key": str(key["secret"])}).status_code == 401


def test_dev_mode_until_a_key_is_made_by_the_admin_route(make_server: Callable[..., LiveServer]) -> None:
    live = make_server()
    with live.client() as http:
        intake = {"workflow": "echo", "payload": {}}
        assert http.post("/api/v1/intake", json=intake).status_code == 202
        assert http.get("/api/v1/ops/health").status_code == 200
        # Any key is ignored in development mode, as in the seed.
        assert http.post("/api/v1/intake", json=intake, headers={"X-Api-Key": "whatever"}).status_code == 202

        made = http.post("/api/v1/keys", json={"name": "first", "scopes": ["admin", "jobs:write"]})
        assert made.status_code == 201
        # Development mode is over at once: no key is now 401, and the new key works.
        assert http.post("/api/v1/intake", json=intake).status_code == 401
        assert http.post("/api/v1/intake", json=intake, headers={"X-Api-Key": "whatever"}).status_code == 401
        secret = made.json()["secret"]
        assert http.post("/api/v1/intake", json=intake, headers={"X-Api-Key": secret}).status_code == 202
        # Public routes stay public.
        assert http.get("/health").status_code == 200


def test_dev_mode_ends_after_levqor_keys_create(make_server: Callable[..., LiveServer], db_url: str) -> None:
    live = make_server()
    with live.client() as http:
        assert http.get("/api/v1/jobs").status_code == 200  # development mode

        made = levqor(db_url, "keys", "create", "--name", "ops", "--scopes", "jobs:read,admin")
        assert made.returncode == 0, made.stderr
        # Secrets only on stdout, one a line: the key's, then its webhook secret.
        secret, webhook_secret = made.stdout.splitlines()
        assert secret.startswith("lvq_")
        assert webhook_secret.startswith("whsec_")
        assert "shown this once" in made.stderr

        # A request with the new key ends development mode in this process at once...
        assert http.get("/api/v1/jobs", headers={"X-Api-Key": secret}).status_code == 200
        assert http.get("/api/v1/jobs").status_code == 401

    # ...and in a server that has not seen a keyed request, for the very next request too.
    other = make_server()
    with other.client() as http:
        assert http.get("/api/v1/jobs").status_code == 401


def test_cli_lists_and_revokes_without_showing_secrets(db_url: str) -> None:
    made = levqor(
        db_url,
        "keys",
        "create",
        "--name",
        "cli key",
        "--scopes",
        "worker",
        "--expires-at",
        "2999-01-01T00:00:00",
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.splitlines()[0]

    listing = levqor(db_url, "keys", "list")
    assert listing.returncode == 0, listing.stderr
    assert "cli key" in listing.stdout
    assert "active" in listing.stdout
    assert secret[:12] in listing.stdout
    assert secret not in listing.stdout + listing.stderr
    key_id = next(line.split()[0] for line in listing.stdout.splitlines() if "cli key" in line)

    revoked = levqor(db_url, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in levqor(db_url, "keys", "list").stdout

    unknown = levqor(db_url, "keys", "revoke", str(uuid.uuid4()))
    assert unknown.returncode != 0
    assert "no API key" in unknown.stderr
    bad = levqor(db_url, "keys", "create", "--name", "x", "--scopes", "everything")
    assert bad.returncode != 0
    assert "unknown scope" in bad.stderr


def test_production_refuses_to_start_without_an_active_key(db_url: str, tmp_path: Path) -> None:
    env = {"LEVQOR_ENV": "production", "PORT": str(free_port()), "LEVQOR_HOST": "127.0.0.1"}
    refused = levqor(db_url, "serve", **env)
    assert refused.returncode != 0
    assert "needs an API key" in refused.stderr

    made = levqor(db_url, "keys", "create", "--name", "only", "--scopes", "admin")
    key_id = levqor(db_url, "keys", "list").stdout.splitlines()[1].split()[0]
    assert levqor(db_url, "keys", "revoke", key_id).returncode == 0
    still_refused = levqor(db_url, "serve", **env)  # a revoked key is no key
    assert still_refused.returncode != 0
    assert "needs an API key" in still_refused.stderr

    made = levqor(db_url, "keys", "create", "--name", "live", "--scopes", "admin,jobs:write")
    secret = made.stdout.splitlines()[0]
    log = tmp_path / "prod.log"
    from tests.conftest import start_server_process, stop_server_process

    no_session_secret = levqor(db_url, "serve", **env)
    assert no_session_secret.returncode != 0
    assert "needs LEVQOR_SESSION_SECRET" in no_session_secret.stderr

    production = {"LEVQOR_ENV": "production", "LEVQOR_SESSION_SECRET": "s" * 32, "API_KEYS": ""}
    proc = start_server_process({**production, **db_env(db_url)}, log)
    try:
        with httpx.Client(base_url=proc.url) as http:
            assert http.get("/api/v1/ops/health").status_code == 401
            assert http.get("/api/v1/ops/health", headers={"X-Api-Key": secret}).status_code == 200
            # /_dev/ does not exist in production, not even for a key with every scope.
            dev = http.post(f"/api/v1/_dev/complete/{uuid.uuid4()}", json={}, headers={"X-Api-Key": secret})
            assert dev.status_code == 404
    finally:
        stop_server_process(proc)


def test_websocket_handshake_needs_a_good_key(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(API_KEYS=ADMIN)
    url = live.url.replace("http://", "ws://") + "/graphql"
    with pytest.raises(InvalidStatus) as refused:
        connect(url, subprotocols=["graphql-transport-ws"], additional_headers={"X-Api-Key": "wrong"})
    assert refused.value.response.status_code == 403
    with connect(url, subprotocols=["graphql-transport-ws"], additional_headers={"X-Api-Key": ADMIN}) as ws:
        assert ws.subprotocol == "graphql-transport-ws"


def test_concurrent_requests_each_get_their_own_keys_answer(make_server: Callable[..., LiveServer]) -> None:
    """Look-ups of concurrent requests share one read: each request must still get the answer for the
    key it sent (valid, revoked, unknown, a scope it lacks), and a revocation holds at once."""
    live = make_server(API_KEYS=ADMIN)
    with live.client() as http:
        reader = str(create_key(http, ["jobs:read"])["secret"])
        writer = str(create_key(http, ["jobs:write"])["secret"])
        gone = create_key(http, ["jobs:read"])
        assert http.delete(f"/api/v1/keys/{dict(gone['key'])['id']}", headers={"X-Api-Key": ADMIN}).is_success
    unknown = "lvq_" + "x" * 43
    want = {reader: 200, writer: 403, str(gone["secret"]): 401, unknown: 401}
    sent = [key for _ in range(20) for key in want]

    async def fire() -> list[int]:
        async with httpx.AsyncClient(base_url=live.url, timeout=30) as client:
            responses = await asyncio.gather(
                *(client.get("/api/v1/jobs", headers={"X-Api-Key": key}) for key in sent)
            )
        return [response.status_code for response in responses]

    assert asyncio.run(fire()) == [want[key] for key in sent]
    with live.client() as http:
        # The reader's revocation holds on the very next request.
        listing = http.get("/api/v1/keys", headers={"X-Api-Key": ADMIN}).json()["keys"]
        reader_id = next(item["id"] for item in listing if item["prefix"] == reader[:12])
        assert next(item for item in listing if item["id"] == reader_id)["last_used_at"] is not None
        assert http.delete(f"/api/v1/keys/{reader_id}", headers={"X-Api-Key": ADMIN}).is_success
        assert http.get("/api/v1/jobs", headers={"X-Api-Key": reader}).status_code == 401


async def test_static_keys_met_before_are_known_by_their_exact_text_only(db: Database) -> None:
    """A static key that matched once is found again without hashing it; nothing but its exact text
    finds it, and the keys seen never outnumber the static keys configured."""
    settings = Settings.from_env({"API_KEYS": "first-static-key,second-static-key"}, env_file=None)
    authenticator = Authenticator(db, settings)
    first, second = (static_principal(key) for key in settings.api_keys)
    near_misses = ["first-static-key-", "first-static-ke", "FIRST-STATIC-KEY", "second-static-key\x00"]
    for _ in range(3):
        assert await authenticator.authenticate("first-static-key") == first
        assert await authenticator.authenticate("second-static-key") == second
        for guess in near_misses:
            with pytest.raises(Unauthorized):
                await authenticator.authenticate(guess)
    assert first.key_id != second.key_id
    assert set(authenticator._static_seen) == {"first-static-key", "second-static-key"}
