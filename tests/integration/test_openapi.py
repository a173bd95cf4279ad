"""/openapi.json describes exactly the REST routes the app serves, as a valid OpenAPI 3.1 document."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import httpx
from openapi_spec_validator import validate
from starlette.routing import BaseRoute, Mount, Route

from levqor.rest.routing import ApiRoute
from tests.conftest import LiveServer

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# Routes that are not part of the REST layer: the document itself, GraphQL and the static pages.
NOT_REST = ("/openapi.json", "/graphql", "/metrics", "/legal", "/faq", "/public/legal", "/public/faq")


def walk(routes: Iterable[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    for route in routes:
        if isinstance(route, Mount):
            yield from walk(route.routes, prefix + route.path)
        else:
            yield prefix + getattr(route, "path", ""), route


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in doc["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_openapi_lists_exactly_the_rest_routes(server: LiveServer, client: httpx.Client) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()

    app_routes = list(walk(server.server.config.app.routes))
    api_routes = {(route.method, path) for path, route in app_routes if isinstance(route, ApiRoute)}
    assert api_routes, "the app has no ApiRoute at all"
    assert documented(doc) == api_routes

    # Every REST route carries its OpenAPI description: none is a plain Starlette route.
    plain = [
        path
        for path, route in app_routes
        if isinstance(route, Route)
        and not isinstance(route, ApiRoute)
        and (path.startswith("/api/") or path in {"/", "/health", "/public/metrics"})
    ]
    assert plain == [], f"REST routes without an OpenAPI operation: {plain}"
    assert all(not path.startswith(NOT_REST) for _method, path in api_routes)


def test_openapi_is_a_valid_3_1_document(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises, naming the offending part, when the document is not valid OpenAPI 3.1

    seed = {path for path, item in doc["paths"].items() for op in item.values() if op.get("x-seed")}
    assert {
        "/",
        "/health",
        "/public/metrics",
        "/api/v1/intake",
        "/api/v1/status/{job_id}",
        "/api/v1/_dev/complete/{job_id}",
        "/api/v1/ops/health",
        "/api/v1/users/upsert",
        "/api/v1/users",
        "/api/v1/users/{user_id}",
    } <= seed
    intake = doc["paths"]["/api/v1/intake"]["post"]
    assert "202" in intake["responses"]
    assert intake["requestBody"]["content"]["application/json"]["schema"]
