"""bench/inprocess.py: its arguments, its reading of callgrind's dumps, and a short real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.inprocess import TARGETS, instructions, parse_args

ROOT = Path(__file__).resolve().parents[2]


def test_arguments_are_checked() -> None:
    assert parse_args([]).targets == list(TARGETS)
    assert parse_args(["--targets", "status, intake"]).targets == ["status", "intake"]
    for bad in (["--targets", "nope"], ["--targets", ""], ["--requests", "0"]):
        with pytest.raises(SystemExit):
            parse_args(bad)
    with pytest.raises(SystemExit):  # the floor reads SQLite
        parse_args(["--postgres", "postgresql://x/y", "--targets", "floor_get"])


def test_each_targets_dump_gives_its_count(tmp_path: Path) -> None:
    def dump(name: str, trigger: str, total: int) -> None:
        (tmp_path / name).write_text(
            f"version: 1\ncmd: python -m bench.inprocess\ndesc: Trigger: {trigger}\nevents: Ir\n"
            f"summary: 0\nfl=x\n1 5\ntotals: {total}\n"
        )

    dump("callgrind.out.1", "dump status", 4_000)
    dump("callgrind.out.2", "dump intake", 9_000)
    dump("callgrind.out", "Program termination", 7)  # the final dump, after collection ended
    assert instructions(tmp_path) == {"status": 4_000, "intake": 9_000}


def test_a_short_run_measures_every_target() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", "--requests", "64", "--warmup", "32"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["bench"] == "inprocess"
    assert result["requests"] == 64
    assert set(result["targets"]) == set(TARGETS)
    for figures in result["targets"].values():
        assert figures["cpu_us_per_request"] > 0
        assert figures["wall_us_per_request"] > 0
