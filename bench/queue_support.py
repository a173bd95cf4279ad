"""What bench/queue.py shares between the systems it measures: worker processes that are always
cleaned up, scratch PostgreSQL databases that are always dropped, the one definition of a drain's
figures, and percentiles."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
POLL_S = 0.05  # how often the bench looks whether a drain is done
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Drain:
    """One system draining N pre-enqueued jobs with its worker processes.

    `jobs_per_s` is N over `drain_s`, the time from the first job starting to the last one finishing,
    both as the system itself recorded them. `startup_s` is what comes before: from spawning the
    worker processes (imports, connections, schema checks) to the first job starting, so start-up is
    reported apart from the drain the same way for every system. `wall_s` is from the spawn until the
    bench saw every job done (it polls every `POLL_S`). `succeeded` counts the jobs the system
    recorded as succeeded, each once."""

    system: str
    jobs: int
    succeeded: int
    startup_s: float
    drain_s: float
    wall_s: float

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.drain_s if self.drain_s > 0 else 0.0

    @property
    def all_succeeded(self) -> bool:
        return self.succeeded == self.jobs

    def report(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "all_succeeded": self.all_succeeded,
            "jobs_per_s": round(self.jobs_per_s, 1),
            "startup_s": round(self.startup_s, 3),
            "drain_s": round(self.drain_s, 3),
            "wall_s": round(self.wall_s, 3),
        }


def drain_from(
    system: str,
    jobs: int,
    succeeded: int,
    *,
    spawned_at: datetime,
    first: datetime,
    last: datetime,
    wall_s: float,
) -> Drain:
    """The figures of a drain from the spawn time and the first start and last finish the system
    recorded; naive timestamps are UTC (SQLite keeps them so)."""
    first, last = _utc(first), _utc(last)
    return Drain(
        system,
        jobs,
        succeeded,
        startup_s=(first - spawned_at).total_seconds(),
        drain_s=(last - first).total_seconds(),
        wall_s=wall_s,
    )


def utc_now() -> datetime:
    """The wall clock, to compare with the timestamps the systems write (all on this machine)."""
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@contextmanager
def scratch_postgres(admin_url: str, label: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one system, dropped at the end; yields its URL."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"levqor_bench_{label}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.dispose()


class Processes:
    """Subprocesses that are stopped (SIGTERM, then SIGKILL) when the block ends, whatever happens."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._running: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def spawn(
        self, name: str, args: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (self.log_dir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            list(args),
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._running.append((process, log))
        return process

    def stop_all(self) -> None:
        for process, _log in self._running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process, log in self._running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()
        self._running.clear()

    def check_alive(self) -> None:
        for process, log in self._running:
            if process.poll() is not None and process.returncode not in (0, -signal.SIGTERM):
                raise RuntimeError(f"a worker exited with {process.returncode}; see {log.name}")

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_all()


def python(*args: str) -> list[str]:
    return [sys.executable, *args]


def wait_until(
    done: Callable[[], bool], *, timeout_s: float, what: str, processes: Processes | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if processes is not None:
            processes.check_alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:.0f} s")
        time.sleep(POLL_S)


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]
