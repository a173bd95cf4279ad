"""costs: budgets, their windows and the ledger, job cost and token columns, per-key concurrency

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from levqor.db.types import BigIntPK, JSONType, UtcDateTime

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JOB_COLUMNS = (
    ("reserved_micros", sa.BigInteger()),
    ("settled_micros", sa.BigInteger()),
    ("defer_reason", sa.String(300)),
    ("prompt_tokens", sa.BigInteger()),
    ("completion_tokens", sa.BigInteger()),
    ("cached_tokens", sa.BigInteger()),
    ("reasoning_tokens", sa.BigInteger()),
)


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("subject_kind", sa.String(8), nullable=False),
        sa.Column("subject_id", sa.Uuid(), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("limit_micros", sa.BigInteger(), nullable=False),
        sa.Column("soft_limit_micros", sa.BigInteger(), nullable=True),
        sa.Column("max_job_micros", sa.BigInteger(), nullable=True),
        sa.Column("workflow_max_job_micros", JSONType, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("subject_kind", "subject_id", name="ux_budgets_subject"),
    )
    op.create_table(
        "budget_windows",
        sa.Column("budget_id", sa.Uuid(), primary_key=True),
        sa.Column("period_start", UtcDateTime(), primary_key=True),
        sa.Column("spent_micros", sa.BigInteger(), nullable=False),
        sa.Column("reserved_micros", sa.BigInteger(), nullable=False),
        sa.Column("soft_alerted_at", UtcDateTime(), nullable=True),
    )
    op.create_table(
        "cost_ledger",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("budget_id", sa.Uuid(), nullable=False),
        sa.Column("hold", sa.Integer(), nullable=False),
        sa.Column("period_start", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("reserved_delta_micros", sa.BigInteger(), nullable=False),
        sa.Column("spent_delta_micros", sa.BigInteger(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("job_id", "budget_id", "hold", "kind", name="ux_cost_ledger_entry"),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cost_estimated", sa.Boolean(), nullable=False, server_default=sa.false()))
        for name, type_ in _JOB_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("max_running", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("max_running")
    with op.batch_alter_table("jobs") as batch:
        for name, _type in reversed(_JOB_COLUMNS):
            batch.drop_column(name)
        batch.drop_column("cost_estimated")
    op.drop_table("cost_ledger")
    op.drop_table("budget_windows")
    op.drop_table("budgets")
