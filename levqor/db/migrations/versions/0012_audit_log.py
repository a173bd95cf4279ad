"""audit_log: who changed a key or a budget, or re-sent a callback, from any surface; append-only

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from levqor.db.types import BigIntPK, JSONType, UtcDateTime

revision: str = "0012"
down_revision: str | None = "0011"  # after the job list filters' index (0011_job_list_filters.py)
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("target_kind", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("detail", JSONType, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("audit_log")
