"""runs: graphs of jobs; a step waits for its parents out of the claim indexes

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from levqor.db.types import BigIntPK, JSONType, UtcDateTime

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out rather than imported: a migration keeps the predicates of its own time.
_CLAIMABLE_BEFORE = "status = 'queued' AND NOT concurrency_limited"
_LIMITED_QUEUED_BEFORE = "status = 'queued' AND concurrency_limited"
_CLAIMABLE = "status = 'queued' AND NOT concurrency_limited AND waiting_on = 0"
_LIMITED_QUEUED = "status = 'queued' AND concurrency_limited AND waiting_on = 0"
_IN_RUN = "run_id IS NOT NULL"
_KEYED = "idempotency_key IS NOT NULL"


def _claim_indexes(batch: object, claimable: str, limited: str) -> None:
    batch.create_index(  # type: ignore[attr-defined]
        "ix_jobs_claimable",
        ["priority", "run_at", "seq"],
        unique=False,
        postgresql_where=sa.text(claimable),
        sqlite_where=sa.text(claimable),
    )
    batch.create_index(  # type: ignore[attr-defined]
        "ix_jobs_limited_queued",
        ["submitted_by", "workflow", "priority", "run_at", "seq"],
        unique=False,
        postgresql_where=sa.text(limited),
        sqlite_where=sa.text(limited),
    )


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("submitted_by", sa.String(64), nullable=True),
        sa.Column("callback_url", sa.String(2048), nullable=True),
        sa.Column("steps_total", sa.Integer(), nullable=False),
        sa.Column("steps_open", sa.Integer(), nullable=False),
        sa.Column("steps_failed", sa.Integer(), nullable=False),
        sa.Column("steps_cancelled", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("idempotency_key", sa.String(400), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("finished_at", UtcDateTime(), nullable=True),
    )
    op.create_index(
        "ux_runs_idempotency_key",
        "runs",
        ["idempotency_key"],
        unique=True,
        postgresql_where=sa.text(_KEYED),
        sqlite_where=sa.text(_KEYED),
    )
    op.create_table(
        "run_edges",
        sa.Column("parent_id", sa.Uuid(), primary_key=True),
        sa.Column("child_id", sa.Uuid(), primary_key=True),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("on_failure", sa.String(8), nullable=False),
    )
    op.create_index("ix_run_edges_child", "run_edges", ["child_id"], unique=False)
    op.create_table(
        "run_events",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=False),
        sa.Column("detail", JSONType, nullable=True),
    )
    op.create_index("ix_run_events_run_id", "run_events", ["run_id"], unique=False)
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("run_id", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("step_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("waiting_on", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_claimable")
        batch.drop_index("ix_jobs_limited_queued")
        _claim_indexes(batch, _CLAIMABLE, _LIMITED_QUEUED)
        batch.create_index(
            "ix_jobs_run_id",
            ["run_id"],
            unique=False,
            postgresql_where=sa.text(_IN_RUN),
            sqlite_where=sa.text(_IN_RUN),
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_run_id")
        batch.drop_index("ix_jobs_limited_queued")
        batch.drop_index("ix_jobs_claimable")
        _claim_indexes(batch, _CLAIMABLE_BEFORE, _LIMITED_QUEUED_BEFORE)
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("waiting_on")
        batch.drop_column("step_key")
        batch.drop_column("run_id")
    op.drop_index("ix_run_events_run_id", table_name="run_events")
    op.drop_table("run_events")
    op.drop_table("run_edges")
    op.drop_index("ux_runs_idempotency_key", table_name="runs")
    op.drop_table("runs")
