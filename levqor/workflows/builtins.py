"""The built-in workflows: `echo`, `sleep`, `http.request` and `llm.chat`."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from levqor.costs.prices import DEFAULT_PRICES, ModelPrice
from levqor.workflows.context import JobRunContext
from levqor.workflows.http_request import http_request
from levqor.workflows.llm_chat import llm_chat_workflow
from levqor.workflows.registry import Workflow, workflow

MAX_SLEEP_S = 3600
PROGRESS_EVERY_S = 10  # how often a long sleep reports progress


@workflow(
    "echo",
    description="Return the payload as the result (any JSON object).",
    payload_schema={"type": "object"},
    timeout_s=60,
)
async def echo(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    return payload


@workflow(
    "sleep",
    description="Wait `seconds` (0 to 3600, default 0), then return them; cancelling stops the wait.",
    payload_schema={
        "type": "object",
        "properties": {"seconds": {"type": "number", "minimum": 0, "maximum": MAX_SLEEP_S}},
        "additionalProperties": False,
    },
    timeout_s=MAX_SLEEP_S + 60,
)
async def sleep(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    # Cancellation reaches this task as CancelledError at the await, which stops the wait.
    seconds = float(payload.get("seconds", 0))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(left, PROGRESS_EVERY_S))
        if deadline - loop.time() > 0:  # the end is reported by the result, not as progress
            ctx.report_progress({"slept_s": round(seconds - (deadline - loop.time()), 3)})
    return {"slept_s": seconds}


def builtin_workflows(llm_prices: Mapping[str, ModelPrice] = DEFAULT_PRICES) -> tuple[Workflow, ...]:
    """The built-ins, `llm.chat` estimating with `llm_prices` (the settings' price table)."""
    return (echo, sleep, http_request, llm_chat_workflow(llm_prices))


BUILTIN_WORKFLOWS: tuple[Workflow, ...] = builtin_workflows()
