"""Every extension and rule configured on the schema applies to every operation the server answers:
there is no path around them. A schema with an extension Levqor does not know (one that records each
operation) and a tighter depth limit is served by the real app, and each kind of operation is seen by
both."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.routing import Route, WebSocketRoute
from strawberry.extensions import QueryDepthLimiter, SchemaExtension

from levqor.http.app import create_app
from levqor.http.graphql import graphql_app
from levqor.schema import build_schema
from tests.conftest import serve_in_thread, settings_for

MAX_DEPTH = 1


@dataclass
class Seen:
    """What the extensions of the served schema saw, one entry per operation."""

    operations: list[str | None] = field(default_factory=list)
    depths: list[dict[str, int]] = field(default_factory=list)


class RecordingExtension(SchemaExtension):
    def __init__(self, seen: Seen) -> None:
        super().__init__()
        self.seen = seen

    def on_operation(self) -> Iterator[None]:
        yield
        # After the parse: the name of an operation is read from its document.
        self.seen.operations.append(self.execution_context.operation_name)


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[httpx.Client, Seen]]:
    seen = Seen()
    schema = build_schema(
        extra_extensions=[
            lambda: RecordingExtension(seen),
            lambda: QueryDepthLimiter(max_depth=MAX_DEPTH, callback=seen.depths.append),
        ]
    )
    app = create_app(settings_for(db_url))
    view = graphql_app(schema)
    # Ahead of the app's own /graphql routes, behind all of its middleware.
    app.router.routes[:0] = [
        Route("/graphql", view, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", view),
    ]
    config = uvicorn.Config(app, log_config=None, lifespan="on", access_log=False)
    server, thread, port = serve_in_thread(config)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            yield http, seen
    finally:
        server.should_exit = True
        thread.join(timeout=30)


SUBMIT = 'mutation Submit { submitJob(input: {workflow: "echo", payload: {n: 1}}) { replayed } }'
CLAIM = 'mutation Claim { claimJobs(input: {workerId: "w-1", workflows: ["echo"], waitS: 0}) { __typename } }'
# Each kind of operation within the limit...
OPERATIONS = {
    "Submit": SUBMIT,
    "Job": 'query Job { job(id: "6f1c1a2e-0000-4000-8000-000000000000") { id status } }',
    "Jobs": "query Jobs { jobs(first: 5) { __typename } }",
    "Health": "query Health { health { ok } }",
    "Workflows": "query Workflows { workflows { name } }",
    "Claim": CLAIM,
}
# ... and one level past it, where the schema has that level.
TOO_DEEP = {
    "Submit": SUBMIT.replace("replayed", "job { id }"),
    "Job": OPERATIONS["Job"].replace("id status", "events { type }"),
    "Jobs": "query Jobs { jobs(first: 5) { pageInfo { hasNextPage } } }",
    "Claim": CLAIM.replace("__typename", "jobs { id }"),
}


def post(http: httpx.Client, query: str) -> dict[str, Any]:
    response = http.post("/graphql", json={"query": query})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_an_unknown_extension_and_a_tighter_depth_limit_see_every_operation(
    served: tuple[httpx.Client, Seen], db_kind: str
) -> None:
    http, seen = served
    for name, query in OPERATIONS.items():
        body = post(http, query)
        # It ran (the unknown job is a resolver's NOT_FOUND, with data), past every rule.
        assert body.get("data") is not None, (name, body)
        assert all(error.get("path") for error in body.get("errors", [])), (name, body)
        assert seen.operations[-1] == name
        assert seen.depths[-1][name] <= MAX_DEPTH

    for name, query in TOO_DEEP.items():
        before = len(seen.operations)
        body = post(http, query)
        assert body.get("data") is None, (name, body)
        assert [error["message"] for error in body["errors"]] == [
            f"'{name}' exceeds maximum operation depth of {MAX_DEPTH}"
        ]
        assert seen.operations[before:] == [name]

    # A query over GET, within the limit and past it.
    within = http.get("/graphql", params={"query": "query Listed { health { ok } }"})
    assert within.status_code == 200
    assert not within.json().get("errors")
    deep = http.get(
        "/graphql", params={"query": "query Deep { jobs(first: 5) { pageInfo { hasNextPage } } }"}
    )
    assert deep.json()["errors"][0]["message"] == f"'Deep' exceeds maximum operation depth of {MAX_DEPTH}"
    assert seen.operations[-2:] == ["Listed", "Deep"]
    # Each document was validated with the limiter's rule.
    assert len(seen.depths) == len(OPERATIONS) + len(TOO_DEEP) + 2
