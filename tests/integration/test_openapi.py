"""/openapi.json describes exactly the REST routes the app serves, as a valid OpenAPI 3.1 document."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from starlette.routing import BaseRoute, Mount, Route

from levqor.config import Settings
from levqor.errors import FieldCode
from levqor.http.app import build_routes
from levqor.rest.openapi import build_openapi
from levqor.rest.routing import ApiPath
from levqor.workflows.registry import registry_for
from tests.conftest import LiveServer
from tests.support import UNKNOWN_ID

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
    api_routes = {
        (method, path)
        for path, route in app_routes
        if isinstance(route, ApiPath)
        for method in route.operations
    }
    assert api_routes, "the app has no ApiPath at all"
    assert documented(doc) == api_routes

    # Every REST route carries its OpenAPI description: none is a plain Starlette route.
    plain = [
        path
        for path, route in app_routes
        if isinstance(route, Route)
        and not isinstance(route, ApiPath)
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


# --- the document is as strict as the server -----------------------------------------------------


@pytest.fixture(scope="module")
def strict_doc() -> dict[str, Any]:
    """The document with the workflow registry, as the server builds it from its settings."""
    settings = Settings.from_mapping({})
    return build_openapi(build_routes(settings), registry_for(settings))


def operation(doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    found: dict[str, Any] = doc["paths"][path][method.lower()]
    return found


def doc_validator(doc: dict[str, Any], *parts: str | int) -> Draft202012Validator:
    """A validator for the schema at `parts` inside the document: the document itself is the root
    schema (JSON Schema ignores its OpenAPI keys), so every `#/components/...` resolves."""
    pointer = "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in parts)
    return Draft202012Validator(
        {**doc, "$ref": f"#{pointer}"}, format_checker=Draft202012Validator.FORMAT_CHECKER
    )


def body_validator(doc: dict[str, Any], method: str, path: str) -> Draft202012Validator:
    body = ("requestBody", "content", "application/json", "schema")
    return doc_validator(doc, "paths", path, method.lower(), *body)


def query_validator(doc: dict[str, Any], method: str, path: str, name: str) -> Draft202012Validator:
    params = operation(doc, method, path)["parameters"]
    [index] = [i for i, p in enumerate(params) if p["name"] == name]
    return doc_validator(doc, "paths", path, method.lower(), "parameters", index, "schema")


def test_query_parameters_have_the_schemas_the_server_applies(strict_doc: dict[str, Any]) -> None:
    params = {p["name"]: p for p in operation(strict_doc, "GET", "/api/v1/jobs")["parameters"]}
    assert params["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
    assert params["status"]["schema"] == {"$ref": "#/components/schemas/JobStatus"}
    assert strict_doc["components"]["schemas"]["JobStatus"]["enum"] == [
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    ]
    assert all(param["schema"] for param in params.values())
    [email] = operation(strict_doc, "GET", "/api/v1/users")["parameters"]
    assert email["required"] is True
    assert email["schema"]["pattern"] == r"\S"


def chat_payload(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


# (method, path, query name or None for the body, value, what the server says)
STRICTNESS_CASES: list[tuple[str, str, str | None, Any, bool]] = [
    ("GET", "/api/v1/jobs", "cursor", "null", False),
    ("GET", "/api/v1/jobs", "cursor", "c2VxOjE", True),  # the cursor of seq 1
    ("GET", "/api/v1/jobs", "status", "queued", True),
    ("GET", "/api/v1/schedules", "cursor", "A" * 22, True),  # the place before every id
    ("GET", "/api/v1/schedules", "cursor", "A" * 21 + "B", False),  # bits past the 16 bytes
    ("GET", "/api/v1/schedules", "cursor", "c2VxOjE", False),  # a cursor of GET /api/v1/jobs
    ("GET", "/api/v1/schedules", "limit", "100", True),
    ("GET", "/api/v1/schedules", "limit", "101", False),
    ("GET", "/api/v1/jobs", "status", "done", False),
    ("GET", "/api/v1/jobs", "key_id", "0193a000-0000-7000-8000-00000000000a", True),
    ("GET", "/api/v1/jobs", "key_id", "key:0193a000-0000-7000-8000-00000000000a", True),
    ("GET", "/api/v1/jobs", "key_id", "someone", False),
    ("GET", "/api/v1/jobs", "user_id", "nope", False),
    ("GET", "/api/v1/jobs", "created_after", "2026-12-01T10:00:00Z", True),
    ("GET", "/api/v1/jobs", "text", "", False),
    ("GET", "/api/v1/jobs", "text", "x" * 200, True),
    ("GET", "/api/v1/jobs", "text", "x" * 201, False),
    ("GET", "/api/v1/users", "email", "", False),
    ("GET", "/api/v1/users", "email", "   ", False),
    ("POST", "/api/v1/keys", None, {"name": "k", "scopes": ["anything"]}, False),
    ("POST", "/api/v1/keys", None, {"name": "k", "scopes": ["jobs:read"]}, True),
    ("POST", "/api/v1/keys", None, {"name": " ", "scopes": ["admin"]}, False),
    ("POST", "/api/v1/intake", None, {"workflow": "no.such.flow", "payload": {}}, False),
    ("POST", "/api/v1/intake", None, {"workflow": "echo", "payload": {}}, True),
    ("POST", "/api/v1/intake", None, {"workflow": "sleep", "payload": {"seconds": -1}}, False),
    ("POST", "/api/v1/intake", None, {"workflow": "echo", "payload": {}, "priority": "urgent"}, False),
    ("POST", "/api/v1/intake", None, {"workflow": "echo", "payload": {}, "max_attempts": 3.0}, True),
    ("POST", "/api/v1/intake", None, {"workflow": "echo", "payload": {}, "extra": 1}, False),
    ("POST", "/api/v1/users/upsert", None, {"email": "", "name": "A"}, False),
    ("POST", "/api/v1/users/upsert", None, {"email": "a@example.com", "name": "A"}, True),
    ("POST", "/api/v1/users/upsert", None, {"email": "a@example.com", "name": "A", "locale": None}, False),
    ("POST", "/api/v1/users/upsert", None, {"email": "a@b.test", "name": "A"}, False),
    ("PATCH", "/api/v1/users/{user_id}", None, {}, False),
    ("PATCH", "/api/v1/users/{user_id}", None, {"meta": None}, True),
    ("POST", "/api/v1/workers/claim", None, {"worker_id": "w", "workflows": ["nope"]}, False),
    ("POST", "/api/v1/workers/claim", None, {"worker_id": "w", "workflows": ["echo"]}, True),
    (
        "POST",
        "/api/v1/jobs/{job_id}/complete",
        None,
        {"worker_id": "w", "attempt": 1, "result": {}, "cost": ""},
        False,
    ),
    ("POST", "/api/v1/jobs/{job_id}/fail", None, {"worker_id": "w", "attempt": 1, "error": "boom"}, True),
    (
        "POST",
        "/api/v1/jobs/{job_id}/complete",
        None,
        {"worker_id": "w", "attempt": 1, "result": {}, "cost": 1, "cost_micros": 1},
        False,
    ),
    (
        "POST",
        "/api/v1/jobs/{job_id}/complete",
        None,
        {"worker_id": "w", "attempt": 1, "result": {}, "cost": None, "cost_micros": 1},
        True,
    ),
    ("PUT", "/api/v1/budgets/keys/{key_id}", None, {"period": "day", "limit_micros": 1}, True),
    (
        "PUT",
        "/api/v1/budgets/keys/{key_id}",
        None,
        {"period": "day", "limit_micros": 1, "workflow_max_job_micros": {"echo": 1}},
        True,
    ),
    (
        "PUT",
        "/api/v1/budgets/keys/{key_id}",
        None,
        {"period": "day", "limit_micros": 1, "workflow_max_job_micros": {"¼": 1}},
        False,
    ),
    (
        "PUT",
        "/api/v1/budgets/users/{user_id}",
        None,
        {"period": "day", "limit_micros": 1, "workflow_max_job_micros": {"-x": [True]}},
        False,
    ),
    ("POST", "/api/v1/intake", None, {"workflow": "llm.chat", "payload": chat_payload("gpt-4o-mini")}, True),
    (
        "POST",
        "/api/v1/intake",
        None,
        {"workflow": "llm.chat", "payload": chat_payload("no-such-model")},
        False,
    ),
    ("GET", "/api/v1/usage", "to", "2026-01-01", True),
    ("GET", "/api/v1/usage", "to", "0", False),
    ("GET", "/api/v1/usage", "from", "20260101", False),
]


@pytest.mark.parametrize(("method", "path", "name", "value", "accepted"), STRICTNESS_CASES)
def test_the_document_accepts_what_the_server_accepts(
    strict_doc: dict[str, Any],
    client: httpx.Client,
    method: str,
    path: str,
    name: str | None,
    value: Any,
    accepted: bool,
) -> None:
    """The same verdict from the document and from the server (404 for an unknown id counts as
    accepted input, 409 for a lease the worker does not hold too)."""
    if name is None:
        validator = body_validator(strict_doc, method, path)
        kwargs: dict[str, Any] = {"json": value}
    else:
        validator = query_validator(strict_doc, method, path, name)
        kwargs = {"params": {name: value}}
        value = int(value) if value.isdigit() else value
    assert validator.is_valid(value) is accepted, list(validator.iter_errors(value))
    url = path.format(user_id=UNKNOWN_ID, job_id=UNKNOWN_ID, key_id=UNKNOWN_ID)
    response = client.request(method, url, **kwargs)
    assert (response.status_code != 400) is accepted, response.text


def test_every_response_is_documented_with_the_error_body(strict_doc: dict[str, Any]) -> None:
    error = strict_doc["components"]["schemas"]["ErrorBody"]
    assert set(error["properties"]["error"]["enum"]) == {
        "invalid_request",
        "unauthorized",
        "forbidden",
        "not_found",
        "method_not_allowed",
        "conflict",
        "payload_too_large",
        "unsupported_media_type",
        "budget_exceeded",
        "rate_limited",
        "internal_error",
    }
    assert error["properties"]["details"]["items"]["properties"]["code"]["enum"] == [
        c.value for c in FieldCode
    ]
    for item in strict_doc["paths"].values():
        for op in item.values():
            assert {"401", "429", "500"} <= set(op["responses"]), op["operationId"]
    intake = operation(strict_doc, "POST", "/api/v1/intake")
    assert set(intake["responses"]["202"]["headers"]) == {"Location", "Idempotent-Replayed"}
    assert intake["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }


def test_security_schemes_are_the_api_key_header_and_bearer(strict_doc: dict[str, Any]) -> None:
    assert strict_doc["components"]["securitySchemes"] == {
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
        "bearer": {"type": "http", "scheme": "bearer"},
    }
    intake = operation(strict_doc, "POST", "/api/v1/intake")
    assert intake["security"] == [{"apiKey": []}, {"bearer": []}]
    assert "security" not in operation(strict_doc, "GET", "/api/v1/status/{job_id}")


def test_the_workflow_names_are_the_registered_ones(strict_doc: dict[str, Any]) -> None:
    intake = strict_doc["components"]["schemas"]["JobSubmitInput"]
    names = [alternative["properties"]["workflow"]["const"] for alternative in intake["oneOf"]]
    assert names == ["echo", "http.request", "llm.chat", "sleep"]
    claim = strict_doc["components"]["schemas"]["ClaimInput"]
    assert claim["properties"]["workflows"]["items"]["enum"] == names
    validate(strict_doc)


def test_the_served_document_knows_the_registered_workflows(client: httpx.Client) -> None:
    """The app builds the document with its settings' registry, so unknown names are refused."""
    served = client.get("/openapi.json").json()
    assert "oneOf" in served["components"]["schemas"]["JobSubmitInput"]
