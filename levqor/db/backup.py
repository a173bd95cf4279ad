"""Consistent online backups, taken while the server keeps writing.

SQLite: the backup API (`sqlite3.Connection.backup`) copies every page in one step inside one read
transaction, so the copy is the database as of one instant, whatever writers do meanwhile (in WAL
mode they are not blocked). The copy is switched out of WAL mode, so that it is one self-contained
file, and checked with `PRAGMA integrity_check` before it gets its final name.

PostgreSQL: `pg_dump` in its custom format, which dumps from one snapshot
(restore with `pg_restore`).

Files are named `levqor-YYYY-MM-DD-HHMMSS.db` (or `.dump`) after the UTC time the backup began, and
appear under that name only once complete.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from levqor.db.types import utcnow

BACKUP_STEM_FORMAT = "levqor-%Y-%m-%d-%H%M%S"
SQLITE_BUSY_TIMEOUT_S = 30
PG_DUMP_TIMEOUT_S = 3600


class BackupError(RuntimeError):
    """The backup could not be taken; nothing was left under the backup's name."""


def backup_database(db_url: str, directory: Path, *, started_at: datetime | None = None) -> Path:
    """Back up the database at `db_url` into `directory`; returns the new file."""
    url = make_url(db_url)
    directory.mkdir(parents=True, exist_ok=True)
    stem = (started_at or utcnow()).strftime(BACKUP_STEM_FORMAT)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if not url.database or url.database == ":memory:":
            raise BackupError("an in-memory SQLite database cannot be backed up")
        return backup_sqlite(Path(url.database).expanduser(), _free_name(directory, stem, ".db"))
    if backend == "postgresql":
        return backup_postgres(url, _free_name(directory, stem, ".dump"))
    raise BackupError(f"no backup method for {backend} databases")


def backup_sqlite(source: Path, target: Path) -> Path:
    if not source.is_file():
        raise BackupError(f"there is no SQLite database at {source}")
    partial = target.with_name(target.name + ".partial")
    try:
        with (
            closing(sqlite3.connect(source, timeout=SQLITE_BUSY_TIMEOUT_S)) as src,
            closing(sqlite3.connect(partial)) as dst,
        ):
            src.backup(dst)  # pages=-1: every page in one step, one snapshot
            dst.execute("PRAGMA journal_mode=DELETE")
            (verdict,) = dst.execute("PRAGMA integrity_check").fetchone()
        if verdict != "ok":
            raise BackupError(f"the copy of {source} failed its integrity check: {verdict}")
        partial.replace(target)
    except sqlite3.Error as exc:
        raise BackupError(f"could not back up {source}: {exc}") from exc
    finally:
        partial.unlink(missing_ok=True)
    return target


def backup_postgres(url: URL, target: Path) -> Path:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError("pg_dump is not installed (Debian: apt-get install postgresql-client)")
    # libpq reads the password from the environment, so it never shows in the process list.
    conninfo = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    partial = target.with_name(target.name + ".partial")
    command = [pg_dump, "--format=custom", "--no-password", f"--file={partial}", f"--dbname={conninfo}"]
    try:
        done = subprocess.run(  # noqa: S603 - a fixed program with arguments, no shell
            command, env=env, capture_output=True, text=True, timeout=PG_DUMP_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            raise BackupError(f"pg_dump failed ({done.returncode}): {done.stderr.strip()}")
        partial.replace(target)
    except subprocess.TimeoutExpired as exc:
        raise BackupError(f"pg_dump did not finish within {PG_DUMP_TIMEOUT_S} s") from exc
    finally:
        partial.unlink(missing_ok=True)
    return target


def _free_name(directory: Path, stem: str, suffix: str) -> Path:
    """`stem + suffix`, or `stem-2 + suffix`... when a backup of the same second exists."""
    candidate = directory / f"{stem}{suffix}"
    number = 1
    while candidate.exists():
        number += 1
        candidate = directory / f"{stem}-{number}{suffix}"
    return candidate
