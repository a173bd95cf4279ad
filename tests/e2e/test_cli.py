"""The `levqor` command as a user runs it: help, migrate, export-schema, and refusing unsafe settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from levqor.schema import sdl
from tests.conftest import free_port

CLI_TIMEOUT_S = 120


def clean_env(**extra: str) -> dict[str, str]:
    """The machine's environment without any Levqor setting, plus `extra`."""
    settings = {"API_KEYS", "RATE_BURST", "RATE_GLOBAL", "SQLITE_PATH", "PORT", "DATABASE_URL"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEVQOR_") and k not in settings}
    return {**env, **extra}


def levqor(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "levqor", *args],
        env=clean_env(**env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        ((), ("serve", "migrate", "export-schema")),
        (("serve",), ("--port", "--workers")),
        (("migrate",), ("--revision",)),
        (("export-schema",), ("--output",)),
        (("budgets",), ("set", "list", "delete")),
        (
            ("budgets", "set"),
            ("--key", "--user", "--period", "--limit-usd", "--limit-micros", "--soft-limit-usd"),
        ),
        (("budgets", "list"), ("--json",)),
        (("budgets", "delete"), ("--key", "--user")),
        (("usage",), ("--from", "--to", "--group-by", "--key", "--user", "--json")),
    ],
)
def test_help(tmp_path: Path, args: tuple[str, ...], mentions: tuple[str, ...]) -> None:
    done = levqor(*args, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: levqor")
    for word in mentions:
        assert word in done.stdout


def test_migrate_creates_the_tables_in_a_fresh_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "data" / "fresh.db"
    done = levqor("migrate", cwd=tmp_path, SQLITE_PATH=str(path))
    assert done.returncode == 0, done.stderr
    assert path.is_file()
    engine = create_engine(f"sqlite:///{path}")
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"users", "jobs", "job_events", "api_keys", "workers", "alembic_version"} <= tables
    # Running it again is harmless.
    assert levqor("migrate", cwd=tmp_path, SQLITE_PATH=str(path)).returncode == 0


def test_migrate_ignores_database_url(tmp_path: Path) -> None:
    """The seed's lesson: a platform's DATABASE_URL must not pull Levqor onto another database."""
    done = levqor(
        "migrate",
        cwd=tmp_path,
        SQLITE_PATH=str(tmp_path / "mine.db"),
        DATABASE_URL="postgresql://nobody@127.0.0.1:1/none",
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mine.db").is_file()


def test_export_schema_prints_the_sdl(tmp_path: Path) -> None:
    done = levqor("export-schema", "-o", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == sdl()
    assert "type Query" in done.stdout
    assert "type Mutation" in done.stdout

    written = levqor("export-schema", "-o", "out.graphql", cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "out.graphql").read_text(encoding="utf-8") == sdl()


def test_production_without_keys_refuses_to_serve(tmp_path: Path) -> None:
    port = free_port()
    done = levqor(
        "serve",
        cwd=tmp_path,
        LEVQOR_ENV="production",
        SQLITE_PATH=str(tmp_path / "prod.db"),
        PORT=str(port),
        LEVQOR_HOST="127.0.0.1",
        LEVQOR_INPROCESS_WORKER="false",
    )
    assert done.returncode != 0
    assert "API_KEYS" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT must be a whole number"),
        ({"LEVQOR_ENV": "staging"}, "LEVQOR_ENV must be development or production"),
        ({"RATE_BURST": "lots"}, "RATE_BURST"),
    ],
)
def test_bad_settings_stop_the_command_with_a_clear_message(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    done = levqor("migrate", cwd=tmp_path, SQLITE_PATH=str(tmp_path / "x.db"), **env)
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "x.db").exists()


def test_budgets_and_usage_from_the_command_line(tmp_path: Path) -> None:
    db = str(tmp_path / "budgets.db")
    created = levqor(
        "keys", "create", "--name", "spender", "--scopes", "jobs:write", cwd=tmp_path, SQLITE_PATH=db
    )
    assert created.returncode == 0, created.stderr
    listed = levqor("keys", "list", cwd=tmp_path, SQLITE_PATH=db)
    key_id = listed.stdout.splitlines()[1].split()[0]

    done = levqor(
        "budgets", "set", "--key", key_id, "--period", "day", "--limit-usd", "12.5",
        "--soft-limit-micros", "10000000", "--json", cwd=tmp_path, SQLITE_PATH=db,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    budget = json.loads(done.stdout)
    assert (budget["subject"], budget["subject_id"], budget["period"]) == ("key", key_id, "day")
    assert (budget["limit_micros"], budget["soft_limit_micros"]) == (12_500_000, 10_000_000)
    assert budget["remaining_micros"] == 12_500_000

    table = levqor("budgets", "list", cwd=tmp_path, SQLITE_PATH=db)
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split()[:4] == ["SUBJECT", "ID", "PERIOD", "LIMIT"]
    assert row.split()[:5] == ["key", key_id, "day", "12.5", "USD"]
    as_json = json.loads(levqor("budgets", "list", "--json", cwd=tmp_path, SQLITE_PATH=db).stdout)
    assert as_json == {"budgets": [budget]}

    usage = levqor("usage", "--group-by", "key", "--from", "2026-01-01", "--to", "2026-01-31", "--json",
                   cwd=tmp_path, SQLITE_PATH=db)  # fmt: skip
    assert usage.returncode == 0, usage.stderr
    assert json.loads(usage.stdout) == {
        "from": "2026-01-01",
        "to": "2026-01-31",
        "group_by": "key",
        "usage": [],
    }

    removed = levqor("budgets", "delete", "--key", key_id, cwd=tmp_path, SQLITE_PATH=db)
    assert removed.returncode == 0, removed.stderr
    assert key_id in removed.stderr
    assert json.loads(levqor("budgets", "list", "--json", cwd=tmp_path, SQLITE_PATH=db).stdout) == {
        "budgets": []
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("budgets", "set", "--key", "{key}", "--period", "week", "--limit-usd", "1"),
            "invalid choice: 'week'",
        ),
        (
            ("budgets", "set", "--key", "{key}", "--period", "day", "--limit-usd", "0.0000001"),
            "micro-dollars",
        ),
        (("budgets", "set", "--key", "{key}", "--period", "day", "--limit-usd", "lots"), "not an amount"),
        (("budgets", "set", "--key", "{key}", "--period", "day", "--limit-micros", "-1"), "limit_micros"),
        (
            (
                "budgets",
                "set",
                "--key",
                "{key}",
                "--period",
                "day",
                "--limit-micros",
                "5",
                "--soft-limit-micros",
                "9",
            ),
            "soft_limit_micros must not be more than limit_micros",
        ),
        (("budgets", "set", "--key", "{key}", "--period", "day"), "--limit-usd"),
        (("budgets", "set", "--period", "day", "--limit-usd", "1"), "--key"),
        (("budgets", "set", "--user", "{key}", "--period", "day", "--limit-usd", "1"), "no user with id"),
        (("budgets", "delete", "--key", "{key}"), "no budget for the API key"),
        (("usage", "--from", "2026-02-30"), "from"),
        (("usage", "--group-by", "week"), "invalid choice: 'week'"),
    ],
)
def test_budget_commands_refuse_bad_input_clearly(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    db = str(tmp_path / "bad.db")
    assert (
        levqor(
            "keys", "create", "--name", "k", "--scopes", "jobs:read", cwd=tmp_path, SQLITE_PATH=db
        ).returncode
        == 0
    )
    key_id = levqor("keys", "list", cwd=tmp_path, SQLITE_PATH=db).stdout.splitlines()[1].split()[0]
    done = levqor(*(arg.format(key=key_id) for arg in args), cwd=tmp_path, SQLITE_PATH=db)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(levqor("budgets", "list", "--json", cwd=tmp_path, SQLITE_PATH=db).stdout) == {
        "budgets": []
    }
