"""`/metrics`: Prometheus text a real parser reads, labelled by route template, with jobs by state."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from levqor.db.engine import Database
from levqor.db.models import Job, JobStatus
from levqor.resolvers.budgets import set_budget
from levqor.resolvers.context import Context, Principal, Scope
from tests.conftest import LiveServer
from tests.ops_support import table_out_of_service
from tests.queue_support import TEST_WORKFLOWS

Labels = tuple[tuple[str, str], ...]


def scrape(client: httpx.Client) -> dict[str, list[Sample]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    families: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            families.setdefault(sample.name, []).append(sample)
    return families


def value(samples: list[Sample], **labels: str) -> float:
    """The value of the one sample with exactly these labels (0 when there is none)."""
    found = [s.value for s in samples if s.labels == labels]
    assert len(found) <= 1, found
    return found[0] if found else 0.0


def test_requests_are_counted_by_route_template_not_by_raw_path(client: httpx.Client) -> None:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for job_id in ids:
        assert client.get(f"/api/v1/status/{job_id}").status_code == 404
    assert client.get("/api/v1/status/not-a-uuid").status_code in (400, 404)
    for n in range(2):
        assert client.get(f"/no/such/page/{n}").status_code == 404
    assert client.post("/api/v1/intake", json={"workflow": "echo", "payload": {}}).status_code == 202

    families = scrape(client)
    requests = families["levqor_http_requests_total"]
    route = "/api/v1/status/{job_id}"
    assert value(requests, method="GET", route=route, status="404") >= 3
    assert value(requests, method="POST", route="/api/v1/intake", status="202") == 1
    assert value(requests, method="GET", route="unmatched", status="404") == 2
    every_label = {v for sample in requests for v in sample.labels.values()}
    assert not any(job_id in label for job_id in ids for label in every_label)
    assert not any("/no/such/page" in label for label in every_label)

    latency = families["levqor_http_request_duration_seconds_count"]
    assert value(latency, method="POST", route="/api/v1/intake", status="202") == 1
    all_buckets = families["levqor_http_request_duration_seconds_bucket"]
    buckets = [s for s in all_buckets if s.labels["route"] == route]
    assert {s.labels["le"] for s in buckets} >= {"0.005", "0.1", "1.0", "+Inf"}


def test_answers_given_before_routing_keep_their_route(client: httpx.Client) -> None:
    # The body limit answers 413 before the router runs; the series still names the intake route.
    assert client.post("/api/v1/intake", content=b"x" * 2_000_000).status_code == 413
    assert client.request("PROPFIND", "/health").status_code == 405
    requests = scrape(client)["levqor_http_requests_total"]
    assert value(requests, method="POST", route="/api/v1/intake", status="413") == 1
    assert value(requests, method="other", route="/health", status="405") == 1  # unknown verbs fold


def test_pages_and_graphql_have_one_series_each(client: httpx.Client) -> None:
    for path in ("/public/legal/privacy.html", "/public/faq/index.html", "/public/styles.css"):
        assert client.get(path).status_code == 200
    assert client.post("/graphql", json={"query": "{ health { ok } }"}).status_code == 200
    requests = scrape(client)["levqor_http_requests_total"]
    assert value(requests, method="GET", route="/public/{path}", status="200") == 3
    assert value(requests, method="POST", route="/graphql", status="200") == 1


def test_jobs_by_state_are_read_from_the_database_at_each_scrape(client: httpx.Client, db: Database) -> None:
    before = scrape(client)["levqor_jobs"]
    assert {s.labels["state"] for s in before} == {status.value for status in JobStatus}
    assert all(s.value == 0 for s in before)

    states = [JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.SUCCEEDED, JobStatus.FAILED]
    db.write_sync(lambda s: s.add_all([Job(workflow="echo", payload={}, status=st.value) for st in states]))
    families = scrape(client)
    jobs = families["levqor_jobs"]
    assert value(jobs, state="queued") == 2
    assert value(jobs, state="succeeded") == 1
    assert value(jobs, state="failed") == 1
    assert value(jobs, state="running") == 0
    assert value(families["levqor_database_up"]) == 1
    assert value(families["levqor_workers_live"]) == 0


def test_a_scrape_still_answers_when_the_database_does_not(client: httpx.Client, db_url: str) -> None:
    assert client.get("/health").status_code == 200
    with table_out_of_service(db_url, "jobs"):
        families = scrape(client)
    assert value(families["levqor_database_up"]) == 0
    assert "levqor_jobs" not in families
    assert "levqor_http_requests_total" in families


def test_budget_refusals_spend_and_holds_are_counted(
    make_server: Callable[..., LiveServer], db: Database
) -> None:
    live = make_server(API_KEYS="static-admin-key-for-metrics", LEVQOR_WORKFLOWS=TEST_WORKFLOWS)
    with live.client(headers={"X-Api-Key": "static-admin-key-for-metrics"}) as admin:
        created = admin.post("/api/v1/keys", json={"name": "metered", "scopes": ["jobs:write"]}).json()
        before = scrape(admin)
        asyncio.run(
            set_budget(
                Context(db, live.settings, Principal(id="static:admin", scopes=Scope.ALL)),
                "key",
                created["key"]["id"],
                {"period": "day", "limit_micros": 5},
            )
        )
    with live.client(headers={"X-Api-Key": created["secret"]}) as caller:
        submit = {"workflow": "test.priced", "payload": {"estimate": 3}}
        assert caller.post("/api/v1/intake", json=submit).status_code == 202
        refused = caller.post("/api/v1/intake", json=submit)
        assert refused.status_code == 402
        assert refused.json()["error"] == "budget_exceeded"
        after = scrape(caller)
    refusals = "levqor_budget_refusals_total"
    assert value(after[refusals], subject="key") - value(before.get(refusals, []), subject="key") == 1
    assert value(after["levqor_budget_reserved_micros"]) == 3
    assert value(after["levqor_budget_spent_micros_total"]) == 0
