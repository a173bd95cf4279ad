"""concurrency limits: jobs.concurrency_limited, out of the claim index, with indexes of its own

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported: a migration keeps the predicates of its own time.
_CLAIMABLE_BEFORE = "status = 'queued'"
_CLAIMABLE = "status = 'queued' AND NOT concurrency_limited"
_LIMITED_QUEUED = "status = 'queued' AND concurrency_limited"
_LIMITED_RUNNING = "status = 'running' AND concurrency_limited"


def _claimable_index(batch: object, where: str) -> None:
    batch.create_index(  # type: ignore[attr-defined]
        "ix_jobs_claimable",
        ["priority", "run_at", "seq"],
        unique=False,
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("concurrency_limited", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_claimable")
        _claimable_index(batch, _CLAIMABLE)
        batch.create_index(
            "ix_jobs_limited_queued",
            ["submitted_by", "workflow", "priority", "run_at", "seq"],
            unique=False,
            postgresql_where=sa.text(_LIMITED_QUEUED),
            sqlite_where=sa.text(_LIMITED_QUEUED),
        )
        batch.create_index(
            "ix_jobs_limited_running",
            ["submitted_by", "workflow"],
            unique=False,
            postgresql_where=sa.text(_LIMITED_RUNNING),
            sqlite_where=sa.text(_LIMITED_RUNNING),
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_limited_running")
        batch.drop_index("ix_jobs_limited_queued")
        batch.drop_index("ix_jobs_claimable")
        _claimable_index(batch, _CLAIMABLE_BEFORE)
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("concurrency_limited")
