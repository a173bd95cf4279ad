"""Each managed API key's webhook secret (issue 11): made with the key and shown once on REST, GraphQL
and the command line; rotated with an overlap in which both secrets sign; the secrets a callback is
signed with (`signing_secrets`) and whether a caller's callbacks can be signed at all (`can_sign`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlmodel import Session, col
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from levqor.callbacks.secrets import can_sign, signing_secrets
from levqor.config import DEFAULT_WEBHOOK_OVERLAP_S, Settings
from levqor.db.engine import Database
from levqor.db.models import ApiKey
from levqor.resolvers.auth import Authenticator, static_principal
from levqor.resolvers.context import DEV_PRINCIPAL, Context
from levqor.resolvers.keys import create_api_key, new_webhook_secret
from tests.conftest import LiveServer, settings_for, start_server_process, stop_server_process
from tests.integration.test_auth_keys import levqor
from tests.support import assert_error, gql, gql_data

ADMIN = "static-admin-key-for-webhook-tests"
CONFIG_SECRET = new_webhook_secret()  # LEVQOR_WEBHOOK_SECRET where a test sets it
BODY = b'{"type":"job.succeeded","timestamp":"2026-12-03T10:00:00Z","data":{"job_id":"j"}}'

CREATE = """mutation($in: CreateApiKeyInput!) { createApiKey(input: $in) {
  secret webhookSecret apiKey { id hasWebhookSecret webhookSecretPreviousUntil }
  userErrors { field code } } }"""
ROTATE = """mutation($id: ID!, $o: Int) { rotateWebhookSecret(id: $id, overlapS: $o) {
  webhookSecret apiKey { id active hasWebhookSecret webhookSecretPreviousUntil }
  userErrors { field message code } } }"""
ROTATE_DEFAULT = """mutation($id: ID!) { rotateWebhookSecret(id: $id) {
  webhookSecret apiKey { webhookSecretPreviousUntil } userErrors { field code } } }"""


def as_admin(live: LiveServer) -> httpx.Client:
    return live.client(headers={"X-Api-Key": ADMIN})


def create_key(http: httpx.Client, scopes: list[str] | None = None) -> dict[str, Any]:
    response = http.post("/api/v1/keys", json={"name": "hooks", "scopes": scopes or ["jobs:write"]})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def rotate(http: httpx.Client, key_id: str, body: Any = None) -> httpx.Response:
    if body is None:
        return http.post(f"/api/v1/keys/{key_id}/webhook-secret")
    return http.post(f"/api/v1/keys/{key_id}/webhook-secret", json=body)


def secrets_now(db: Database, key_id: str, settings: Settings, now: datetime | None = None) -> list[str]:
    at = now or datetime.now(UTC)
    return db.read_sync(lambda session: signing_secrets(session, f"key:{key_id}", settings, at))


def set_key_columns(db: Database, key_id: str, **values: Any) -> None:
    """Change a key's row behind the API's back, as time or an older release would have left it."""
    statement = update(ApiKey).where(col(ApiKey.id) == uuid.UUID(key_id)).values(**values)
    db.write_sync(lambda session: session.execute(statement))


def instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def spec_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """A `webhook-signature` entry as the Standard Webhooks spec defines it, computed by hand: the
    HMAC-SHA256, keyed with the base64-decoded part after `whsec_`, of `id.timestamp.body`."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secrets: list[str], msg_id: str = "msg_2b7a") -> dict[str, str]:
    """The headers of a callback signed with every one of `secrets`, space-separated as the spec allows."""
    timestamp = int(datetime.now(UTC).timestamp())
    signatures = " ".join(spec_signature(secret, msg_id, timestamp, BODY) for secret in secrets)
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signatures}


def verifies(secret: str, headers: dict[str, str]) -> bool:
    try:
        Webhook(secret).verify(BODY, headers)
    except WebhookVerificationError:
        return False
    return True


def assert_whsec(secret: object) -> str:
    assert isinstance(secret, str)
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    return secret


# --- made with the key, shown once -------------------------------------------------------------


def test_create_answers_the_webhook_secret_once_and_it_signs(
    make_server: Callable[..., LiveServer], db: Database
) -> None:
    live = make_server(API_KEYS=ADMIN)
    with as_admin(live) as http:
        created = create_key(http)
        key, webhook_secret = created["key"], assert_whsec(created["webhook_secret"])
        assert created["webhook_secret"] != created["secret"]
        assert key["has_webhook_secret"] is True
        assert key["webhook_secret_previous_until"] is None
        # The secret is what the configuration accepts as LEVQOR_WEBHOOK_SECRET too.
        assert (
            Settings.from_mapping({"LEVQOR_WEBHOOK_SECRET": webhook_secret}).webhook_secret == webhook_secret
        )

        listing = http.get("/api/v1/keys")
        assert listing.status_code == 200
        [listed] = listing.json()["keys"]
        assert listed["id"] == key["id"]
        assert listed["has_webhook_secret"] is True
        base64_part = webhook_secret.removeprefix("whsec_")
        assert base64_part not in listing.text
        assert "whsec_" not in listing.text
        revoked = http.delete(f"/api/v1/keys/{key['id']}")
        assert revoked.status_code == 200
        assert base64_part not in revoked.text

    # It is the secret that signs the key's callbacks; its signature verifies with the library.
    [signing] = secrets_now(db, key["id"], live.settings)
    assert signing == webhook_secret
    headers = signed_headers([signing])
    assert Webhook(webhook_secret).verify(BODY, headers) == {
        "type": "job.succeeded",
        "timestamp": "2026-12-03T10:00:00Z",
        "data": {"job_id": "j"},
    }
    assert not verifies(new_webhook_secret(), headers)


def test_graphql_creates_and_rotates_as_rest_does(
    make_server: Callable[..., LiveServer], db: Database
) -> None:
    live = make_server(API_KEYS=ADMIN)
    with as_admin(live) as http:
        created = gql_data(http, CREATE, {"in": {"name": "gql", "scopes": ["jobs:write"]}})["createApiKey"]
        assert created["userErrors"] == []
        first = assert_whsec(created["webhookSecret"])
        key_id = created["apiKey"]["id"]
        assert created["apiKey"]["hasWebhookSecret"] is True
        assert created["apiKey"]["webhookSecretPreviousUntil"] is None
        listed = http.post(
            "/graphql", json={"query": "{ apiKeys { id hasWebhookSecret webhookSecretPreviousUntil } }"}
        )
        assert listed.json()["data"]["apiKeys"] == [created["apiKey"]]
        assert first.removeprefix("whsec_") not in listed.text

        before = datetime.now(UTC)
        rotated = gql_data(http, ROTATE, {"id": key_id, "o": 120})["rotateWebhookSecret"]
        assert rotated["userErrors"] == []
        second = assert_whsec(rotated["webhookSecret"])
        assert second != first
        until = instant(rotated["apiKey"]["webhookSecretPreviousUntil"])
        assert before + timedelta(seconds=120) <= until <= datetime.now(UTC) + timedelta(seconds=120)
        assert secrets_now(db, key_id, live.settings) == [second, first]

        # The same key as REST shows it.
        [rest] = http.get("/api/v1/keys").json()["keys"]
        assert rest["has_webhook_secret"] is True
        assert instant(rest["webhook_secret_previous_until"]) == until
        assert second.removeprefix("whsec_") not in http.get("/api/v1/keys").text

        # Without overlapS, the default overlap.
        before = datetime.now(UTC)
        third = gql_data(http, ROTATE_DEFAULT, {"id": key_id})["rotateWebhookSecret"]
        until = instant(third["apiKey"]["webhookSecretPreviousUntil"])
        overlap = timedelta(seconds=DEFAULT_WEBHOOK_OVERLAP_S)
        assert before + overlap <= until <= datetime.now(UTC) + overlap
        assert secrets_now(db, key_id, live.settings) == [third["webhookSecret"], second]


def test_graphql_refusals_match_rest(make_server: Callable[..., LiveServer]) -> None:
    live = make_server(API_KEYS=ADMIN)
    with as_admin(live) as http:
        made = create_key(http)
        key_id = made["key"]["id"]
        cases: list[tuple[str, Any, int, str | None, str]] = [
            (str(uuid.uuid4()), None, 404, None, "NOT_FOUND"),
            ("not-a-uuid", None, 404, None, "NOT_FOUND"),
            (key_id, -1, 400, "overlap_s", "out_of_range"),
            (key_id, 604801, 400, "overlap_s", "out_of_range"),
        ]
        for target, overlap, status, field, code in cases:
            rest = rotate(http, target, None if overlap is None else {"overlap_s": overlap})
            body = assert_error(
                rest, status, "not_found" if status == 404 else "invalid_request", field=field
            )
            variables: dict[str, Any] = {"id": target} if overlap is None else {"id": target, "o": overlap}
            payload = gql_data(http, ROTATE, variables)["rotateWebhookSecret"]
            assert payload["apiKey"] is None
            assert payload["webhookSecret"] is None
            [error] = payload["userErrors"]
            assert (error["field"], error["code"]) == ("overlapS" if field else None, code)
            assert error["message"] == (body["details"][0]["message"] if field else body["message"])

        # A key without `admin` may not rotate: a GraphQL error, as REST's 403.
        writer = made["secret"]
        with live.client(headers={"X-Api-Key": writer}) as other:
            assert_error(rotate(other, key_id), 403, "forbidden")
            refused = gql(other, ROTATE, {"id": key_id})
            assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
            assert refused["data"] is None


# --- rotation ----------------------------------------------------------------------------------


def test_rotation_overlaps_then_only_the_new_secret_signs(
    make_server: Callable[..., LiveServer], db: Database
) -> None:
    live = make_server(API_KEYS=ADMIN)
    with as_admin(live) as http:
        created = create_key(http)
        key_id, old = created["key"]["id"], created["webhook_secret"]

        before = datetime.now(UTC)
        rotated = rotate(http, key_id, {"overlap_s": 3600})
        assert rotated.status_code == 200, rotated.text
        assert rotated.headers["cache-control"] == "no-store"
        new = assert_whsec(rotated.json()["webhook_secret"])
        assert new != old
        until = instant(rotated.json()["key"]["webhook_secret_previous_until"])
        assert before + timedelta(hours=1) <= until <= datetime.now(UTC) + timedelta(hours=1)
        [listed] = http.get("/api/v1/keys").json()["keys"]
        assert instant(listed["webhook_secret_previous_until"]) == until
        assert new.removeprefix("whsec_") not in str(listed)

    # During the overlap both sign: a receiver that still has the old secret verifies the callback,
    # and so does one that has the new.
    during = secrets_now(db, key_id, live.settings, until - timedelta(microseconds=1))
    assert during == [new, old]
    headers = signed_headers(during)
    assert verifies(old, headers)
    assert verifies(new, headers)
    # From `until` on, only the new one.
    for after in (until, until + timedelta(days=1)):
        assert secrets_now(db, key_id, live.settings, after) == [new]
    assert not verifies(old, signed_headers([new]))

    with as_admin(live) as http:
        # Overlap 0: the secret it replaces stops signing at once.
        newest = rotate(http, key_id, {"overlap_s": 0})
        assert newest.status_code == 200, newest.text
        assert newest.json()["key"]["webhook_secret_previous_until"] is None
        newest_secret = assert_whsec(newest.json()["webhook_secret"])
        assert secrets_now(db, key_id, live.settings) == [newest_secret]
        [listed] = http.get("/api/v1/keys").json()["keys"]
        assert listed["webhook_secret_previous_until"] is None

        # Rotating again within an overlap keeps only the secret it replaces.
        second = rotate(http, key_id).json()["webhook_secret"]
        third = rotate(http, key_id, {"overlap_s": 60.0}).json()["webhook_secret"]
        assert secrets_now(db, key_id, live.settings) == [third, second]


def test_rotation_refuses_bad_requests_and_changes_nothing(
    make_server: Callable[..., LiveServer], db: Database
) -> None:
    live = make_server(API_KEYS=ADMIN)
    with as_admin(live) as http:
        created = create_key(http)
        key_id = created["key"]["id"]
        before = secrets_now(db, key_id, live.settings)

        for body, field in [
            ({"overlap_s": -1}, "overlap_s"),
            ({"overlap_s": 604801}, "overlap_s"),
            ({"overlap_s": "60"}, "overlap_s"),
            ({"overlap_s": 1.5}, "overlap_s"),
            ({"overlap_s": True}, "overlap_s"),
            ({"overlap_s": None}, "overlap_s"),
            ({"overlap": 60}, "overlap"),
            ([60], None),
        ]:
            assert_error(rotate(http, key_id, body), 400, "invalid_request", field=field)
        not_json = http.post(f"/api/v1/keys/{key_id}/webhook-secret", content="overlap_s=60")
        assert_error(not_json, 415, "unsupported_media_type")
        for missing in (str(uuid.uuid4()), "not-a-uuid"):
            assert_error(rotate(http, missing), 404, "not_found")
        assert secrets_now(db, key_id, live.settings) == before

        # Only `admin` may rotate; without a key it is 401.
        with live.client(headers={"X-Api-Key": created["secret"]}) as writer:
            assert_error(rotate(writer, key_id), 403, "forbidden")
        with live.client() as anonymous:
            assert_error(rotate(anonymous, key_id), 401, "unauthorized")

        # A revoked key's secret is not rotated (409), and it still signs the callbacks of the jobs
        # the key submitted before.
        assert http.delete(f"/api/v1/keys/{key_id}").status_code == 200
        refused = assert_error(rotate(http, key_id, {"overlap_s": 0}), 409, "conflict")
        assert "revoked" in refused["message"]
        assert secrets_now(db, key_id, live.settings) == before

        # So is an expired key's.
        expiring = create_key(http)["key"]["id"]
        past = datetime.now(UTC) - timedelta(seconds=1)
        set_key_columns(db, expiring, expires_at=past)
        assert "expired" in assert_error(rotate(http, expiring), 409, "conflict")["message"]


def test_a_key_made_before_webhook_secrets_gets_its_first_by_rotation(
    make_server: Callable[..., LiveServer], db: Database
) -> None:
    live = make_server(API_KEYS=ADMIN, LEVQOR_WEBHOOK_SECRET=CONFIG_SECRET)
    with as_admin(live) as http:
        key_id = create_key(http)["key"]["id"]
        set_key_columns(db, key_id, webhook_secret=None)  # as migration 0005 left older keys
        [listed] = http.get("/api/v1/keys").json()["keys"]
        assert listed["has_webhook_secret"] is False
        # Until then, its callbacks are signed with the configured secret.
        assert secrets_now(db, key_id, live.settings) == [CONFIG_SECRET]

        rotated = rotate(http, key_id, {"overlap_s": 600})
        assert rotated.status_code == 200, rotated.text
        first = assert_whsec(rotated.json()["webhook_secret"])
        assert rotated.json()["key"]["has_webhook_secret"] is True
        # There was no previous secret of its own to keep signing.
        assert rotated.json()["key"]["webhook_secret_previous_until"] is None
        assert secrets_now(db, key_id, live.settings) == [first]


# --- signing_secrets and can_sign --------------------------------------------------------------


@pytest.mark.parametrize("configured", [None, CONFIG_SECRET])
def test_callers_without_a_key_secret_sign_with_the_configured_one(
    db: Database, db_url: str, configured: str | None
) -> None:
    # "" is unset: the test servers' default secret is not wanted here.
    settings = settings_for(db_url, LEVQOR_WEBHOOK_SECRET=configured or "")
    expected = [configured] if configured else []
    now = datetime.now(UTC)
    callers = ["dev", "static:0123456789ab", None, f"key:{uuid.uuid4()}", "key:not-a-uuid", "key:"]

    def read(session: Session) -> list[list[str]]:
        return [signing_secrets(session, signed_by, settings, now) for signed_by in callers]

    assert db.read_sync(read) == [expected] * len(callers)


async def test_the_authenticator_tells_can_sign_without_another_read(db: Database, db_url: str) -> None:
    """`can_sign` reads only the principal: what the authenticator loaded with the key says whether the
    key has a secret of its own; any other caller depends on LEVQOR_WEBHOOK_SECRET."""
    plain = settings_for(db_url, API_KEYS=ADMIN, LEVQOR_WEBHOOK_SECRET="")
    configured = settings_for(db_url, API_KEYS=ADMIN, LEVQOR_WEBHOOK_SECRET=CONFIG_SECRET)
    admin = Context(db=db, settings=plain, principal=static_principal(ADMIN))
    with_secret = await create_api_key(admin, {"name": "with", "scopes": ["jobs:write"]})
    without_secret = await create_api_key(admin, {"name": "without", "scopes": ["jobs:write"]})
    set_key_columns(db, str(without_secret.key.id), webhook_secret=None)
    authenticator = Authenticator(db, plain)
    keyed = await authenticator.authenticate(with_secret.secret)
    unkeyed = await authenticator.authenticate(without_secret.secret)
    static = await authenticator.authenticate(ADMIN)
    assert keyed.id == f"key:{with_secret.key.id}"
    assert (keyed.has_webhook_secret, unkeyed.has_webhook_secret, static.has_webhook_secret) == (
        True,
        False,
        False,
    )
    assert static == static_principal(ADMIN)
    assert [can_sign(p, plain) for p in (keyed, unkeyed, static, DEV_PRINCIPAL)] == [
        True,
        False,
        False,
        False,
    ]
    assert all(can_sign(p, configured) for p in (keyed, unkeyed, static, DEV_PRINCIPAL))


# --- the command line --------------------------------------------------------------------------


def test_cli_creates_and_rotates_showing_each_secret_once(db_url: str, db: Database) -> None:
    settings = settings_for(db_url)
    made = levqor(db_url, "keys", "create", "--name", "hooks", "--scopes", "jobs:write")
    assert made.returncode == 0, made.stderr
    secret, webhook_secret = made.stdout.splitlines()
    assert secret.startswith("lvq_")
    assert_whsec(webhook_secret)
    assert "shown this once" in made.stderr
    assert webhook_secret not in made.stderr

    listing = levqor(db_url, "keys", "list")
    assert listing.returncode == 0, listing.stderr
    assert "whsec_" not in listing.stdout + listing.stderr
    assert webhook_secret.removeprefix("whsec_") not in listing.stdout
    [row] = [line for line in listing.stdout.splitlines() if line.endswith("hooks")]
    key_id = row.split()[0]
    assert " set " in row
    assert secrets_now(db, key_id, settings) == [webhook_secret]

    rotated = levqor(db_url, "keys", "rotate-webhook-secret", key_id, "--overlap-s", "3600")
    assert rotated.returncode == 0, rotated.stderr
    [new] = rotated.stdout.splitlines()
    assert assert_whsec(new) != webhook_secret
    assert "still signs too until" in rotated.stderr
    assert new not in rotated.stderr
    assert secrets_now(db, key_id, settings) == [new, webhook_secret]
    assert "set+previous until" in levqor(db_url, "keys", "list").stdout

    at_once = levqor(db_url, "keys", "rotate-webhook-secret", key_id, "--overlap-s", "0")
    assert at_once.returncode == 0, at_once.stderr
    assert "no longer signs" in at_once.stderr
    assert secrets_now(db, key_id, settings) == at_once.stdout.splitlines()

    unknown = levqor(db_url, "keys", "rotate-webhook-secret", str(uuid.uuid4()))
    assert unknown.returncode != 0
    assert "no API key" in unknown.stderr
    bad = levqor(db_url, "keys", "rotate-webhook-secret", key_id, "--overlap-s", "-5")
    assert bad.returncode != 0
    assert "overlap_s" in bad.stderr
    assert bad.stdout == ""
    assert levqor(db_url, "keys", "revoke", key_id).returncode == 0
    revoked = levqor(db_url, "keys", "rotate-webhook-secret", key_id)
    assert revoked.returncode != 0
    assert "revoked" in revoked.stderr


# --- never in a log ----------------------------------------------------------------------------


def test_webhook_secrets_are_never_logged(tmp_path: Path) -> None:
    env = {
        "API_KEYS": ADMIN,
        "SQLITE_PATH": str(tmp_path / "levqor.db"),
        "LEVQOR_DATABASE_URL": "",
        "LEVQOR_LOG_FORMAT": "json",
        "LEVQOR_INPROCESS_WORKER": "false",
        "RATE_BURST": "1000000",
        "RATE_GLOBAL": "1000000",
    }
    proc = start_server_process(env, tmp_path / "server.log")
    shown: list[str] = []
    try:
        with httpx.Client(base_url=proc.url, timeout=30, headers={"X-Api-Key": ADMIN}) as http:
            created = create_key(http)
            shown.append(created["webhook_secret"])
            key_id = created["key"]["id"]
            shown.append(rotate(http, key_id, {"overlap_s": 60}).json()["webhook_secret"])
            via_graphql = gql_data(http, CREATE, {"in": {"name": "g", "scopes": ["worker"]}})["createApiKey"]
            shown.append(via_graphql["webhookSecret"])
            shown.append(gql_data(http, ROTATE, {"id": key_id})["rotateWebhookSecret"]["webhookSecret"])
            assert rotate(http, key_id, {"overlap_s": -1}).status_code == 400
            assert http.get("/api/v1/keys").status_code == 200
    finally:
        stop_server_process(proc)
    log = proc.log()
    assert '"levqor.access"' in log  # the log was written
    for secret in shown:
        assert_whsec(secret)
        assert secret.removeprefix("whsec_") not in log
