"""REST routes that carry their own OpenAPI description, so the document is generated from the code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Endpoint = Callable[[Request], Awaitable[Response]]


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
    headers: tuple[str, ...] = field(default=())


class ApiRoute(Route):
    def __init__(self, method: str, path: str, endpoint: Endpoint, operation: Operation) -> None:
        super().__init__(path, endpoint, methods=[method], name=f"{method.lower()} {path}")
        self.method = method
        self.operation = operation


def json_response(
    model: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        model.model_dump_json(), status_code=status_code, headers=headers, media_type="application/json"
    )
