"""The OpenAPI 3.1 document of the REST layer, generated from the routes and their models."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute

from levqor import __version__
from levqor.rest.routing import ApiRoute

_PATH_PARAM = re.compile(r"{(\w+)}")
_REF = "#/components/schemas/{model}"


def build_openapi(routes: list[BaseRoute]) -> dict[str, Any]:
    api_routes = [route for route in routes if isinstance(route, ApiRoute)]
    models: set[type[BaseModel]] = set()
    for route in api_routes:
        op = route.operation
        models.update(model for model in op.responses.values() if model is not None)
        if op.body is not None:
            models.add(op.body)
    ordered = sorted(models, key=lambda model: model.__name__)
    refs, schema = models_json_schema(
        [(model, "validation" if _is_input(model, api_routes) else "serialization") for model in ordered],
        ref_template=_REF,
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in api_routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Levqor REST API",
            "version": __version__,
            "description": "Job orchestration for AI automation. The routes marked `x-seed` answer "
            "exactly as the original backend documented.",
        },
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def _is_input(model: type[BaseModel], routes: list[ApiRoute]) -> bool:
    return any(route.operation.body is model for route in routes)


def _operation(route: ApiRoute, refs: dict[Any, Any]) -> dict[str, Any]:
    op = route.operation
    mode = "validation"
    spec: dict[str, Any] = {
        "summary": op.summary,
        "operationId": route.name.replace(" ", "").replace("/", "_").strip("_"),
        "tags": [op.tag],
        "x-seed": op.seed,
        "responses": {str(status): _response(model, refs) for status, model in sorted(op.responses.items())},
    }
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in _PATH_PARAM.findall(route.path)
    ]
    if op.query is not None:
        for name, info in op.query.model_fields.items():
            parameters.append({"name": name, "in": "query", "required": info.is_required(), "schema": {}})
    parameters.extend(
        {"name": header, "in": "header", "required": False, "schema": {"type": "string"}}
        for header in op.headers
    )
    if parameters:
        spec["parameters"] = parameters
    if op.body is not None:
        spec["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, mode)]}},
        }
    if op.scope is not None or op.key_required:
        spec["security"] = [{"apiKey": []}, {"bearer": []}]
        if op.scope is not None:
            spec["x-scope"] = op.scope
    return spec


def _response(model: type[BaseModel] | None, refs: dict[Any, Any]) -> dict[str, Any]:
    if model is None:
        return {"description": "No content"}
    schema = refs.get((model, "serialization")) or refs[(model, "validation")]
    return {
        "description": model.__doc__.strip().splitlines()[0] if model.__doc__ else model.__name__,
        "content": {"application/json": {"schema": schema}},
    }
