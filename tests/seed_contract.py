"""The seed routes as the seed document shows them (CONTRACT.md §2), checked over HTTP.

One walk through every seed route and the job listing routes, shared by the in-thread server tests
(`tests/integration`) and the `levqor serve` subprocess tests (`tests/e2e`), so both prove the same
promises. Extra fields are allowed only where CONTRACT.md names them as additions.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from levqor import __version__
from tests.support import UNKNOWN_ID, is_uuid

USER_FIELDS = {"id", "email", "name", "locale", "currency", "meta", "created_at", "updated_at"}
STATUS_SEED_FIELDS = {"job_id", "status", "created_at", "result", "error"}
STATUS_EXTRA_FIELDS = {"attempts", "started_at", "finished_at"}
JOB_FIELDS = {
    "id",
    "workflow",
    "status",
    "priority",
    "payload",
    "result",
    "error",
    "callback_url",
    "user_id",
    "created_at",
    "started_at",
    "finished_at",
    "run_at",
    "attempts",
    "max_attempts",
}


def _recent_unix_s(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and abs(value - time.time()) < 300


def assert_not_found(response: httpx.Response) -> None:
    """The seed's `{"error": "not_found"}` (the contract adds a message and the request id)."""
    assert response.status_code == 404, response.text
    assert response.json()["error"] == "not_found"


def assert_user(user: dict[str, Any], *, email: str, name: str) -> None:
    assert set(user) == USER_FIELDS, user
    assert is_uuid(user["id"])
    assert user["email"] == email
    assert user["name"] == name
    assert isinstance(user["locale"], str)
    assert user["currency"] in {"GBP", "USD", "EUR"}
    assert isinstance(user["meta"], dict)
    assert _recent_unix_s(user["created_at"])
    assert _recent_unix_s(user["updated_at"])


def check_health_routes(http: httpx.Client) -> None:
    root = http.get("/")
    assert root.status_code == 200
    assert root.json() == {"ok": True, "service": "levqor-backend", "version": __version__}

    health = http.get("/health")
    assert health.status_code == 200
    body = health.json()
    assert set(body) == {"ok", "ts"}
    assert body["ok"] is True
    assert _recent_unix_s(body["ts"])

    ops = http.get("/api/v1/ops/health")
    assert ops.status_code == 200
    ops_body = ops.json()
    assert {"ok", "ts"} <= set(ops_body) <= {"ok", "ts", "db", "queue_depth", "workers"}
    assert ops_body["ok"] is True
    assert _recent_unix_s(ops_body["ts"])


def check_public_metrics(http: httpx.Client, *, jobs_today: int) -> None:
    response = http.get("/public/metrics")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"uptime_rolling_7d", "jobs_today", "audit_coverage", "last_updated"}
    assert isinstance(body["uptime_rolling_7d"], float)
    assert 0 <= body["uptime_rolling_7d"] <= 100
    assert isinstance(body["audit_coverage"], float)
    assert 0 <= body["audit_coverage"] <= 100
    assert body["jobs_today"] == jobs_today
    assert _recent_unix_s(body["last_updated"])


def check_job_routes(http: httpx.Client) -> str:
    """Intake, status, dev completion and the job routes; returns the completed job's id."""
    accepted = http.post(
        "/api/v1/intake",
        json={
            "workflow": "echo",
            "payload": {"text": "héllo ✓"},
            "callback_url": "https://example.com/hook",
            "priority": "high",
        },
    )
    assert accepted.status_code == 202, accepted.text
    body = accepted.json()
    assert {"job_id", "status"} <= set(body) <= {"job_id", "status", "cost_estimate"}
    assert body["status"] == "queued"
    assert is_uuid(body["job_id"])
    job_id: str = body["job_id"]

    status = http.get(f"/api/v1/status/{job_id}")
    assert status.status_code == 200
    queued = status.json()
    assert STATUS_SEED_FIELDS <= set(queued) <= STATUS_SEED_FIELDS | STATUS_EXTRA_FIELDS
    assert queued["job_id"] == job_id
    assert queued["status"] == "queued"
    assert _recent_unix_s(queued["created_at"])
    assert queued["result"] is None
    assert queued["error"] is None

    assert_not_found(http.get(f"/api/v1/status/{UNKNOWN_ID}"))
    assert_not_found(http.post(f"/api/v1/_dev/complete/{UNKNOWN_ID}", json={"result": {}}))

    done = http.post(f"/api/v1/_dev/complete/{job_id}", json={"result": {"echo": "héllo ✓"}})
    assert done.status_code == 200
    assert done.json() == {"ok": True}

    final = http.get(f"/api/v1/status/{job_id}").json()
    assert final["status"] == "succeeded"
    assert final["result"] == {"echo": "héllo ✓"}
    assert final["error"] is None
    assert final["created_at"] == queued["created_at"]

    detail = http.get(f"/api/v1/jobs/{job_id}")
    assert detail.status_code == 200
    job = detail.json()
    assert JOB_FIELDS | {"events"} <= set(job)
    assert job["id"] == job_id
    assert job["workflow"] == "echo"
    assert job["priority"] == "high"
    assert job["payload"] == {"text": "héllo ✓"}
    assert job["callback_url"] == "https://example.com/hook"
    assert [(e["from_status"], e["to_status"]) for e in job["events"]] == [
        (None, "queued"),
        ("queued", "succeeded"),
    ]
    assert_not_found(http.get(f"/api/v1/jobs/{UNKNOWN_ID}"))

    listed = http.get("/api/v1/jobs", params={"status": "succeeded", "limit": 10})
    assert listed.status_code == 200
    page = listed.json()
    assert set(page) == {"jobs", "next_cursor"}
    assert [item["id"] for item in page["jobs"]] == [job_id]
    assert page["next_cursor"] is None
    return job_id


def check_user_routes(http: httpx.Client) -> None:
    created = http.post(
        "/api/v1/users/upsert",
        json={"email": "Ada@Example.com", "name": "Ada", "locale": "en-GB", "currency": "GBP", "meta": {}},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert set(body) == {"created", "user"}
    assert body["created"] is True
    assert_user(body["user"], email="ada@example.com", name="Ada")
    user_id = body["user"]["id"]

    updated = http.post(
        "/api/v1/users/upsert", json={"email": " ada@example.COM ", "name": "Ada L.", "currency": "USD"}
    )
    assert updated.status_code == 200, updated.text
    again = updated.json()
    assert set(again) == {"updated", "user"}
    assert again["updated"] is True
    assert_user(again["user"], email="ada@example.com", name="Ada L.")
    assert again["user"]["id"] == user_id
    assert again["user"]["currency"] == "USD"

    by_email = http.get("/api/v1/users", params={"email": "ADA@example.com"})
    assert by_email.status_code == 200
    assert by_email.json() == again["user"]
    assert_not_found(http.get("/api/v1/users", params={"email": "nobody@example.com"}))

    by_id = http.get(f"/api/v1/users/{user_id}")
    assert by_id.status_code == 200
    assert by_id.json() == again["user"]
    assert_not_found(http.get(f"/api/v1/users/{UNKNOWN_ID}"))

    patched = http.patch(
        f"/api/v1/users/{user_id}",
        json={"name": "Ada Lovelace", "locale": "en-US", "currency": "EUR", "meta": {"plan": "pro"}},
    )
    assert patched.status_code == 200, patched.text
    patch_body = patched.json()
    assert set(patch_body) == {"updated", "user"}
    assert patch_body["updated"] is True
    assert_user(patch_body["user"], email="ada@example.com", name="Ada Lovelace")
    user = patch_body["user"]
    assert (user["locale"], user["currency"], user["meta"]) == ("en-US", "EUR", {"plan": "pro"})
    assert http.get(f"/api/v1/users/{user_id}").json() == user
    assert_not_found(http.patch(f"/api/v1/users/{UNKNOWN_ID}", json={"name": "x"}))


def check_seed_contract(http: httpx.Client) -> None:
    """Every seed route, in the order a new user would try them."""
    check_health_routes(http)
    check_public_metrics(http, jobs_today=0)
    check_job_routes(http)
    check_user_routes(http)
