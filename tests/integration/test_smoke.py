"""The seed's job flow against a real server on both databases."""

from __future__ import annotations

import httpx


def test_intake_then_status_then_dev_complete(client: httpx.Client) -> None:
    accepted = client.post("/api/v1/intake", json={"workflow": "echo", "payload": {"text": "héllo"}})
    assert accepted.status_code == 202
    body = accepted.json()
    assert body["status"] == "queued"
    job_id = body["job_id"]

    status = client.get(f"/api/v1/status/{job_id}").json()
    assert status["job_id"] == job_id
    assert status["status"] == "queued"
    assert isinstance(status["created_at"], int)
    assert status["result"] is None

    done = client.post(f"/api/v1/_dev/complete/{job_id}", json={"result": {"answer": 42}})
    assert done.status_code == 200
    assert done.json() == {"ok": True}
    final = client.get(f"/api/v1/status/{job_id}").json()
    assert final["status"] == "succeeded"
    assert final["result"] == {"answer": 42}
