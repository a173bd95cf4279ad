"""Callbacks end to end in one process: a live server with its in-process worker and delivery loop,
a real receiver on loopback, and `standardwebhooks`' own verifier (CONTRACT.md §8)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from levqor.callbacks.signing import signed_headers
from levqor.db.types import utcnow
from tests.callback_support import HANG, Receiver, new_webhook_secret, receivers, wait_for_job
from tests.conftest import LiveServer
from tests.support import assert_error, gql_data

pytestmark = pytest.mark.timeout(120)

SECRET = new_webhook_secret()


@pytest.fixture
def make_receiver() -> Iterator[Callable[[], Receiver]]:
    yield from receivers()


def callback_server(make_server: Callable[..., LiveServer], **env: str) -> LiveServer:
    values = {
        "LEVQOR_INPROCESS_WORKER": "true",
        "LEVQOR_CALLBACK_ALLOW_PRIVATE": "true",
        "LEVQOR_WEBHOOK_SECRET": SECRET,
        "LEVQOR_CALLBACK_RETRY_S": "1,1",
        "LEVQOR_POLL_INTERVAL_MS": "20",
        "LEVQOR_WORKFLOWS": "tests.support_workflows",
    }
    values.update(env)
    return make_server(**values)


def submit(http: httpx.Client, url: str, workflow: str = "echo", **fields: Any) -> str:
    body = {"workflow": workflow, "payload": fields.pop("payload", {"n": 1}), "callback_url": url, **fields}
    response = http.post("/api/v1/intake", json=body)
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def delivered(job: dict[str, Any]) -> bool:
    return bool(job["deliveries"]) and all(d["status"] != "pending" for d in job["deliveries"])


def test_a_finished_job_calls_back_signed(
    make_server: Callable[..., LiveServer], make_receiver: Callable[[], Receiver]
) -> None:
    receiver = make_receiver()
    server = callback_server(make_server)
    with server.client() as http:
        job_id = submit(http, receiver.url, payload={"greeting": "héllo"})
        (hit,) = receiver.wait_for(1)
        job = wait_for_job(http, job_id, delivered)
    event = Webhook(SECRET).verify(hit.body, hit.headers)
    assert event["type"] == "job.succeeded"
    assert event["data"]["job_id"] == job_id
    assert event["data"]["status"] == "succeeded"
    assert event["data"]["result"] == {"greeting": "héllo"}
    assert event["data"]["workflow"] == "echo"
    assert event["timestamp"].endswith("Z")
    assert hit.headers["content-type"] == "application/json"
    (delivery,) = job["deliveries"]
    assert delivery["status"] == "delivered"
    assert delivery["webhook_id"] == hit.headers["webhook-id"]
    assert delivery["event_type"] == "job.succeeded"
    (attempt,) = delivery["attempt_log"]
    assert attempt["status_code"] == 200
    assert attempt["response_excerpt"] == "answered 200"
    assert attempt["latency_ms"] >= 0
    assert attempt["error"] is None

    # A body changed on the way, or the signature replayed under another timestamp, fails.
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(hit.body.replace(b"succeeded", b"failed"), hit.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(hit.body, {**hit.headers, "webhook-timestamp": str(int(hit.at) - 1)})
    # Signed the way Levqor signs, but ten minutes ago: a replay the verifier's tolerance refuses.
    old = signed_headers(
        [SECRET], webhook_id=hit.headers["webhook-id"], body=hit.body, at=utcnow() - timedelta(minutes=10)
    )
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(SECRET).verify(hit.body, old)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(hit.body, hit.headers)


def test_failed_and_cancelled_jobs_call_back(
    make_server: Callable[..., LiveServer], make_receiver: Callable[[], Receiver]
) -> None:
    receiver = make_receiver()
    server = callback_server(make_server)
    with server.client() as http:
        failed = submit(http, receiver.url, workflow="test.permanent")
        scheduled = submit(http, receiver.url, run_at=(utcnow() + timedelta(hours=1)).isoformat())
        assert http.post(f"/api/v1/jobs/{scheduled}/cancel").status_code == 200
        hits = receiver.wait_for(2)
        wait_for_job(http, failed, delivered)
        wait_for_job(http, scheduled, delivered)
    events = {(e := Webhook(SECRET).verify(hit.body, hit.headers))["data"]["job_id"]: e for hit in hits}
    assert events[failed]["type"] == "job.failed"
    assert events[failed]["data"]["error"]["type"] == "failed"
    assert events[scheduled]["type"] == "job.cancelled"
    assert events[scheduled]["data"]["started_at"] is None


def test_retries_on_the_schedule_under_one_webhook_id(
    make_server: Callable[..., LiveServer], make_receiver: Callable[[], Receiver]
) -> None:
    receiver = make_receiver()
    receiver.script = [500, 500]
    server = callback_server(make_server, LEVQOR_CALLBACK_RETRY_S="1,2")
    with server.client() as http:
        job_id = submit(http, receiver.url)
        hits = receiver.wait_for(3, timeout_s=30)
        job = wait_for_job(http, job_id, delivered)
    assert len({hit.headers["webhook-id"] for hit in hits}) == 1
    assert [hit.headers["levqor-delivery-attempt"] for hit in hits] == ["1", "2", "3"]
    for hit in hits:
        Webhook(SECRET).verify(hit.body, hit.headers)  # each attempt signed afresh
    assert hits[1].at - hits[0].at >= 0.9  # the schedule: 1 s, then 2 s
    assert hits[2].at - hits[1].at >= 1.9
    (delivery,) = job["deliveries"]
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 3
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 200]
    assert delivery["attempt_log"][0]["response_excerpt"] == "answered 500"


def test_a_hanging_receiver_is_cut_at_the_timeout(
    make_server: Callable[..., LiveServer], make_receiver: Callable[[], Receiver]
) -> None:
    receiver = make_receiver()
    receiver.script = [HANG]
    server = callback_server(make_server, LEVQOR_CALLBACK_TIMEOUT_S="1")
    with server.client() as http:
        job_id = submit(http, receiver.url)
        receiver.wait_for(2, timeout_s=30)
        job = wait_for_job(http, job_id, delivered)
    (delivery,) = job["deliveries"]
    first, second = delivery["attempt_log"]
    assert first["status_code"] is None
    assert first["error"] == "no answer within 1 s"
    assert 900 <= first["latency_ms"] < 5000
    assert second["status_code"] == 200
    assert delivery["status"] == "delivered"


def test_410_stops_and_running_out_of_retries_fails(
    make_server: Callable[..., LiveServer], make_receiver: Callable[[], Receiver]
) -> None:
    gone, broken = make_receiver(), make_receiver()
    gone.default, broken.default = 410, 503
    server = callback_server(make_server, LEVQOR_CALLBACK_RETRY_S="1")
    with server.client() as http:
        gone_job = submit(http, gone.url)
        broken_job = submit(http, broken.url)
        gone_detail = wait_for_job(http, gone_job, delivered, timeout_s=30)
        broken_detail = wait_for_job(http, broken_job, delivered, timeout_s=30)
    (g,) = gone_detail["deliveries"]
    assert g["status"] == "failed"
    assert g["attempts"] == 1
    assert "410" in g["failed_reason"]
    assert g["next_attempt_at"] is None
    (b,) = broken_detail["deliveries"]
    assert b["status"] == "failed"
    assert b["attempts"] == 2
    assert b["failed_reason"] == "retries used up (2 attempts)"
    assert len(gone.snapshot()) == 1
    assert len(broken.snapshot()) == 2


def test_an_endpoint_failing_too_long_is_marked_and_not_retried(
    make_server: Callable[..., LiveServer], make_receiver: Callable[[], Receiver]
) -> None:
    receiver = make_receiver()
    receiver.default = 500
    server = callback_server(
        make_server, LEVQOR_CALLBACK_RETRY_S="1,1,1,1,1,1", LEVQOR_CALLBACK_FAILING_AFTER_S="2"
    )
    with server.client() as http:
        first = wait_for_job(http, submit(http, receiver.url), delivered, timeout_s=40)
        (d,) = first["deliveries"]
        # Failing since its first attempt; marked once 2 s have passed, well before 7 attempts.
        assert d["status"] == "failed"
        assert 2 <= d["attempts"] < 7
        assert "marked failing" in d["failed_reason"]
        assert "levqor_callback_endpoints_failing 1.0" in http.get("/metrics").text
        # While marked, a new delivery gets one attempt.
        second = wait_for_job(http, submit(http, receiver.url), delivered, timeout_s=20)
        assert second["deliveries"][0]["attempts"] == 1
        # A success clears the mark: the next failure is retried again.
        receiver.default = 200
        third = wait_for_job(http, submit(http, receiver.url), delivered, timeout_s=20)
        assert third["deliveries"][0]["status"] == "delivered"
        assert "levqor_callback_endpoints_failing 0.0" in http.get("/metrics").text
        receiver.script = [500]
        fourth = wait_for_job(http, submit(http, receiver.url), delivered, timeout_s=20)
        assert [a["status_code"] for a in fourth["deliveries"][0]["attempt_log"]] == [500, 200]


def test_an_admin_resends_a_delivery_on_both_surfaces(
    make_server: Callable[..., LiveServer], make_receiver: Callable[[], Receiver]
) -> None:
    receiver = make_receiver()
    server = callback_server(make_server)
    with server.client() as http:
        job_id = submit(http, receiver.url)
        (original,) = wait_for_job(http, job_id, delivered)["deliveries"]
        response = http.post(f"/api/v1/jobs/{job_id}/deliveries/{original['id']}/resend")
        assert response.status_code == 202, response.text
        resent = response.json()
        assert resent["resent_from"] == original["id"]
        assert resent["webhook_id"] == original["webhook_id"]
        assert resent["status"] == "pending"
        assert resent["attempts"] == 0
        data = gql_data(
            http,
            "mutation($j: ID!, $d: ID!) { resendDelivery(jobId: $j, deliveryId: $d) "
            "{ delivery { id webhookId resentFrom status } userErrors { code } } }",
            {"j": job_id, "d": original["id"]},
        )
        assert data["resendDelivery"]["delivery"]["resentFrom"] == original["id"]
        hits = receiver.wait_for(3)
        job = wait_for_job(http, job_id, lambda j: len(j["deliveries"]) == 3 and delivered(j))
        graph = gql_data(
            http,
            "query($j: ID!) { job(id: $j) { deliveries { id webhookId status attempts "
            "attemptLog { attempt statusCode latencyMs responseExcerpt error } } } }",
            {"j": job_id},
        )
        missing = http.post(f"/api/v1/jobs/{job_id}/deliveries/{job_id}/resend")
        bad = http.post(f"/api/v1/jobs/{job_id}/deliveries/not-a-uuid/resend")
    assert {hit.headers["webhook-id"] for hit in hits} == {original["webhook_id"]}
    assert [d["status"] for d in job["deliveries"]] == ["delivered"] * 3
    # The same deliveries on both surfaces.
    rest_view = [(d["id"], d["webhook_id"], d["attempts"]) for d in job["deliveries"]]
    graph_view = [(d["id"], d["webhookId"], d["attempts"]) for d in graph["job"]["deliveries"]]
    assert rest_view == graph_view
    assert graph["job"]["deliveries"][0]["attemptLog"][0]["statusCode"] == 200
    assert_error(missing, 404, "not_found")
    assert_error(bad, 404, "not_found")  # as every route answers an id that cannot exist


def test_resend_needs_admin(
    make_server: Callable[..., LiveServer], make_receiver: Callable[[], Receiver]
) -> None:
    receiver = make_receiver()
    server = callback_server(make_server, API_KEYS="static-admin-key")
    admin = {"X-Api-Key": "static-admin-key"}
    with server.client(headers=admin) as http:
        created = http.post("/api/v1/keys", json={"name": "reader", "scopes": ["jobs:read", "jobs:write"]})
        reader = {"X-Api-Key": created.json()["secret"]}
        job_id = submit(http, receiver.url)
        (original,) = wait_for_job(http, job_id, delivered)["deliveries"]
        path = f"/api/v1/jobs/{job_id}/deliveries/{original['id']}/resend"
        assert_error(http.post(path, headers=reader), 403, "forbidden")
        assert_error(http.post(path, headers={"X-Api-Key": "wrong"}), 401, "unauthorized")
        assert http.post(path).status_code == 202


def test_intake_needs_a_signing_secret(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(LEVQOR_CALLBACK_ALLOW_PRIVATE="true", LEVQOR_WEBHOOK_SECRET="")
    with server.client() as http:
        response = http.post(
            "/api/v1/intake",
            json={"workflow": "echo", "payload": {}, "callback_url": "http://127.0.0.1:9/hooks"},
        )
        assert_error(response, 400, "invalid_request", field="callback_url")
        assert "LEVQOR_WEBHOOK_SECRET" in response.json()["details"][0]["message"]
        # Without a callback nothing is needed.
        assert http.post("/api/v1/intake", json={"workflow": "echo", "payload": {}}).status_code == 202


def test_the_body_is_the_same_bytes_on_every_attempt(
    make_server: Callable[..., LiveServer], make_receiver: Callable[[], Receiver]
) -> None:
    receiver = make_receiver()
    receiver.script = [500]
    server = callback_server(make_server)
    with server.client() as http:
        job_id = submit(http, receiver.url, payload={"emoji": "\U0001f600", "n": 2})
        first, second = receiver.wait_for(2)
        wait_for_job(http, job_id, delivered)
    assert first.body == second.body
    assert json.loads(first.body)["data"]["result"] == {"emoji": "\U0001f600", "n": 2}


def test_a_managed_key_signs_with_its_own_secret_and_both_during_a_rotation(
    make_server: Callable[..., LiveServer], make_receiver: Callable[[], Receiver]
) -> None:
    receiver = make_receiver()
    server = callback_server(make_server, API_KEYS="static-admin-key", LEVQOR_WEBHOOK_SECRET="")
    with server.client(headers={"X-Api-Key": "static-admin-key"}) as http:
        # The static key has no secret of its own, and the server none to lend it.
        refused = http.post(
            "/api/v1/intake", json={"workflow": "echo", "payload": {}, "callback_url": receiver.url}
        )
        assert_error(refused, 400, "invalid_request", field="callback_url")
        created = http.post(
            "/api/v1/keys", json={"name": "app", "scopes": ["jobs:write", "jobs:read"]}
        ).json()
        own = {"X-Api-Key": created["secret"]}
        old_secret = created["webhook_secret"]
        submit_as = {"headers": own}
        response = http.post(
            "/api/v1/intake",
            json={"workflow": "echo", "payload": {}, "callback_url": receiver.url},
            **submit_as,
        )
        assert response.status_code == 202, response.text
        (first,) = receiver.wait_for(1)
        rotated = http.post(
            f"/api/v1/keys/{created['key']['id']}/webhook-secret", json={"overlap_s": 3600}
        ).json()
        new_secret = rotated["webhook_secret"]
        response = http.post(
            "/api/v1/intake",
            json={"workflow": "echo", "payload": {}, "callback_url": receiver.url},
            **submit_as,
        )
        assert response.status_code == 202, response.text
        _, second = receiver.wait_for(2)
    Webhook(old_secret).verify(first.body, first.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret).verify(first.body, first.headers)
    # During the overlap the callback carries two signatures: either secret verifies it.
    assert len(second.headers["webhook-signature"].split(" ")) == 2
    Webhook(old_secret).verify(second.body, second.headers)
    Webhook(new_secret).verify(second.body, second.headers)


def test_an_attempt_s_times_span_its_latency(
    make_server: Callable[..., LiveServer], make_receiver: Callable[[], Receiver]
) -> None:
    receiver = make_receiver()
    server = callback_server(make_server)
    with server.client() as http:
        (delivery,) = wait_for_job(http, submit(http, receiver.url), delivered)["deliveries"]
    (attempt,) = delivery["attempt_log"]
    started = datetime.fromisoformat(attempt["started_at"])
    finished = datetime.fromisoformat(attempt["finished_at"])
    assert abs((finished - started).total_seconds() * 1000 - attempt["latency_ms"]) <= 1
