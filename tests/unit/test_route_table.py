"""The gateway's route table picks, for every request it takes, the route Starlette's router picks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from levqor.config import Settings
from levqor.http.app import build_routes
from levqor.http.dispatch import RouteTable

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
JOB = "6f1c1a2e-0000-4000-8000-000000000000"
PATHS = (
    "/",
    "/health",
    "/health/",
    "/public/metrics",
    "/public/styles.css",
    "/public/",
    "/api/v1/intake",
    "/api/v1/intake/",
    f"/api/v1/status/{JOB}",
    "/api/v1/status/a b",
    "/api/v1/status/a/b",
    "/api/v1/status/",
    "/api/v1/status/x\n",
    "/api/v1/jobs",
    f"/api/v1/jobs/{JOB}",
    f"/api/v1/jobs/{JOB}/cancel",
    f"/api/v1/jobs/{JOB}/retry",
    f"/api/v1/jobs/{JOB}/heartbeat",
    f"/api/v1/jobs/{JOB}/complete",
    f"/api/v1/jobs/{JOB}/fail",
    f"/api/v1/jobs/{JOB}/nope",
    f"/api/v1/_dev/complete/{JOB}",
    "/api/v1/users",
    "/api/v1/users/upsert",
    f"/api/v1/users/{JOB}",
    "/api/v1/workers/claim",
    "/api/v1/workflows",
    "/api/v1/keys",
    "/api/v1/keys/abc",
    "/api/v1/ops/health",
    "/openapi.json",
    "/metrics",
    "/legal/privacy",
    "/faq",
    "/faq/",
    "/graphql",
    "/graphql/",
    "/no/such/route",
)


def starlette_choice(routes: Sequence[BaseRoute], path: str, method: str) -> tuple[BaseRoute, Any] | None:
    """The route Starlette's router serves the request with (its first full match), and the scope
    entries it sets."""
    scope = {"type": "http", "path": path, "method": method, "root_path": ""}
    for route in routes:
        match, child_scope = route.matches(scope)
        if match is Match.FULL:
            return route, child_scope.get("path_params")
    return None


def test_the_table_agrees_with_starlette_on_every_route_it_takes() -> None:
    routes = build_routes(Settings.from_mapping({}))
    table = RouteTable(routes)
    taken = 0
    for path in PATHS:
        for method in METHODS:
            found = table.find({"type": "http", "path": path, "method": method, "root_path": ""})
            if found is None:
                continue
            taken += 1
            target, path_params = found
            assert (target.route, path_params) == starlette_choice(routes, path, method), (method, path)
    assert taken > 20


@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/v1/intake"), ("GET", f"/api/v1/status/{JOB}"), ("POST", "/graphql"), ("GET", "/health")],
)
def test_the_hot_routes_are_in_the_table(method: str, path: str) -> None:
    table = RouteTable(build_routes(Settings.from_mapping({})))
    assert table.find({"type": "http", "path": path, "method": method, "root_path": ""}) is not None


@pytest.mark.parametrize(
    ("method", "path"), [("HEAD", "/health"), ("DELETE", "/health"), ("GET", "/health/")]
)
def test_head_wrong_methods_and_trailing_slashes_are_left_to_starlette(method: str, path: str) -> None:
    table = RouteTable(build_routes(Settings.from_mapping({})))
    assert table.find({"type": "http", "path": path, "method": method, "root_path": ""}) is None


async def _endpoint(_request: Request) -> Response:
    return Response()


def test_a_route_that_an_earlier_route_could_shadow_is_left_to_starlette() -> None:
    items, new, files, under_files = (
        Route("/items/{item_id}", _endpoint, methods=["GET"]),
        Route("/items/new", _endpoint, methods=["GET", "POST"]),
        Mount("/files", app=StaticFiles(directory=".")),
        Route("/files/index", _endpoint, methods=["GET"]),
    )
    routes: list[BaseRoute] = [items, new, files, under_files, WebSocketRoute("/ws", _endpoint)]
    table = RouteTable(routes)

    def find(method: str, path: str) -> BaseRoute | None:
        found = table.find({"type": "http", "path": path, "method": method, "root_path": ""})
        return None if found is None else found[0].route

    # GET /items/new is the parametrised route's, as Starlette's first match has it; POST is not.
    assert find("GET", "/items/new") is items
    assert starlette_choice(routes, "/items/new", "GET") == (items, {"item_id": "new"})
    assert find("POST", "/items/new") is new
    # The mount comes first: everything under it is Starlette's.
    assert find("GET", "/files/index") is None
    assert starlette_choice(routes, "/files/index", "GET") is not None
    assert starlette_choice(routes, "/files/index", "GET")[0] is files  # type: ignore[index]


def test_a_root_path_is_read_as_starlette_reads_it() -> None:
    routes = build_routes(Settings.from_mapping({}))
    table = RouteTable(routes)
    found = table.find(
        {"type": "http", "path": f"/base/api/v1/status/{JOB}", "method": "GET", "root_path": "/base"}
    )
    assert found is not None
    assert found[0].route.path == "/api/v1/status/{job_id}"
    assert found[1] == {"job_id": JOB}
