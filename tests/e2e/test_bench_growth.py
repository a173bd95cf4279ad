"""bench/growth.py end to end, with tiny settings: it seeds, measures every figure on the empty and
the seeded database of each kind, and prints one JSON line with both figures, the ratio and the goal,
the seeding time and the sizes; every drained job succeeded."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from sqlalchemy import create_engine

from tests.conftest import PG_URL, REQUIRE_SERVICES, ROOT, service_unavailable

FIGURES = {"drain_jobs_per_s", "claim_p50_ms", "claim_p99_ms", "intake_rps", "status_rps"}


@pytest.fixture(autouse=True)
def wrk() -> None:
    if shutil.which("wrk") is None:
        service_unavailable("wrk", "not on PATH (apt-get install -y wrk)")


def database_kinds() -> list[str]:
    """Both kinds when PostgreSQL answers; SQLite alone when it does not and it is not required."""
    engine = create_engine(PG_URL)
    try:
        with engine.connect():
            return ["sqlite", "postgres"]
    except Exception as exc:  # any driver error means the service is not there
        if REQUIRE_SERVICES:
            service_unavailable("PostgreSQL", exc)
        return ["sqlite"]
    finally:
        engine.dispose()


def test_a_short_run_compares_every_figure_with_its_empty_table_figure() -> None:
    kinds = database_kinds()
    command = [sys.executable, "-m", "bench.growth", "--finished", "2000", "--jobs", "300"]
    command += ["--claims", "20", "--claim-queued", "100", "--duration", "1", "--warmup", "0"]
    command += ["--pool", "8", "--connections", "4", "--no-pin", "--pg-admin-url", PG_URL]
    if kinds == ["sqlite"]:
        command.append("--no-postgres")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "growth"
    assert result["finished"] == 2000
    assert result["valid"] is True, result["problems"]
    assert result["all_drained_jobs_succeeded"] is True
    assert set(result["figures"]) == set(kinds)
    for kind in kinds:
        figures = result["figures"][kind]
        assert set(figures) == FIGURES
        for entry in figures.values():
            assert entry["empty"] > 0
            assert entry["seeded"] > 0
            assert entry["goal"] == 0.9
            assert entry["result"] == ("pass" if entry["ratio"] >= 0.9 else "miss")
        assert result["seeding"][kind]["jobs"] == 2000
        assert isinstance(result["seeding"][kind]["seconds"], float)
        tables = result["sizes"][kind]
        assert tables["jobs"]["rows"] == 2000
        assert tables["job_events"]["rows"] == 6000
        if tables["source"] != "page_count":  # a SQLite without dbstat reports the file's size only
            assert tables["jobs"]["table_bytes"] > 0
            assert tables["jobs"]["index_bytes"]["ix_jobs_claimable"] > 0
    assert result["pass"] == (result["misses"] == [])
