"""schedule names: unique, as a name addresses one schedule

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-13
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("levqor.db.migrations")

NAME_LEN = 128  # schedules.name
schedules = sa.table(
    "schedules",
    sa.column("id", sa.Uuid()),
    sa.column("name", sa.String(NAME_LEN)),
    sa.column("created_at", sa.DateTime()),
)


def unique_name(name: str, schedule_id: object, taken: set[str]) -> str:
    """`name (<id>)`, within the column's length, and not a name another schedule has."""
    suffix = f" ({schedule_id})"
    candidate, extra = f"{name[: NAME_LEN - len(suffix)]}{suffix}", 1
    while candidate in taken:  # only if someone named a schedule so already
        extra += 1
        tail = f"{suffix} {extra}"
        candidate = f"{name[: NAME_LEN - len(tail)]}{tail}"
    return candidate


def upgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(
        sa.select(schedules.c.id, schedules.c.name).order_by(schedules.c.created_at, schedules.c.id)
    ).all()
    taken = {name for _id, name in rows}
    kept: set[str] = set()
    for schedule_id, name in rows:
        if name not in kept:
            kept.add(name)
            continue
        # Duplicates made before names were unique: the oldest keeps the name, each later one is
        # renamed after its id, so a client addressing it by id still finds it.
        renamed = unique_name(name, schedule_id, taken)
        taken.add(renamed)
        connection.execute(sa.update(schedules).where(schedules.c.id == schedule_id).values(name=renamed))
        logger.warning(
            "renamed a schedule whose name another had",
            extra={"schedule_id": str(schedule_id), "schedule_name": renamed},
        )
    op.create_index("ux_schedules_name", "schedules", ["name"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_schedules_name", table_name="schedules")
