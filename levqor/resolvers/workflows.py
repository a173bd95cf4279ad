"""The registered workflows, as clients see them (GET /api/v1/workflows and the `workflows` query)."""

from __future__ import annotations

from levqor.resolvers.context import Context
from levqor.workflows import Workflow, registry_for


async def list_workflows(ctx: Context) -> list[Workflow]:
    """Every workflow this service accepts, by name; public, like the seed's status route."""
    return registry_for(ctx.settings).all()
