"""Workflows: the registry, the built-ins, and what a handler receives.

A module named in `LEVQOR_WORKFLOWS` adds its own, for example::

    from levqor.workflows import JobFailed, JobRunContext, workflow

    @workflow("thumbnail", payload_schema={"type": "object", "required": ["url"]}, timeout_s=120)
    async def thumbnail(payload, ctx: JobRunContext) -> dict:
        ...

or lists `WORKFLOWS = [Workflow("resize", payload_schema=...)]`; one without a handler is served by
remote workers through the worker API. `result_schema=` makes every attempt's result, wherever it ran,
fit a JSON Schema too (a misfit fails the attempt; retried only with `result_invalid_retryable=True`).
"""

from levqor.workflows.context import CostExceeded, JobFailed, JobRunContext, TokenUsage
from levqor.workflows.registry import (
    CostModel,
    Handler,
    Workflow,
    WorkflowRegistry,
    load_registry,
    registry_for,
    workflow,
)

__all__ = [
    "CostExceeded",
    "CostModel",
    "Handler",
    "JobFailed",
    "JobRunContext",
    "TokenUsage",
    "Workflow",
    "WorkflowRegistry",
    "load_registry",
    "registry_for",
    "workflow",
]
