"""The OpenAPI 3.1 document of the REST layer, generated from the routes and their models.

The document is as strict as the server: every schema is the one the resolver validates with
(pydantic's JSON Schema of the input model), query parameters included, and with a workflow
registry the intake body is one alternative per registered workflow, each with its payload schema.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.routing import BaseRoute

from levqor import __version__
from levqor.errors import FieldCode
from levqor.rest.routing import ApiPath, ApiRoute
from levqor.rest.shapes import ERROR_CODES, ErrorBody
from levqor.workflows.registry import WorkflowRegistry

_PATH_PARAM = re.compile(r"{(\w+)}")
SSE_MEDIA_TYPE = "text/event-stream"
_REF = "#/components/schemas/{model}"
# Path ids that are not UUIDs name nothing: 404, like an unknown UUID.
_PATH_PARAM_SCHEMA = {"type": "string", "format": "uuid"}
SECURITY: list[dict[str, list[str]]] = [{"apiKey": []}, {"bearer": []}]
# Any route answers these: an invalid key is 401 even on a public route (CONTRACT.md §5), the rate
# limits (§6) and an unexpected failure (§4).
COMMON_RESPONSES: dict[int, type[BaseModel] | None] = {401: ErrorBody, 429: ErrorBody, 500: ErrorBody}
_STATUS_TEXT = {
    400: "Invalid request",
    401: "Missing or invalid API key",
    402: "Budget exceeded",
    403: "The key lacks the scope",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    429: "Rate limited",
    500: "Internal error",
    503: "Unhealthy",
}


def build_openapi(routes: Iterable[BaseRoute], registry: WorkflowRegistry | None = None) -> dict[str, Any]:
    """The document for `routes`. With `registry`, workflow names are an enum and each one's payload
    has its schema; without, names are documented by their pattern."""
    api_routes = [
        api_route for route in routes if isinstance(route, ApiPath) for api_route in route.operations.values()
    ]
    wanted: dict[type[BaseModel], JsonSchemaMode] = {ErrorBody: "serialization"}
    for api_route in api_routes:
        op = api_route.operation
        for model in op.responses.values():
            if model is not None:
                wanted.setdefault(model, "serialization")
        for model in (op.body, op.query):
            if model is not None:
                wanted[model] = "validation"
    ordered = sorted(wanted.items(), key=lambda item: item[0].__name__)
    refs, schema = models_json_schema(ordered, ref_template=_REF)
    components: dict[str, Any] = schema.get("$defs", {})
    _tighten_error_body(components)
    if registry is not None:
        _workflow_alternatives(components, registry)
    paths: dict[str, dict[str, Any]] = {}
    for api_route in api_routes:
        paths.setdefault(api_route.path, {})[api_route.method.lower()] = _operation(
            api_route, refs, components
        )
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
            "schemas": components,
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
    }


def _tighten_error_body(components: dict[str, Any]) -> None:
    """The contract's error codes (CONTRACT.md §4) and the per-field codes, as enums."""
    body = components["ErrorBody"]
    body["properties"]["error"]["enum"] = sorted(ERROR_CODES)
    body["properties"]["details"] = {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "field": {"type": ["string", "null"]},
                "message": {"type": "string"},
                "code": {"type": "string", "enum": [code.value for code in FieldCode]},
            },
            "required": ["field", "message", "code"],
        },
    }


def _workflow_alternatives(components: dict[str, Any], registry: WorkflowRegistry) -> None:
    """Intake: one alternative per registered workflow, its name a constant and its payload the
    workflow's schema, as intake validates it; claims: the names as an enum."""
    flows = registry.all()
    names = [flow.name for flow in flows]
    # Intake's body, a schedule's job (the same body without `run_at`) and a run's step.
    for name in ("JobSubmitInput", "JobTemplateInput", "RunStepInput"):
        intake = components.get(name)
        if intake is None:
            continue
        alternatives = []
        for flow in flows:
            alternative = copy.deepcopy(intake)
            alternative.pop("description", None)
            alternative["title"] = f"{name} ({flow.name})"
            alternative["properties"]["workflow"] = {"const": flow.name}
            alternative["properties"]["payload"] = copy.deepcopy(flow.payload_schema)
            alternatives.append(alternative)
        components[name] = {
            "title": name,
            "description": intake.get("description", ""),
            "oneOf": alternatives,
        }
    claim = components.get("ClaimInput")
    if claim is not None:
        claim["properties"]["workflows"]["items"] = {"type": "string", "enum": names}


def _operation(api_route: ApiRoute, refs: dict[Any, Any], components: dict[str, Any]) -> dict[str, Any]:
    op = api_route.operation
    responses = dict(COMMON_RESPONSES)
    responses.update(op.responses)
    spec: dict[str, Any] = {
        "summary": op.summary,
        "operationId": api_route.name.replace(" ", "").replace("/", "_").strip("_"),
        "tags": [op.tag],
        "x-seed": op.seed,
        "responses": {
            str(status): _response(
                status,
                model,
                refs,
                op.response_headers.get(status, {}),
                op.media_types.get(status, "application/json"),
            )
            for status, model in sorted(responses.items())
        },
    }
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": dict(_PATH_PARAM_SCHEMA)}
        for name in _PATH_PARAM.findall(api_route.path)
    ]
    if op.query is not None:
        parameters.extend(_query_parameters(op.query, refs, components))
    parameters.extend(
        {"name": header.name, "in": "header", "required": False, "schema": header.schema}
        for header in op.headers
    )
    if parameters:
        spec["parameters"] = parameters
    if op.body is not None:
        spec["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(op.body, "validation")]}},
        }
    if op.scope is not None or op.key_required:
        spec["security"] = SECURITY
        if op.scope is not None:
            spec["x-scope"] = op.scope
    return spec


def _query_parameters(
    model: type[BaseModel], refs: dict[Any, Any], components: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each field of the query model as a parameter with the field's schema. An absent parameter is
    the field's None, so the `null` alternative of an optional field is dropped: `?cursor=null`
    is the string "null"."""
    ref = refs[(model, "validation")]["$ref"]
    properties = components[ref.rsplit("/", 1)[-1]]["properties"]
    parameters = []
    for field_name, info in model.model_fields.items():
        name = info.alias or field_name  # `from`, a Python keyword, is the field `from_`
        schema = {key: value for key, value in properties[name].items() if key != "title"}
        alternatives = schema.pop("anyOf", None)
        if alternatives is not None:
            kept = [item for item in alternatives if item != {"type": "null"}]
            schema.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
        if schema.get("default", ...) is None:
            del schema["default"]
        parameters.append({"name": name, "in": "query", "required": info.is_required(), "schema": schema})
    return parameters


def _response(
    status: int,
    model: type[BaseModel] | None,
    refs: dict[Any, Any],
    headers: dict[str, str],
    media_type: str,
) -> dict[str, Any]:
    spec: dict[str, Any]
    if model is None:
        spec = {"description": "No content"}
    else:
        schema = refs.get((model, "serialization")) or refs[(model, "validation")]
        description = model.__doc__.strip().splitlines()[0] if model.__doc__ else model.__name__
        if model is ErrorBody:
            description = _STATUS_TEXT.get(status, "Error")
        if media_type == SSE_MEDIA_TYPE:
            # One event of the stream, as OpenAPI 3.2 describes events (its `itemSchema`): an `id`,
            # and `data` holding a JSON document of the model.
            schema = {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": schema,
                    },
                },
                "required": ["id", "data"],
            }
        spec = {"description": description, "content": {media_type: {"schema": schema}}}
    if headers:
        spec["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
        }
    return spec
