"""Workflows for the queue and worker tests, loaded with `LEVQOR_WORKFLOWS=tests.support_workflows`."""

from __future__ import annotations

import os
from typing import Any

from levqor.workflows import JobFailed, JobRunContext, TokenUsage, Workflow, workflow


@workflow("test.fail_once", description="Fails its first attempt, then returns the payload.")
async def fail_once(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    if ctx.attempt == 1:
        raise JobFailed("first attempts always fail", retry_after_s=0)
    return {"attempt": ctx.attempt, **payload}


@workflow("test.explode", description="Raises an unexpected exception.", max_attempts=2)
async def explode(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    raise RuntimeError("boom")


@workflow("test.permanent", description="Fails without a retry.")
async def permanent(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    raise JobFailed("the input can never work", retryable=False, details={"hint": "fix the input"})


@workflow("test.bad_result", description="Returns a result no JSON column can hold.")
async def bad_result(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    return {"value": float("nan")}


@workflow("test.costly", description="Reports its cost and progress.")
async def costly(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    ctx.report_cost(1234)
    return {"ok": True}


# Served only by remote workers: intake validates it, this process never runs it.
remote = Workflow(
    "test.remote",
    description="Resized by a remote worker.",
    payload_schema={
        "type": "object",
        "properties": {"size": {"type": "integer", "minimum": 1}},
        "required": ["size"],
    },
    max_attempts=5,
    timeout_s=42,
)


# Results must fit a schema: each returns `payload["result"]`, so a test chooses what it reports.
COUNT_RESULT_SCHEMA = {
    "type": "object",
    "properties": {"counts": {"type": "array", "items": {"type": "integer"}}},
    "required": ["counts"],
}


@workflow(
    "test.shaped",
    description="Returns the result it is given; a misfit fails the job at once.",
    result_schema=COUNT_RESULT_SCHEMA,
    max_attempts=3,
)
async def shaped(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    ctx.report_cost(700)
    result: dict[str, Any] = payload["result"]
    return result


@workflow(
    "test.shaped_retry",
    description="Returns the result it is given; a misfit is retried.",
    result_schema=COUNT_RESULT_SCHEMA,
    result_invalid_retryable=True,
    max_attempts=2,
)
async def shaped_retry(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    result: dict[str, Any] = payload["result"]
    return result


class PayloadEstimate:
    """The estimate a test asks for: `payload["estimate"]` micro-USD."""

    def estimate(self, payload: dict[str, Any]) -> int:
        return int(payload.get("estimate", 0))


@workflow(
    "test.priced",
    description="Estimated at `estimate`; reports `cost` (or each of `costs` in turn) and returns.",
    cost_model=PayloadEstimate(),
    max_attempts=3,
)
async def priced(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    for cost in payload.get("costs", [payload["cost"]] if "cost" in payload else []):
        ctx.report_cost(int(cost))  # past the job's hold this raises CostExceeded: the job stops
    if "tokens" in payload:
        ctx.report_usage(TokenUsage(*payload["tokens"]))
    if payload.get("fail_first") and ctx.attempt == 1:
        raise JobFailed("first attempts fail", retry_after_s=0)
    return {"attempt": ctx.attempt}


@workflow("test.step", description="A step of a run: returns its key, payload and parents' results.")
async def step(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    # Fails (without a retry) while the file `fail_while` names exists: a test removes it to let a
    # retry of the step succeed.
    marker = payload.get("fail_while")
    if marker and os.path.exists(marker):
        raise JobFailed(f"{ctx.step_key} fails while {marker} exists", retryable=False)
    return {
        "key": ctx.step_key,
        "run_id": None if ctx.run_id is None else str(ctx.run_id),
        "parents": {key: parent["result"] for key, parent in sorted(ctx.parents.items())},
        "parent_statuses": {key: parent["status"] for key, parent in sorted(ctx.parents.items())},
        "payload": payload,
    }
