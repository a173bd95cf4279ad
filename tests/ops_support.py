"""Helpers of the operations tests: a table taken out of service, servers as subprocesses, their logs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from tests.conftest import ServerProcess

LOG_WAIT_S = 10.0  # how long a test waits for a line the server has yet to flush


@contextmanager
def table_out_of_service(db_url: str, table: str) -> Iterator[None]:
    """Rename `table` so that every statement on it fails in the driver (a broken database as an
    operator could cause it), and put it back afterwards: the PostgreSQL test database is shared by
    the whole session. Foreign keys follow the rename on both dialects."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'ALTER TABLE "{table}" RENAME TO "{table}_out_of_service"')
        yield
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'ALTER TABLE "{table}_out_of_service" RENAME TO "{table}"')
        engine.dispose()


def server_env(db_url: str, **extra: str) -> dict[str, str]:
    """The environment of `levqor serve` on the test's database, logging JSON, limits out of the way."""
    env = {
        "LEVQOR_LOG_FORMAT": "json",
        "RATE_BURST": "1000000",
        "RATE_GLOBAL": "1000000",
        "LEVQOR_INPROCESS_WORKER": "false",
    }
    if db_url.startswith("sqlite"):
        env["SQLITE_PATH"] = make_url(db_url).database or ""
    else:
        env["LEVQOR_DATABASE_URL"] = db_url
    env.update(extra)
    return env


def log_entries(proc: ServerProcess) -> list[dict[str, Any]]:
    """The JSON lines of the server's log (anything else, such as a startup banner, is skipped)."""
    entries = []
    for line in proc.log().splitlines():
        if line.startswith("{"):
            entries.append(json.loads(line))
    return entries


def wait_for_entries(
    proc: ServerProcess, wanted: Callable[[dict[str, Any]], bool], count: int = 1
) -> list[dict[str, Any]]:
    """The log entries that satisfy `wanted`, once at least `count` of them have been written."""
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        found = [entry for entry in log_entries(proc) if wanted(entry)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
