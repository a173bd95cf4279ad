"""Revision 0003 gives every stored user the comparison key of its email (NFKC, case-folded)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, text

from levqor.db.migrate import upgrade
from tests.integration.test_migrations import empty_engine  # noqa: F401 - the fixture, on both dialects


def test_existing_users_get_their_email_key(empty_engine: Engine) -> None:  # noqa: F811
    upgrade(empty_engine, "0002")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        (uuid.uuid4(), "straße@example.com", start),
        (uuid.uuid4(), "strasse@example.com", start + timedelta(seconds=1)),  # a look-alike, later
        (uuid.uuid4(), "grace@example.com", start + timedelta(seconds=2)),
    ]
    with empty_engine.begin() as conn:
        for user_id, email, created in rows:
            conn.execute(
                text(
                    "INSERT INTO users (id, email, name, locale, currency, meta, created_at, updated_at) "
                    "VALUES (:id, :email, 'U', 'en-GB', 'GBP', '{}', :at, :at)"
                ),
                {
                    "id": user_id.hex if empty_engine.dialect.name == "sqlite" else user_id,
                    "email": email,
                    # As text on SQLite: its driver's datetime adapter is deprecated since Python 3.12.
                    "at": (
                        created.replace(tzinfo=None).isoformat(sep=" ")
                        if empty_engine.dialect.name == "sqlite"
                        else created
                    ),
                },
            )

    upgrade(empty_engine)

    with empty_engine.connect() as conn:
        keys = dict(conn.execute(text("SELECT email, email_key FROM users")).all())
    older, later, other = rows
    assert keys[older[1]] == "strasse@example.com"
    # Two rows that were already look-alikes: the older keeps the address, the later one its row.
    assert keys[later[1]] == f"strasse@example.com#{later[0]}"
    assert keys[other[1]] == "grace@example.com"
