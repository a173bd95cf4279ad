"""`python -m bench.report` end to end, tiny: two quick benches run and the document has its parts.

Only the structure is checked (every row has a figure, a reference, a ratio, a target and a verdict;
the commit, date, command and machine lines are there), never a speed: timings live in the
benchmarks, and the full-size document is generated on a quiet machine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

ONLY = {
    "inprocess": "--requests 64 --warmup 32",
    "callbacks": "--deliveries 40 --latency-samples 12 --timeout 60",
}
NUMBER = r"-?[\d,]+(\.\d+)?"
VERDICTS = {"pass", "**miss**", "context"}


def sections(document: str) -> dict[str, str]:
    parts = re.split(r"^## ", document, flags=re.MULTILINE)
    return {part.split("\n", 1)[0]: part for part in parts[1:]}


def table_rows(part: str) -> list[list[str]]:
    lines = [line for line in part.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[1:]]


def test_a_tiny_report_of_two_benches_has_every_part(tmp_path: Path, redis_url: str) -> None:
    out = tmp_path / "RESULTS.md"
    command = [
        sys.executable,
        "-m",
        "bench.report",
        "--only",
        ",".join(ONLY),
        "--no-postgres",
        "--allow-dirty",
    ]
    command += ["--out", str(out), "--redis-url", redis_url]
    for name, sizes in ONLY.items():
        command += ["--args", f"{name}={sizes}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    document = out.read_text(encoding="utf-8")

    assert document.startswith("# Benchmark results\n")
    assert "never edit it by hand" in document
    assert re.search(r"^- Date: \d{4}-\d\d-\d\d \d\d:\d\d UTC$", document, re.MULTILINE)
    assert re.search(r"^- Commit: [0-9a-f]{12} (\(clean\)|\*\*dirty\*\*: .+)$", document, re.MULTILINE)
    assert re.search(
        r"^- Command: `python -m bench\.report --only inprocess,callbacks .*`$", document, re.MULTILINE
    )
    assert re.search(r"^- Machine: \d+ cores, [\d.]+ GiB memory, .+$", document, re.MULTILINE)
    for line in ("Python: ", "SQLite: ", "PostgreSQL: not used (--no-postgres)", "Redis: "):
        assert f"\n- {line}" in document

    found = sections(document)
    titles = [title for title in found if title != "Summary"]
    assert len(titles) == len(ONLY)
    summary = table_rows(found["Summary"])
    assert [row[0] for row in summary] == titles
    for row in summary:
        assert row[1] == "yes", row
    rows = [row for title in titles for row in table_rows(found[title])]
    assert rows
    for figure, value, reference, reference_value, ratio, target, verdict in rows:
        assert figure
        assert re.fullmatch(NUMBER + r" \S+", value), value
        assert verdict in VERDICTS, verdict
        assert target, figure
        if reference == "none":
            assert (reference_value, ratio) == ("—", "—")
        else:
            assert re.fullmatch(NUMBER + r" \S+", reference_value), reference_value
            assert re.fullmatch(NUMBER + "x", ratio), ratio
        if verdict == "context":
            assert target == "none (context)"
        else:
            assert target.startswith(("≥", "≤", "=")), target
    assert any(row[-1] != "context" for row in rows)  # the callbacks' goals are judged
    for title in titles:
        assert re.search(r"^`python -m bench\.\w+ .*` \(\d+ s\)$", found[title], re.MULTILINE), found[title]
