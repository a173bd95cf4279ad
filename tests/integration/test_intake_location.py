"""Intake's 202 names where to follow the job: `Location` is its status route (RFC 9110 §15.3.3)."""

from __future__ import annotations

import httpx

JOB = {"workflow": "echo", "payload": {"n": 1}}


def test_intake_202_has_the_status_route_as_location(client: httpx.Client) -> None:
    accepted = client.post("/api/v1/intake", json=JOB)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    assert accepted.headers["location"] == f"/api/v1/status/{job_id}"
    followed = client.get(accepted.headers["location"])
    assert followed.status_code == 200
    assert followed.json()["job_id"] == job_id


def test_an_idempotent_replay_has_the_same_location(client: httpx.Client) -> None:
    headers = {"Idempotency-Key": "location-replay"}
    first = client.post("/api/v1/intake", json=JOB, headers=headers)
    again = client.post("/api/v1/intake", json=JOB, headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.headers["idempotent-replayed"] == "true"
    assert (
        again.headers["location"] == first.headers["location"] == f"/api/v1/status/{first.json()['job_id']}"
    )
