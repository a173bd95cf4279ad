"""Live job updates: the two streams' refusals (keys, scopes, origins, caps, bad ids), a cancelled
job's end, and clean-up when clients go.

The streams' happy path against a separate worker process is tests/e2e/test_job_updates_e2e.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from gql.transport.exceptions import TransportQueryError
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from levqor.db.engine import Database
from levqor.http.context import SERVICES_ATTRIBUTE
from levqor.resolvers.job_feed import JobUpdateFeed
from tests.conftest import LiveServer
from tests.job_updates_support import (
    JOB_UPDATES,
    SseReader,
    job_updates,
    started,
    ws_client,
    ws_url,
)
from tests.queue_support import add_job, event_types, wait_for
from tests.support import UNKNOWN_ID, assert_error

pytestmark = pytest.mark.timeout(60)

STATIC_KEY = "static-updates-key-0123456789"
ADMIN = {"X-Api-Key": STATIC_KEY}
PROGRESS_QUERY = "query($id: ID!) { job(id: $id) { status progress } }"
SQLITE_ONLY = pytest.mark.parametrize("db_kind", ["sqlite"])


def feed_of(server: LiveServer) -> JobUpdateFeed:
    feed = getattr(server.server.config.app, SERVICES_ATTRIBUTE).job_updates
    assert isinstance(feed, JobUpdateFeed)
    return feed


def submit(http: httpx.Client, workflow: str = "echo", payload: dict[str, Any] | None = None) -> str:
    response = http.post(
        "/api/v1/intake", json={"workflow": workflow, "payload": payload or {}}, headers=ADMIN
    )
    assert response.status_code == 202, response.text
    return str(response.json()["job_id"])


def finished_job(http: httpx.Client) -> str:
    job_id = submit(http)
    assert http.post(f"/api/v1/_dev/complete/{job_id}", json={}, headers=ADMIN).status_code == 200
    return job_id


def make_key(http: httpx.Client, scopes: list[str]) -> str:
    response = http.post("/api/v1/keys", json={"name": "updates", "scopes": scopes}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return str(response.json()["secret"])


@pytest.fixture
def keyed(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server(API_KEYS=STATIC_KEY)


# --- the raw protocol, for what a client library hides (close codes, handshake refusals) ---------


@contextmanager
def transport_ws(
    server: LiveServer, *, headers: dict[str, str] | None = None, origin: str | None = None
) -> Iterator[ClientConnection]:
    with connect(
        ws_url(server),
        subprotocols=["graphql-transport-ws"],  # type: ignore[list-item]
        additional_headers=headers,
        origin=origin,  # type: ignore[arg-type]
        open_timeout=10,
    ) as ws:
        yield ws


def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return message


def init(ws: ClientConnection, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    ws.send(json.dumps({"type": "connection_init", "payload": payload or {}}))
    return receive(ws)


def subscribe(ws: ClientConnection, operation_id: str, job_id: str) -> dict[str, Any]:
    payload = {"query": JOB_UPDATES, "variables": {"id": job_id}}
    ws.send(json.dumps({"id": operation_id, "type": "subscribe", "payload": payload}))
    return receive(ws)


def error_codes(message: dict[str, Any]) -> list[str]:
    assert message["type"] == "error", message
    return [error.get("extensions", {}).get("code") for error in message["payload"]]


# --- refusals -----------------------------------------------------------------------------------


@SQLITE_ONLY
def test_the_event_stream_needs_a_key_with_jobs_read(keyed: LiveServer, db_kind: str) -> None:
    with keyed.client() as http:
        job_id = finished_job(http)
        path = f"/api/v1/jobs/{job_id}/events/stream"
        assert_error(http.get(path), 401, "unauthorized")
        assert_error(http.get(path, headers={"X-Api-Key": "lvq_nobody_issued_this"}), 401, "unauthorized")
        lacking = make_key(http, ["jobs:write"])
        assert_error(http.get(path, headers={"X-Api-Key": lacking}), 403, "forbidden")
        reader = make_key(http, ["jobs:read"])
        allowed = http.get(path, headers={"Authorization": f"Bearer {reader}"})
        assert allowed.status_code == 200
        assert allowed.headers["content-type"].startswith("text/event-stream")


@SQLITE_ONLY
def test_the_subscription_needs_a_key_with_jobs_read(keyed: LiveServer, db_kind: str) -> None:
    with keyed.client() as http:
        job_id = finished_job(http)
        lacking = make_key(http, ["jobs:write"])
        reader = make_key(http, ["jobs:read"])

    with transport_ws(keyed) as ws:  # no key anywhere: the socket opens, the operation is refused
        assert init(ws) == {"type": "connection_ack"}
        assert error_codes(subscribe(ws, "1", job_id)) == ["UNAUTHENTICATED"]
    with transport_ws(keyed) as ws:
        assert init(ws, {"X-Api-Key": lacking})["type"] == "connection_ack"
        assert error_codes(subscribe(ws, "1", job_id)) == ["FORBIDDEN"]
    with transport_ws(keyed) as ws:  # a bad key in connection_init closes the socket
        init_message = {"type": "connection_init", "payload": {"X-Api-Key": "lvq_nobody_issued_this"}}
        ws.send(json.dumps(init_message))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 4403
    # A bad key on the upgrade request: no socket at all.
    with pytest.raises(InvalidStatus) as refused, transport_ws(keyed, headers={"X-Api-Key": "lvq_nope"}):
        pass
    assert refused.value.response.status_code == 403

    # A good key in the payload (either header's form), or on the upgrade request.
    for payload, headers in (
        ({"X-Api-Key": reader}, None),
        ({"Authorization": f"Bearer {reader}"}, None),
        ({}, {"X-Api-Key": reader}),
    ):
        with transport_ws(keyed, headers=headers) as ws:
            assert init(ws, payload)["type"] == "connection_ack"
            message = subscribe(ws, "1", job_id)
            assert message["type"] == "next", message
            assert message["payload"]["data"]["jobUpdates"]["status"] == "SUCCEEDED"
            assert receive(ws) == {"id": "1", "type": "complete"}


@SQLITE_ONLY
def test_browsers_connect_only_from_the_configured_origins(
    make_server: Callable[..., LiveServer], db_kind: str
) -> None:
    server = make_server(LEVQOR_CORS_ORIGINS="https://app.example")
    with pytest.raises(InvalidStatus) as refused, transport_ws(server, origin="https://elsewhere.example"):
        pass
    assert refused.value.response.status_code == 403
    for origin in ("https://app.example", None):  # no Origin: not a browser
        with transport_ws(server, origin=origin) as ws:
            assert init(ws) == {"type": "connection_ack"}


@SQLITE_ONLY
def test_unknown_and_malformed_ids_are_clear_errors(
    client: httpx.Client, server: LiveServer, db_kind: str
) -> None:
    assert_error(client.get(f"/api/v1/jobs/{UNKNOWN_ID}/events/stream"), 404, "not_found")
    assert_error(client.get("/api/v1/jobs/not-a-uuid/events/stream"), 404, "not_found")
    job_id = finished_job(client)
    bad = client.get(f"/api/v1/jobs/{job_id}/events/stream", headers={"Last-Event-ID": "12abc"})
    assert_error(bad, 400, "invalid_request", field="Last-Event-ID")
    with transport_ws(server) as ws:
        init(ws)
        assert error_codes(subscribe(ws, "1", UNKNOWN_ID)) == ["NOT_FOUND"]
        # As everywhere else, an id that is not a UUID names no job.
        assert error_codes(subscribe(ws, "2", "not-a-uuid")) == ["NOT_FOUND"]
    over_http = client.post("/graphql", json={"query": JOB_UPDATES, "variables": {"id": job_id}})
    assert [error["extensions"]["code"] for error in over_http.json()["errors"]] == ["BAD_USER_INPUT"]


# --- caps and clean-up ----------------------------------------------------------------------------


@SQLITE_ONLY
def test_a_connection_carries_at_most_its_cap_of_subscriptions(
    make_server: Callable[..., LiveServer], db_kind: str
) -> None:
    server = make_server(LEVQOR_MAX_SUBSCRIPTIONS_PER_CONNECTION="2")
    with server.client() as http:
        jobs = [submit(http) for _ in range(3)]
    with transport_ws(server) as ws:
        init(ws)
        for operation_id, job_id in zip(("1", "2"), jobs, strict=False):
            assert subscribe(ws, operation_id, job_id)["payload"]["data"]["jobUpdates"]["status"] == "QUEUED"
        refused = subscribe(ws, "3", jobs[2])
        assert refused["type"] == "error", refused
        assert refused["payload"][0]["message"] == "Subscription limit reached"
        ws.send(json.dumps({"id": "1", "type": "complete"}))  # the client ends one
        wait_for(lambda: feed_of(server).watched_jobs == 1, timeout_s=10, what="the watch to be freed")
        assert subscribe(ws, "4", jobs[2])["type"] == "next"


@SQLITE_ONLY
async def test_the_per_key_cap_counts_both_surfaces_and_a_gone_client_frees_its_place(
    make_server: Callable[..., LiveServer], db_kind: str
) -> None:
    server = make_server(LEVQOR_MAX_SUBSCRIPTIONS_PER_KEY="2")
    feed = feed_of(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        job_id = (await http.post("/api/v1/intake", json={"workflow": "echo", "payload": {}})).json()[
            "job_id"
        ]
        path = f"/api/v1/jobs/{job_id}/events/stream"
        async with http.stream("GET", path) as first, http.stream("GET", path) as second:
            assert (first.status_code, second.status_code) == (200, 200)
            refused = await http.get(path)
            assert_error(refused, 429, "rate_limited")
            assert refused.headers["retry-after"] == "1"
            async with ws_client(server) as session:
                with pytest.raises(TransportQueryError) as over:
                    async for _update in session.subscribe(job_updates(job_id)):
                        pass
            assert over.value.errors is not None
            assert [error["extensions"]["code"] for error in over.value.errors] == ["RATE_LIMITED"]
        # Both clients went away: their places and watches are given back.
        deadline = time.monotonic() + 10
        while (feed.open_streams("dev") or feed.watched_jobs) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert (feed.open_streams("dev"), feed.watched_jobs) == (0, 0)
        head = await http.head(path)  # headers only: nothing is left open either
        assert head.status_code == 200
        assert head.headers["content-type"].startswith("text/event-stream")
        async with http.stream("GET", path) as again:
            assert again.status_code == 200
    await asyncio.sleep(0.2)
    assert (feed.open_streams("dev"), feed.watched_jobs) == (0, 0)


async def test_a_cancelled_job_s_streams_end_with_cancelled(
    make_server: Callable[..., LiveServer], db: Database
) -> None:
    server = make_server(LEVQOR_JOB_UPDATES_POLL_MS="50")
    job = add_job(db, "sleep", payload={"seconds": 60})
    job_id = str(job.id)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:

        async def subscription(first: asyncio.Event) -> list[str]:
            statuses = []
            async with ws_client(server) as session:
                async for item in session.subscribe(job_updates(job_id)):
                    statuses.append(item["jobUpdates"]["status"])
                    first.set()
            return statuses

        async def stream(first: asyncio.Event) -> list[str]:
            reader, statuses = SseReader(), []
            async with http.stream("GET", f"/api/v1/jobs/{job_id}/events/stream") as response:
                async for chunk in response.aiter_text():
                    for event in reader.feed(chunk):
                        statuses.append(json.loads(event.data)["status"])
                        first.set()
            return statuses

        seen = (asyncio.Event(), asyncio.Event())
        tasks = (asyncio.create_task(subscription(seen[0])), asyncio.create_task(stream(seen[1])))
        for task, first in zip(tasks, seen, strict=True):
            await started(task, first)
        assert (await http.post(f"/api/v1/jobs/{job_id}/cancel")).json()["status"] == "cancelled"
        graphql, sse = await asyncio.wait_for(asyncio.gather(*tasks), 20)
    assert graphql == ["QUEUED", "CANCELLED"]
    assert sse == ["queued", "cancelled"]
    assert event_types(db, job.id) == ["submitted", "cancelled"]
