"""Every SQLite connection the engine opens is set up the same way (levqor/db/engine.py)."""

from __future__ import annotations

from pathlib import Path

from levqor.db.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    SQLITE_JOURNAL_SIZE_LIMIT_BYTES,
    SQLITE_WAL_AUTOCHECKPOINT_PAGES,
    create_db_engine,
)


def test_each_connection_gets_the_pragmas(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'levqor.db'}")
    try:
        for _ in range(2):  # a fresh connection each time, not one the pool set up once
            with engine.connect() as connection:
                read = {
                    name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                    for name in (
                        "journal_mode",
                        "synchronous",
                        "busy_timeout",
                        "foreign_keys",
                        "wal_autocheckpoint",
                        "journal_size_limit",
                    )
                }
                connection.invalidate()
            assert read == {
                "journal_mode": "wal",
                "synchronous": 1,  # NORMAL
                "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
                "foreign_keys": 1,
                "wal_autocheckpoint": SQLITE_WAL_AUTOCHECKPOINT_PAGES,
                "journal_size_limit": SQLITE_JOURNAL_SIZE_LIMIT_BYTES,
            }
    finally:
        engine.dispose()
