"""A workflow that reports progress, for the live job update tests (`LEVQOR_WORKFLOWS`)."""

from __future__ import annotations

import asyncio
from typing import Any

from levqor.workflows import JobRunContext, workflow

PROGRESS_WORKFLOWS = __name__  # what LEVQOR_WORKFLOWS names to load these


@workflow(
    "test.progress",
    description="Reports `steps` progress reports `pause_s` apart, then returns the count.",
    payload_schema={
        "type": "object",
        "properties": {
            "steps": {"type": "integer", "minimum": 0, "maximum": 100},
            "pause_s": {"type": "number", "minimum": 0, "maximum": 60},
        },
        "additionalProperties": False,
    },
)
async def progress(payload: dict[str, Any], ctx: JobRunContext) -> dict[str, Any]:
    steps = int(payload.get("steps", 3))
    for step in range(1, steps + 1):
        await asyncio.sleep(float(payload.get("pause_s", 0.4)))
        ctx.report_progress({"step": step, "of": steps})
    return {"steps": steps}
