"""Workflows registered by name and payload schema only: no handler runs them in the server, so only
remote workers serve them (loaded with LEVQOR_WORKFLOWS=tests.remote_workflows)."""

from __future__ import annotations

from levqor.workflows.registry import Workflow

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
]
