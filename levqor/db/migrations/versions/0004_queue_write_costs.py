"""queue write costs: partial user and submitter indexes, no foreign key on job events

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PARTIAL = ("user_id", "submitted_by")
_SQLITE_FK_NAMES = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        for column in _PARTIAL:
            batch.drop_index(f"ix_jobs_{column}")
            where = sa.text(f"{column} IS NOT NULL")
            batch.create_index(f"ix_jobs_{column}", [column], postgresql_where=where, sqlite_where=where)
    if op.get_bind().dialect.name == "sqlite":
        # SQLite keeps the key unnamed; the batch (a copy of the table) names it by a convention so
        # that it can leave it out (Alembic's "Dropping Unnamed or Named Foreign Key Constraints").
        with op.batch_alter_table("job_events", naming_convention=_SQLITE_FK_NAMES) as batch:
            batch.drop_constraint("fk_job_events_job_id_jobs", type_="foreignkey")
    else:
        op.drop_constraint("job_events_job_id_fkey", "job_events", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("job_events") as batch:
        batch.create_foreign_key("job_events_job_id_fkey", "jobs", ["job_id"], ["id"])
    with op.batch_alter_table("jobs") as batch:
        for column in _PARTIAL:
            batch.drop_index(f"ix_jobs_{column}")
            batch.create_index(f"ix_jobs_{column}", [column])
