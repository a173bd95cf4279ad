"""Workflows registered by name and payload schema only: no handler runs them in the server, so only
remote workers serve them (loaded with LEVQOR_WORKFLOWS=tests.remote_workflows)."""

from __future__ import annotations

from levqor.workflows.registry import Workflow
from tests.support_workflows import PayloadEstimate

# What a remote worker reports must fit this; the two `remote.shaped*` workflows differ only in
# whether a misfit is retried.
LABEL_RESULT_SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "string"},
        "scores": {"type": "array", "items": {"type": "number", "minimum": 0}},
    },
    "required": ["label"],
}

WORKFLOWS = [
    Workflow(
        name="remote.shout",
        description="Upper-cases `text`; served by remote workers.",
        payload_schema={
            "type": "object",
            "required": ["text"],
            "properties": {"text": {"type": "string"}},
        },
    ),
    Workflow(name="remote.task", description="Anything a remote test worker does.", max_attempts=2),
    Workflow(
        name="remote.shaped",
        description="Labels its payload; a result that misfits fails the job at once.",
        result_schema=LABEL_RESULT_SCHEMA,
        max_attempts=3,
    ),
    Workflow(
        name="remote.shaped_retry",
        description="Labels its payload; a result that misfits is retried.",
        result_schema=LABEL_RESULT_SCHEMA,
        result_invalid_retryable=True,
        max_attempts=2,
    ),
    Workflow(
        name="remote.priced",
        description="Estimated at `estimate` micro-USD; the remote test worker reports what it costs.",
        cost_model=PayloadEstimate(),
        max_attempts=1,
    ),
]
