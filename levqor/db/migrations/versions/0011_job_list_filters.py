"""job list filters and the overview: finished jobs indexed by when they finished

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported: a migration keeps the predicates of its own time.
_FINISHED = "finished_at IS NOT NULL"


def upgrade() -> None:
    # The overview's throughput and pickup latency read the jobs finished in a window; without it,
    # every overview read every job (bench/README.md, "bench/dashboard.py").
    op.create_index(
        "ix_jobs_finished_at",
        "jobs",
        ["finished_at"],
        postgresql_where=sa.text(_FINISHED),
        sqlite_where=sa.text(_FINISHED),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
