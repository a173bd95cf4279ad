"""Exactly one job per tick across processes: three `levqor serve` scheduler processes on PostgreSQL
and two on SQLite, a schedule every second for about 12 s (a shorter window than an issue's 30 s: at
one tick a second, 12 ticks with every process racing for each already shows a double or a gap),
and one process restarted in the middle. Every tick in the window has one job; none has two."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy.engine import make_url
from sqlmodel import select

from levqor.db.engine import Database
from levqor.db.models import Job, ScheduleFire
from tests.conftest import TEST_WEBHOOK_SECRET, start_server_process, stop_server_process

WINDOW_S = 12


def test_one_job_per_tick_across_processes(db_url: str, db_kind: str, tmp_path: Path) -> None:
    env = {
        "LEVQOR_LOG_FORMAT": "json",
        "RATE_BURST": "1000000",
        "RATE_GLOBAL": "1000000",
        "LEVQOR_INPROCESS_WORKER": "false",
        "LEVQOR_CALLBACK_ALLOW_PRIVATE": "true",
        "LEVQOR_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
        "LEVQOR_SCHEDULER_INTERVAL_MS": "200",
    }
    if db_kind == "sqlite":
        env["SQLITE_PATH"] = make_url(db_url).database or ""
    else:
        env["LEVQOR_DATABASE_URL"] = db_url
    count = 3 if db_kind == "postgres" else 2
    procs = [start_server_process(env, tmp_path / f"server{i}.log") for i in range(count)]
    try:
        body = {
            "name": "tick",
            "every_s": 1,
            "on_missed": "run_once",
            "job": {"workflow": "echo", "payload": {}},
        }
        made = httpx.post(f"{procs[0].url}/api/v1/schedules", json=body, timeout=10)
        assert made.status_code == 201, made.text
        schedule_id = made.json()["schedule"]["id"]
        first = datetime.fromisoformat(made.json()["schedule"]["next_fire_at"])
        time.sleep(WINDOW_S / 2)
        stop_server_process(procs[-1])  # a restart in the middle
        procs[-1] = start_server_process(env, tmp_path / "restarted.log")
        time.sleep(WINDOW_S / 2)
        paused = httpx.patch(
            f"{procs[0].url}/api/v1/schedules/{schedule_id}", json={"enabled": False}, timeout=10
        )
        assert paused.status_code == 200
    finally:
        for proc in procs:
            stop_server_process(proc)
    db = Database(db_url)
    try:
        with db.session() as session:
            fires = list(session.exec(select(ScheduleFire).order_by(ScheduleFire.fire_time)))  # type: ignore[arg-type]
            jobs = list(session.exec(select(Job)))
    finally:
        db.dispose()
    times = [fire.fire_time for fire in fires]
    assert len(times) >= WINDOW_S - 2
    assert times[0] == first
    # One fire a second, none missing and none twice, each with its own job.
    assert times == [first + timedelta(seconds=k) for k in range(len(times))]
    assert all(fire.kind == "tick" and fire.job_id is not None for fire in fires)
    assert sorted(str(job.id) for job in jobs) == sorted(str(fire.job_id) for fire in fires)
