"""Exactly one job per tick across processes (issue 13): three `levqor serve` scheduler processes on
PostgreSQL and two on SQLite, a schedule every second for 30 s with one process restarted in the
middle, and every tick of the window has one job, none two. Then downtime: every process stopped for
a few ticks and started again; `run_once` fires one `missed` job standing for exactly the ticks of
the gap and fires no tick twice, `skip` fires nothing for the gap. Fires and jobs are counted in the
database."""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url
from sqlmodel import col, select

from levqor.db.engine import Database
from levqor.db.models import Job, ScheduleFire
from tests.conftest import (
    TEST_WEBHOOK_SECRET,
    ServerProcess,
    start_server_process,
    stop_server_process,
)

WINDOW_S = 30
TICK = timedelta(seconds=1)
# The downtime test: ticks up to GRACE_S late still fire on time, older ones are missed; every
# process is down for DOWN_S (and the time to start again), so a few ticks are always missed.
GRACE_S = 2
DOWN_S = 4
RUN_S = 2  # before and after the downtime


def server_env(db_url: str, db_kind: str, **extra: str) -> dict[str, str]:
    env = {
        "LEVQOR_LOG_FORMAT": "json",
        "RATE_BURST": "1000000",
        "RATE_GLOBAL": "1000000",
        "LEVQOR_INPROCESS_WORKER": "false",
        "LEVQOR_CALLBACK_ALLOW_PRIVATE": "true",
        "LEVQOR_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
        "LEVQOR_SCHEDULER_INTERVAL_MS": "200",
        **extra,
    }
    if db_kind == "sqlite":
        env["SQLITE_PATH"] = make_url(db_url).database or ""
    else:
        env["LEVQOR_DATABASE_URL"] = db_url
    return env


def process_count(db_kind: str) -> int:
    return 3 if db_kind == "postgres" else 2


def start_all(env: dict[str, str], logs: list[Path]) -> list[ServerProcess]:
    """One process a log, started side by side (each waits for its /health)."""
    with ThreadPoolExecutor(len(logs)) as pool:
        return list(pool.map(lambda log: start_server_process(env, log), logs))


def stop_all(procs: list[ServerProcess]) -> None:
    for proc in procs:
        proc.process.terminate()
    for proc in procs:
        stop_server_process(proc)


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    """The processes a test starts, stopped at its end whatever happened."""
    procs: list[ServerProcess] = []
    yield procs
    stop_all(procs)


def create_every_second(url: str, name: str, on_missed: str) -> tuple[str, datetime]:
    body = {"name": name, "every_s": 1, "on_missed": on_missed, "job": {"workflow": "echo", "payload": {}}}
    made = httpx.post(f"{url}/api/v1/schedules", json=body, timeout=10)
    assert made.status_code == 201, made.text
    schedule = made.json()["schedule"]
    return schedule["id"], datetime.fromisoformat(schedule["next_fire_at"])


def pause(url: str, schedule_id: str) -> None:
    paused = httpx.patch(f"{url}/api/v1/schedules/{schedule_id}", json={"enabled": False}, timeout=10)
    assert paused.status_code == 200, paused.text


@dataclass(frozen=True)
class Stored:
    fires: list[ScheduleFire]  # oldest tick first
    jobs: list[Job]


def stored(db_url: str, schedule_id: str) -> Stored:
    """A schedule's fires, and the jobs its fires submitted (each fire's own Idempotency-Key)."""
    db = Database(db_url)
    try:
        with db.session() as session:
            fires = session.exec(
                select(ScheduleFire)
                .where(col(ScheduleFire.schedule_id) == uuid.UUID(schedule_id))
                .order_by(col(ScheduleFire.fire_time))
            )
            jobs = session.exec(
                select(Job).where(col(Job.idempotency_key).contains(f"schedule:{schedule_id}:"))
            )
            return Stored(fires=list(fires), jobs=list(jobs))
    finally:
        db.dispose()


def assert_one_job_a_fire(found: Stored) -> None:
    assert all(fire.job_id is not None and fire.error is None for fire in found.fires)
    assert sorted(str(job.id) for job in found.jobs) == sorted(str(fire.job_id) for fire in found.fires)


def ticks_of(fire: ScheduleFire) -> list[datetime]:
    """The ticks a fire stands for: its own, or the `ticks` missed ones up to its `fire_time`."""
    return [fire.fire_time - k * TICK for k in reversed(range(fire.ticks))]


def test_one_job_per_tick_across_processes(
    db_url: str, db_kind: str, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    env = server_env(db_url, db_kind)
    count = process_count(db_kind)
    servers.extend(start_all(env, [tmp_path / f"server{i}.log" for i in range(count)]))
    schedule_id, first = create_every_second(servers[0].url, "tick", "run_once")
    time.sleep(WINDOW_S / 2)
    stop_server_process(servers[-1])  # a restart in the middle, while the others run on
    servers[-1] = start_server_process(env, tmp_path / "restarted.log")
    time.sleep(WINDOW_S / 2)
    paused_at = datetime.now(UTC)
    pause(servers[0].url, schedule_id)
    stop_all(servers)

    found = stored(db_url, schedule_id)
    times = [fire.fire_time for fire in found.fires]
    # One fire a second from the first tick, none missing and none twice, each with its own job ...
    assert times == [first + k * TICK for k in range(len(times))]
    assert all(fire.kind == "tick" and fire.ticks == 1 for fire in found.fires)
    assert_one_job_a_fire(found)
    # ... up to the pause: every tick a scheduler pass had time for is there.
    due = [first + k * TICK for k in range(WINDOW_S + 5) if first + k * TICK <= paused_at - 2 * TICK]
    assert len(due) >= WINDOW_S - 3
    assert times[: len(due)] == due


def test_downtime_run_once_fires_one_job_for_the_gap_and_skip_none(
    db_url: str, db_kind: str, tmp_path: Path, servers: list[ServerProcess]
) -> None:
    env = server_env(db_url, db_kind, LEVQOR_SCHEDULER_GRACE_S=str(GRACE_S))
    count = process_count(db_kind)
    servers.extend(start_all(env, [tmp_path / f"before{i}.log" for i in range(count)]))
    once_id, _ = create_every_second(servers[0].url, "once", "run_once")
    skip_id, _ = create_every_second(servers[0].url, "skip", "skip")
    time.sleep(RUN_S)
    stop_all(servers)  # no scheduler runs anywhere
    stopped_at = datetime.now(UTC)
    time.sleep(DOWN_S)
    servers[:] = start_all(env, [tmp_path / f"after{i}.log" for i in range(count)])
    started_at = datetime.now(UTC)
    time.sleep(RUN_S)
    for schedule_id in (once_id, skip_id):
        pause(servers[0].url, schedule_id)
    stop_all(servers)

    once = stored(db_url, once_id)
    [missed] = [fire for fire in once.fires if fire.kind == "missed"]
    assert all(fire.kind == "tick" and fire.ticks == 1 for fire in once.fires if fire is not missed)
    # Every tick stood for once, and only once: the missed fire's count is exactly the gap's ticks.
    covered = [tick for fire in once.fires for tick in ticks_of(fire)]
    start = covered[0]
    assert covered == [start + k * TICK for k in range(len(covered))]
    gap = ticks_of(missed)
    assert stopped_at - 2 * TICK <= gap[0]
    assert gap[-1] <= started_at
    assert missed.ticks >= DOWN_S - GRACE_S
    ticks_before = [fire for fire in once.fires if fire.fire_time < gap[0]]
    ticks_after = [fire for fire in once.fires if fire.fire_time > missed.fire_time]
    assert len(ticks_before) >= RUN_S - 1
    assert len(ticks_after) >= RUN_S - 1
    assert_one_job_a_fire(once)

    skip = stored(db_url, skip_id)
    assert all(fire.kind == "tick" and fire.ticks == 1 for fire in skip.fires)
    times = [fire.fire_time for fire in skip.fires]
    steps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # One step over the gap, no tick in it fired, every other tick once.
    [jump] = [index for index, step in enumerate(steps) if step != TICK]
    assert steps[jump] >= (DOWN_S - GRACE_S + 1) * TICK
    assert stopped_at - 2 * TICK <= times[jump] + TICK  # the first tick skipped ...
    assert times[jump + 1] - TICK <= started_at  # ... and the last
    assert len(set(times)) == len(times)
    assert_one_job_a_fire(skip)
