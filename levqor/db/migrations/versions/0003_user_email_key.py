"""user email key: look-alike addresses compare equal

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

import unicodedata
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

users = sa.table(
    "users",
    sa.column("id", sa.Uuid()),
    sa.column("email", sa.String(320)),
    sa.column("email_key", sa.String(320)),
    sa.column("created_at", sa.DateTime()),
)


def email_key(email: str) -> str:
    # levqor.db.models.email_key as of this revision, kept here so the revision never changes.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email).casefold())


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email_key", sa.String(length=320), nullable=True))
    connection = op.get_bind()
    taken: set[str] = set()
    rows = connection.execute(sa.select(users.c.id, users.c.email).order_by(users.c.created_at, users.c.id))
    for user_id, email in rows.all():
        key = email_key(email)
        if key in taken:
            # Look-alikes stored before this revision: the oldest keeps the address, a later one
            # keeps its row and id but no longer answers a lookup by email.
            key = f"{key[:280]}#{user_id}"  # within the column's 320 characters
        taken.add(key)
        connection.execute(sa.update(users).where(users.c.id == user_id).values(email_key=key))
    with op.batch_alter_table("users") as batch:
        batch.alter_column("email_key", existing_type=sa.String(length=320), nullable=False)
        batch.create_index(batch.f("ix_users_email_key"), ["email_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_index(batch.f("ix_users_email_key"))
        batch.drop_column("email_key")
