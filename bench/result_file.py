"""`--json PATH`, which every bench takes: its results written to a file as well as printed.

The line on stdout stays what a person reads or pipes; the file is what bench/report.py reads, so the
report never has to pick a bench's JSON out of whatever else the run printed."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="also write the results to PATH, as JSON (bench/report.py)"
    )


def write_json(path: Path | None, result: Any) -> None:
    """Write `result` to `path` (nothing when no path was given), whole or not at all."""
    if path is None:
        return
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    partial.replace(path)
