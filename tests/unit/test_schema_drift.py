"""The committed GraphQL SDL is the schema the code serves."""

from __future__ import annotations

import difflib
from pathlib import Path

from levqor.schema import sdl

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"


def test_committed_schema_matches_the_code() -> None:
    committed = SCHEMA_FILE.read_text(encoding="utf-8")
    current = sdl()
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            current.splitlines(keepends=True),
            "schema.graphql (committed)",
            "levqor.schema.sdl() (code)",
        )
    )
    assert committed == current, f"schema.graphql is out of date: run `levqor export-schema`\n{diff}"
