"""The workflow registry and payload validation (no services needed)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from levqor.config import ConfigError, Settings
from levqor.errors import InvalidRequest
from levqor.workflows import JobRunContext, Workflow, WorkflowRegistry, load_registry, registry_for, workflow
from levqor.workflows.registry import MAX_REPORTED_ERRORS, MAX_REPORTED_MESSAGE_CHARS


def test_payloads_are_validated_with_the_failing_paths() -> None:
    flow = Workflow(
        "t",
        payload_schema={
            "type": "object",
            "properties": {"items": {"type": "array", "items": {"type": "integer"}}},
            "required": ["items"],
        },
    )
    flow.validate({"items": [1, 2]})
    with pytest.raises(InvalidRequest) as caught:
        flow.validate({"items": [1, "two", 3.5]})
    assert [detail["field"] for detail in caught.value.details] == ["payload.items.1", "payload.items.2"]
    assert caught.value.message.startswith("payload.items.1: 'two' is not of type 'integer'")
    with pytest.raises(InvalidRequest, match="'items' is a required property"):
        flow.validate({})


def test_a_bad_schema_or_a_duplicate_name_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="invalid payload schema"):
        Workflow("broken", payload_schema={"type": "no-such-type"})
    with pytest.raises(ConfigError, match="twice"):
        WorkflowRegistry([Workflow("a"), Workflow("a")])


def test_results_are_checked_against_the_result_schema_with_the_failing_paths() -> None:
    flow = Workflow(
        "scored",
        result_schema={
            "type": "object",
            "properties": {"scores": {"type": "array", "items": {"type": "integer"}}},
            "required": ["scores"],
        },
    )
    assert flow.result_errors({"scores": [1, 2]}) == []
    assert flow.invalid_result({"scores": [1, 2]}) is None

    error = flow.invalid_result({"scores": [1, "two", 3.5]})
    assert error == {
        "type": "invalid_result",
        "message": "result.scores.1: 'two' is not of type 'integer' (workflow 'scored')",
        "errors": [
            {"field": "result.scores.1", "message": "'two' is not of type 'integer'", "code": "schema.type"},
            {"field": "result.scores.2", "message": "3.5 is not of type 'integer'", "code": "schema.type"},
        ],
    }
    assert flow.result_errors({}) == [
        {"field": "result", "message": "'scores' is a required property", "code": "schema.required"}
    ]
    # At most MAX_REPORTED_ERRORS, each message short enough to store with the job.
    many = flow.result_errors({"scores": ["x" * 10_000] * 50})
    assert len(many) == MAX_REPORTED_ERRORS
    assert all(len(detail["message"]) <= MAX_REPORTED_MESSAGE_CHARS for detail in many)


def test_without_a_result_schema_any_result_fits() -> None:
    flow = Workflow("free")
    assert (flow.result_schema, flow.result_invalid_retryable) == (None, False)
    assert flow.invalid_result({"anything": [1, "two"]}) is None


def test_an_invalid_result_schema_refuses_to_start() -> None:
    with pytest.raises(ConfigError, match="workflow 'broken' has an invalid result schema"):
        Workflow("broken", result_schema={"type": "object", "required": "label"})

    with pytest.raises(ConfigError, match="invalid result schema"):

        @workflow("broken.decorated", result_schema={"minimum": "zero"})
        async def broken(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
            return {}


def test_the_decorator_takes_the_result_schema_and_its_retry_policy() -> None:
    @workflow(
        "labelled", result_schema={"type": "object", "required": ["label"]}, result_invalid_retryable=True
    )
    async def labelled(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
        return {"label": "x"}

    assert labelled.result_schema == {"type": "object", "required": ["label"]}
    assert labelled.result_invalid_retryable is True
    assert labelled.invalid_result({}) is not None


def test_unknown_workflows_are_named_with_the_known_ones() -> None:
    registry = registry_for(Settings())
    with pytest.raises(InvalidRequest) as caught:
        registry.get("nope")
    assert caught.value.details[0]["field"] == "workflow"
    assert "unknown workflow 'nope'" in caught.value.message
    assert "echo" in caught.value.message


def test_modules_add_workflows_and_remote_only_ones_are_not_run_here() -> None:
    registry = load_registry(["tests.support_workflows"])
    assert {"echo", "sleep", "http.request", "test.remote", "test.fail_once"} <= {
        f.name for f in registry.all()
    }
    assert registry.get("test.remote").remote_only
    assert "test.remote" not in registry.local_names()
    assert "test.fail_once" in registry.local_names()
    assert registry.get("test.fail_once").description == "Fails its first attempt, then returns the payload."


@pytest.mark.parametrize(
    ("module", "message"),
    [("no_such_module_anywhere", "cannot import"), ("levqor.errors", "defines no workflows")],
)
def test_a_bad_workflow_module_refuses_to_start(module: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_registry([module])


async def test_the_decorator_keeps_the_handler_callable() -> None:
    @workflow("double", payload_schema={"type": "object", "properties": {"n": {"type": "number"}}})
    async def double(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
        return {"n": payload["n"] * 2}

    assert double.handler is not None
    ctx = JobRunContext(job_id=uuid.uuid4(), attempt=1, workflow="double", worker_id="w", settings=Settings())
    assert await double.handler({"n": 21}, ctx) == {"n": 42}
