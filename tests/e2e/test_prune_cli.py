"""`levqor prune` as an operator runs it, on both databases: the dry run's counts, then the prune
deleting exactly those, the setting as its default, and its refusals."""

from __future__ import annotations

from pathlib import Path

from levqor.db.engine import Database
from tests.e2e.test_cli import levqor
from tests.integration.test_retention import add_job, add_run, counts, job_ids
from tests.queue_support import db_env


def test_help_names_the_options(tmp_path: Path) -> None:
    done = levqor("prune", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for word in ("--dry-run", "--older-than-days", "LEVQOR_RETENTION_DAYS", "pending"):
        assert word in done.stdout


def test_a_dry_run_then_a_prune_of_what_it_named(tmp_path: Path, db_url: str, db: Database) -> None:
    for days in (10, 20):
        add_job(db, "succeeded", finished=days, delivery="delivered")
    kept = {add_job(db, "failed", finished=3), add_job(db, "queued", created=30)}
    add_run(db, "succeeded", finished=15, created=16)
    before = counts(db)
    expected = "jobs 5, events 10, deliveries 2, attempts 2, runs 1, run events 1, run edges 2"

    dry = levqor("prune", "--dry-run", "--older-than-days", "7", cwd=tmp_path, **db_env(db_url))
    assert dry.returncode == 0, dry.stderr
    assert "(7 days ago)" in dry.stdout
    assert f"would delete: {expected}\n" in dry.stdout
    assert counts(db) == before

    done = levqor("prune", cwd=tmp_path, LEVQOR_RETENTION_DAYS="7", **db_env(db_url))
    assert done.returncode == 0, done.stderr
    assert f"deleted: {expected} (in 2 batches)\n" in done.stdout
    assert job_ids(db) == kept


def test_it_refuses_without_a_retention_and_with_a_bad_one(tmp_path: Path, db_url: str) -> None:
    unset = levqor("prune", cwd=tmp_path, **db_env(db_url))
    assert unset.returncode != 0
    assert "LEVQOR_RETENTION_DAYS is 0" in unset.stderr
    assert "--older-than-days" in unset.stderr
    zero = levqor("prune", "--older-than-days", "0", cwd=tmp_path, **db_env(db_url))
    assert zero.returncode != 0
    assert "--older-than-days must be at least 1" in zero.stderr
    bad = levqor("prune", cwd=tmp_path, LEVQOR_RETENTION_DAYS="soon", **db_env(db_url))
    assert bad.returncode != 0
    assert "LEVQOR_RETENTION_DAYS must be a whole number, not 'soon'" in bad.stderr
