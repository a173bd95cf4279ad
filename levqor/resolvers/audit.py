"""The audit log of key and budget changes and callback re-sends: each is recorded with the caller
that made it, in the transaction of the change, whichever surface it came from (REST, GraphQL, the
CLI, the dashboard). Job cancels and retries are recorded on the job's own events instead."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from levqor.db.models import AuditEntry
from levqor.db.types import utcnow
from levqor.resolvers.context import Context, Principal, Scope

AUDIT_PAGE = 50  # the newest entries the keys page shows


def record_change(
    session: Session,
    principal: Principal,
    action: str,
    target_kind: str,
    target_id: object,
    detail: dict[str, Any] | None = None,
) -> None:
    session.add(
        AuditEntry(
            at=utcnow(),
            actor=principal.id,
            action=action,
            target_kind=target_kind,
            target_id=str(target_id),
            detail=detail,
        )
    )


async def list_audit(ctx: Context, limit: int = AUDIT_PAGE) -> list[AuditEntry]:
    """The newest changes first (admin)."""
    ctx.principal.require(Scope.ADMIN)
    statement = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(max(1, min(limit, 500)))
    return await ctx.db.read(lambda session: list(session.exec(statement)))
