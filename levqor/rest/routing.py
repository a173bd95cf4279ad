"""REST routes that carry their own OpenAPI description, so the document is generated from the code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class HeaderParam:
    """A request header an operation reads, with the JSON Schema of the values it accepts."""

    name: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class Operation:
    summary: str
    responses: dict[int, type[BaseModel] | None]
    tag: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    scope: str | None = None  # the API-key scope it needs; None for a public route
    key_required: bool = False  # a key of any scope (the seed's protected ops health)
    seed: bool = False  # part of the seed backend's compatibility contract
    headers: tuple[HeaderParam, ...] = field(default=())
    # Response headers by status, each name with its description (e.g. intake's `Location`).
    response_headers: dict[int, dict[str, str]] = field(default_factory=dict)
    # Media types of bodies that are not JSON, by status (the event stream's `text/event-stream`).
    media_types: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiRoute:
    """One method on one path, with its endpoint and its OpenAPI description."""

    method: str
    path: str
    endpoint: Endpoint
    operation: Operation

    @property
    def name(self) -> str:
        return f"{self.method.lower()} {self.path}"


class ApiPath(Route):
    """Every `ApiRoute` of one path as one Starlette route.

    Starlette's router answers a wrong method with the `Allow` of the first route whose path
    matches, so two routes for one path would hide each other's methods (RFC 9110 §15.5.6 asks
    for all of them). As OpenAPI matches paths, a concrete path wins over a template: with
    `concrete` naming `/api/v1/users/upsert`, `PATCH /api/v1/users/upsert` is a 405 of the upsert
    route rather than a user named "upsert" not found."""

    def __init__(
        self, path: str, operations: Iterable[ApiRoute], *, concrete: frozenset[str] = frozenset()
    ) -> None:
        self.operations: dict[str, ApiRoute] = {}
        for api_route in operations:
            if api_route.path != path or api_route.method in self.operations:
                raise ValueError(f"{api_route.name} does not belong once to {path}")
            self.operations[api_route.method] = api_route
        self.concrete = concrete - {path}
        endpoints = {method: api_route.endpoint for method, api_route in self.operations.items()}
        if "GET" in endpoints:
            endpoints["HEAD"] = endpoints["GET"]  # Starlette serves HEAD wherever it serves GET

        async def endpoint(request: Request) -> Response:
            return await endpoints[request.method](request)

        super().__init__(path, endpoint, methods=list(self.operations), name=path)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child_scope = super().matches(scope)
        params = child_scope.get("path_params", {}) if match is not Match.NONE else {}
        if params and self.path.format(**params) in self.concrete:
            return Match.NONE, {}
        return match, child_scope


def api_paths(api_routes: Iterable[ApiRoute]) -> list[ApiPath]:
    """One `ApiPath` per path, in the order the paths first appear."""
    by_path: dict[str, list[ApiRoute]] = {}
    for api_route in api_routes:
        by_path.setdefault(api_route.path, []).append(api_route)
    concrete = frozenset(path for path in by_path if "{" not in path)
    return [ApiPath(path, operations, concrete=concrete) for path, operations in by_path.items()]


def json_response(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        model.model_dump_json(), status_code=status_code, headers=headers, media_type="application/json"
    )
