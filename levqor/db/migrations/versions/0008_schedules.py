"""schedules: named cron or interval schedules and their fires, one per tick

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from levqor.db.types import BigIntPK, JSONType, UtcDateTime

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ENABLED = sa.text("enabled")


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("cron", sa.String(200), nullable=True),
        sa.Column("every_s", sa.Integer(), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("anchor_at", UtcDateTime(), nullable=False),
        sa.Column("job", JSONType, nullable=False),
        sa.Column("on_missed", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("next_fire_at", UtcDateTime(), nullable=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_index(
        "ix_schedules_due", "schedules", ["next_fire_at"], postgresql_where=_ENABLED, sqlite_where=_ENABLED
    )
    op.create_table(
        "schedule_fires",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("schedule_id", sa.Uuid(), nullable=False),
        sa.Column("fire_time", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("ticks", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("error", JSONType, nullable=True),
        sa.Column("fired_at", UtcDateTime(), nullable=False),
        sa.UniqueConstraint("schedule_id", "fire_time", name="ux_schedule_fires_tick"),
    )


def downgrade() -> None:
    op.drop_table("schedule_fires")
    op.drop_index("ix_schedules_due", table_name="schedules")
    op.drop_table("schedules")
