"""`levqor backup` and scripts/backup_db.sh: consistent copies taken while a live server takes jobs."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from levqor.db.backup import BackupError, backup_database
from tests.conftest import PG_URL, ROOT, LiveServer, service_unavailable
from tests.ops_support import server_env

LOAD_THREADS = 4
ACKED_BEFORE_BACKUP = 60  # jobs the load has had acknowledged when the backup starts
WAIT_S = 60.0  # bound on waiting for the load generator to reach a count
# Jobs without their intake event: none in a copy of one consistent instant.
ORPHAN_JOBS = (
    "SELECT count(*) FROM jobs WHERE NOT EXISTS (SELECT 1 FROM job_events e WHERE e.job_id = jobs.id)"
)
BACKUP_NAME = re.compile(r"levqor-\d{4}-\d{2}-\d{2}-\d{6}\.(db|dump)")


class LoadGenerator:
    """Threads submitting jobs over HTTP as fast as the server takes them, noting each 202's job id."""

    def __init__(self, url: str, threads: int = LOAD_THREADS) -> None:
        self.url = url
        self.acked: list[str] = []
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._submit, args=(n,), daemon=True) for n in range(threads)
        ]

    def _submit(self, thread: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            n = 0
            while not self._stop.is_set():
                n += 1
                response = http.post(
                    "/api/v1/intake", json={"workflow": "echo", "payload": {"t": thread, "n": n}}
                )
                with self._lock:
                    if response.status_code == 202:
                        self.acked.append(response.json()["job_id"])
                    else:
                        self.failures.append(response.text)

    def acknowledged(self) -> set[str]:
        with self._lock:
            return set(self.acked)

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + WAIT_S
        while len(self.acknowledged()) < count:
            assert time.monotonic() < deadline, "the load generator stalled"
            assert not self.failures, self.failures[:3]
            time.sleep(0.01)

    @contextmanager
    def running(self) -> Iterator[LoadGenerator]:
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(timeout=30)


def run_backup(db_url: str, directory: Path, cwd: Path) -> Path:
    """`levqor backup --dir directory`, as an operator runs it next to the server."""
    env = {**os.environ, **server_env(db_url)}
    done = subprocess.run(
        [sys.executable, "-m", "levqor", "backup", "--dir", str(directory)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    path = Path(done.stdout.strip())
    assert path.parent == directory
    assert BACKUP_NAME.fullmatch(path.name), path.name
    assert list(directory.iterdir()) == [path]  # no partial file left behind
    return path


def sqlite_backup_ids(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one self-contained file
        orphans = conn.execute(ORPHAN_JOBS).fetchone()
        assert orphans == (0,)
        return {str(uuid.UUID(row[0])) for row in conn.execute("SELECT id FROM jobs")}


def postgres_backup_ids(path: Path) -> set[str]:
    pg_restore = shutil.which("pg_restore")
    if pg_restore is None:
        service_unavailable("pg_restore", "not installed")
    listing = subprocess.run([pg_restore, "--list", str(path)], capture_output=True, text=True, check=True)
    assert re.search(r"TABLE DATA public jobs ", listing.stdout), listing.stdout
    scratch = f"levqor_restore_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{scratch}"')
        target = make_url(PG_URL).set(drivername="postgresql", database=scratch)
        subprocess.run(
            [pg_restore, "--no-owner", f"--dbname={target.render_as_string(hide_password=False)}", str(path)],
            capture_output=True,
            text=True,
            check=True,
        )
        restored = create_engine(make_url(PG_URL).set(database=scratch))
        try:
            with restored.connect() as conn:
                orphans = conn.execute(text(ORPHAN_JOBS)).scalar_one()
                assert orphans == 0
                return {str(row[0]) for row in conn.execute(text("SELECT id FROM jobs"))}
        finally:
            restored.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
        admin.dispose()


def test_a_backup_under_load_is_intact_and_holds_every_acknowledged_job(
    server: LiveServer, db_url: str, db_kind: str, tmp_path: Path
) -> None:
    if db_kind == "postgres" and shutil.which("pg_dump") is None:
        service_unavailable("pg_dump", "not installed")
    with LoadGenerator(server.url).running() as load:
        load.wait_for(ACKED_BEFORE_BACKUP)
        acked_before = load.acknowledged()
        backup = run_backup(db_url, tmp_path / "backups", tmp_path)
        load.wait_for(len(acked_before) + LOAD_THREADS)  # the server kept taking jobs
    assert not load.failures, load.failures[:3]
    ids = sqlite_backup_ids(backup) if db_kind == "sqlite" else postgres_backup_ids(backup)
    assert acked_before <= ids
    assert ids <= load.acknowledged()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    path = tmp_path / "levqor.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY)")
        conn.execute("INSERT INTO jobs VALUES ('a'), ('b')")
        conn.commit()
    return path


def test_two_backups_in_one_second_get_two_names(sqlite_db: Path, tmp_path: Path) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = backup_database(f"sqlite:///{sqlite_db}", tmp_path / "b", started_at=at)
    second = backup_database(f"sqlite:///{sqlite_db}", tmp_path / "b", started_at=at)
    assert first.name == "levqor-2026-01-02-030405.db"
    assert second.name == "levqor-2026-01-02-030405-2.db"


def test_a_missing_database_is_an_error_and_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="no SQLite database"):
        backup_database(f"sqlite:///{tmp_path / 'absent.db'}", tmp_path / "b")
    assert list((tmp_path / "b").iterdir()) == []
    done = subprocess.run(
        [sys.executable, "-m", "levqor", "backup", "--dir", str(tmp_path / "b")],
        env={**os.environ, "SQLITE_PATH": str(tmp_path / "absent.db")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "no SQLite database" in done.stderr


def run_script(
    script: Path, sqlite_db: Path, directory: Path, path_env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(script), "--dir", str(directory)],
        env={"PATH": path_env, "HOME": os.environ.get("HOME", "/root"), "SQLITE_PATH": str(sqlite_db)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_script_takes_the_backup_through_levqor(sqlite_db: Path, tmp_path: Path) -> None:
    done = run_script(ROOT / "scripts" / "backup_db.sh", sqlite_db, tmp_path / "b", os.environ["PATH"])
    assert done.returncode == 0, done.stderr
    backup = Path(done.stdout.strip())
    assert BACKUP_NAME.fullmatch(backup.name)
    with closing(sqlite3.connect(backup)) as conn:
        assert conn.execute("SELECT id FROM jobs ORDER BY id").fetchall() == [("a",), ("b",)]


def test_the_script_falls_back_to_the_sqlite_shell_without_levqor(sqlite_db: Path, tmp_path: Path) -> None:
    if shutil.which("sqlite3", path="/usr/bin:/bin") is None:
        pytest.skip("the sqlite3 shell is not installed")
    # A copy of the script outside the project: no .venv beside it, and no levqor on the PATH.
    (tmp_path / "copy" / "scripts").mkdir(parents=True)
    script = tmp_path / "copy" / "scripts" / "backup_db.sh"
    shutil.copy(ROOT / "scripts" / "backup_db.sh", script)
    done = run_script(script, sqlite_db, tmp_path / "b", "/usr/bin:/bin")
    assert done.returncode == 0, done.stderr
    backup = Path(done.stdout.strip())
    assert BACKUP_NAME.fullmatch(backup.name)
    assert list((tmp_path / "b").iterdir()) == [backup]
    with closing(sqlite3.connect(backup)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (2,)
