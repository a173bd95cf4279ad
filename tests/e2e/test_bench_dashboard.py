"""bench/dashboard.py end to end, with tiny settings: it seeds both databases, times every REST case
and every dashboard page (signed in) through a real server, and prints its table and one JSON line
with each figure against the target, and writes that JSON to `--json`'s file. No speed is asserted:
timings live in the benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import PG_URL, ROOT
from tests.e2e.test_bench_growth import database_kinds

JOBS = 3000
REQUESTS = 2


PAGES = {
    "page jobs": 20,
    "page jobs, page 11 of 100": 100,
    "page jobs status=failed": None,
    "page jobs text": None,
    "page overview": None,
}


def test_a_short_run_prints_its_table_and_every_figure(tmp_path: Path) -> None:
    kinds = database_kinds()
    written = tmp_path / "dashboard.json"
    command = [sys.executable, "-m", "bench.dashboard", "--jobs", str(JOBS), "--requests", str(REQUESTS)]
    command += ["--warmup", "0", "--pg-admin-url", PG_URL, "--json", str(written)]
    if kinds == ["sqlite"]:
        command.append("--no-postgres")
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    *table, line = done.stdout.strip().splitlines()
    result = json.loads(line)
    assert json.loads(written.read_text(encoding="utf-8")) == result

    assert result["bench"] == "dashboard"
    assert (result["jobs"], result["requests"]) == (JOBS, REQUESTS)
    assert set(result["results"]) == set(kinds)
    assert table[0].split() == ["database", "case", "median", "ms", "p95", "ms", "target", "result"]
    misses = []
    for kind, measured in result["results"].items():
        figures = measured["figures"]
        names = set(figures)
        assert {"jobs no filter", "jobs no filter, deep", "overview 1 h / 60", "overview 7 d / 120"} <= names
        assert {
            f"jobs {name}" for name in ("key_id", "user_id", "created in one day", "text, no match")
        } <= names
        for name, figure in figures.items():
            assert 0 < figure["median_ms"] <= figure["p95_ms"], (kind, name, figure)
            assert figure["target_ms"] == 200
            assert figure["result"] == ("pass" if figure["median_ms"] < 200 else "miss")
            if figure["result"] == "miss":
                misses.append(f"{kind}: {name}")
            # Every case has its row in the table.
            assert any(row.startswith(kind) and f" {name} " in row for row in table), (kind, name)
        assert figures["jobs no filter"]["rows"] == 50
        assert figures["overview 1 h / 60"]["rows"] == JOBS  # the overview counts every job
        # Each page is measured with the REST read it goes through, and shown just above it.
        shown = [" ".join(row.split()[1:-5]) for row in table if row.startswith(kind)]  # case names
        for page, rows in PAGES.items():
            rest = figures[page]["reads_through"]
            assert rest == f"{page}, REST"
            assert shown.index(rest) == shown.index(page) + 1
            if page != "page overview":
                assert figures[page]["rows"] == figures[rest]["rows"], page
            if rows is not None:
                assert figures[page]["rows"] == rows, page
        assert figures["page overview, REST"]["rows"] == JOBS
    assert result["misses"] == misses
    assert result["pass"] is (not misses)
