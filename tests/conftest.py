"""Shared fixtures: a clean database per test on SQLite and PostgreSQL, and real servers to talk to.

Services come from `LEVQOR_TEST_PG_URL` and `LEVQOR_TEST_REDIS_URL`. Without them the tests that need
them are skipped with the reason, unless `LEVQOR_REQUIRE_SERVICES=1` (set by `.ci/run`), which turns
a missing service into a failure.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from levqor.callbacks.guard import HostResolver
from levqor.config import Settings
from levqor.db.engine import Database, create_db_engine
from levqor.db.migrate import upgrade
from levqor.http.app import create_app
from levqor.http.server_protocol import HeadLimitedProtocol

REQUIRE_SERVICES = os.environ.get("LEVQOR_REQUIRE_SERVICES") == "1"
PG_URL = os.environ.get("LEVQOR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("LEVQOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DB_KINDS = ("sqlite", "postgres")
ROOT = Path(__file__).resolve().parent.parent


def service_unavailable(name: str, reason: object) -> None:
    message = f"{name} is not reachable: {reason}"
    if REQUIRE_SERVICES:
        pytest.fail(f"{message} (LEVQOR_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


# --- databases ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A database of its own for this test session, migrated once; dropped at the end."""
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        conn = admin.connect()
    except Exception as exc:  # any driver error means the service is not there
        admin.dispose()
        service_unavailable("PostgreSQL", exc)
        raise
    name = f"levqor_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    engine = create_db_engine(url)
    upgrade(engine)
    engine.dispose()
    try:
        yield url
    finally:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file, copied for each test (faster than migrating each time)."""
    path = tmp_path_factory.mktemp("template") / "levqor.db"
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade(engine)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return path


def _truncate(url: str) -> None:
    tables = ", ".join(f'"{table.name}"' for table in SQLModel.metadata.sorted_tables)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    engine.dispose()


@pytest.fixture(params=DB_KINDS)
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(db_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A clean, migrated database for this test, on the parametrised dialect."""
    if db_kind == "sqlite":
        path = tmp_path / "levqor.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url = str(request.getfixturevalue("pg_database_url"))
    _truncate(url)
    return url


# The callbacks' signing secret of the test servers (`whsec_` and the base64 of 32 bytes).
TEST_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"levqor test webhook secret 32 b!").decode()


def settings_for(db_url: str, **env: str) -> Settings:
    """Test settings: the given database, limits out of the way, no in-process worker, and
    callback URLs not resolved (tests reach no DNS; tests/integration/test_callback_guard.py turns
    the guard on)."""
    values = {
        "LEVQOR_LOG_FORMAT": "text",
        "RATE_BURST": "1000000",
        "RATE_GLOBAL": "1000000",
        "LEVQOR_INPROCESS_WORKER": "false",
        "LEVQOR_CALLBACK_ALLOW_PRIVATE": "true",
        "LEVQOR_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,  # callbacks need a secret to be signed with
    }
    if db_url.startswith("sqlite"):
        values["SQLITE_PATH"] = make_url(db_url).database or ""
    else:
        values["LEVQOR_DATABASE_URL"] = db_url
    values.update(env)
    return Settings.from_mapping(values)


@pytest.fixture
def settings(db_url: str) -> Settings:
    return settings_for(db_url)


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


# --- redis -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis of `LEVQOR_TEST_REDIS_URL`, checked once; tests keep their keys under a prefix of their
    own (see `redis_prefix`), so they can share it with each other and with anything else."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable("Redis", exc)
        raise
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix for this test; its keys are deleted afterwards."""
    import redis

    prefix = f"levqor-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# --- servers -----------------------------------------------------------------------------------


@dataclass
class LiveServer:
    """A real uvicorn server on a loopback port, serving the app in a thread of the test process."""

    url: str
    settings: Settings
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def serve_in_thread(config: uvicorn.Config) -> tuple[uvicorn.Server, threading.Thread, int]:
    """A uvicorn server for `config` in a thread, on a free loopback port; returns once it serves."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    return server, thread, port


def start_live_server(settings: Settings, *, resolver: HostResolver | None = None) -> LiveServer:
    # As `levqor serve`: its HTTP protocol, and X-Forwarded-For is the app's to judge
    # (LEVQOR_TRUSTED_PROXIES), not uvicorn's.
    config = uvicorn.Config(
        create_app(settings, resolver=resolver),
        log_config=None,
        lifespan="on",
        access_log=False,
        proxy_headers=False,
        http=HeadLimitedProtocol.with_limits(settings),
    )
    server, thread, port = serve_in_thread(config)
    return LiveServer(url=f"http://127.0.0.1:{port}", settings=settings, server=server, thread=thread)


@pytest.fixture
def make_server(db_url: str) -> Iterator[Callable[..., LiveServer]]:
    """Start servers with settings of the test's choosing (environment-style overrides)."""
    started: list[LiveServer] = []

    def make(**env: str) -> LiveServer:
        live = start_live_server(settings_for(db_url, **env))
        started.append(live)
        return live

    yield make
    for live in started:
        live.stop()


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server()


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


# --- the server as a subprocess ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill_group(self, timeout_s: float = 30) -> None:
        """SIGKILL to every process of a server started with `new_group=True` at once, as a crash or
        the OOM killer would: the supervisor and each of its `--workers` server processes. Returns
        when none of them is left running."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=timeout_s)
        deadline = time.monotonic() + timeout_s
        while group_members(self.process.pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"processes of group {self.process.pid} outlived SIGKILL")
            time.sleep(0.02)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`, from /proc."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended while we looked
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def start_server_process(
    env: dict[str, str],
    log_path: Path,
    *args: str,
    preexec_fn: Callable[[], None] | None = None,
    new_group: bool = False,
    port: int | None = None,
) -> ServerProcess:
    """`levqor serve` as a user runs it, waiting until /health answers; with `new_group`, in a
    process group of its own (see `ServerProcess.kill_group`); on a free port, or on `port` (a
    server restarted where a proxy expects it)."""
    port = port or free_port()
    full_env = {**os.environ, "PORT": str(port), "LEVQOR_HOST": "127.0.0.1", **env}
    # The child keeps its own handle on the log; ours is closed at once.
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "levqor", "serve", *args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=log_path.parent,
            preexec_fn=preexec_fn,  # a resource limit for the server alone
            start_new_session=new_group,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"levqor serve exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"levqor serve did not answer in time:\n{log_path.read_text()}")
        time.sleep(0.1)
    return ServerProcess(url=url, process=process, log_path=log_path)


def stop_server_process(proc: ServerProcess) -> None:
    if proc.process.poll() is None:
        proc.process.terminate()
        try:
            proc.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.process.kill()
            proc.process.wait()


@pytest.fixture
def server_process(db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    env = {
        "LEVQOR_LOG_FORMAT": "json",
        "RATE_BURST": "1000000",
        "RATE_GLOBAL": "1000000",
        "LEVQOR_INPROCESS_WORKER": "false",
        "LEVQOR_CALLBACK_ALLOW_PRIVATE": "true",  # as settings_for
        "LEVQOR_WEBHOOK_SECRET": TEST_WEBHOOK_SECRET,
    }
    if db_url.startswith("sqlite"):
        env["SQLITE_PATH"] = make_url(db_url).database or ""
    else:
        env["LEVQOR_DATABASE_URL"] = db_url
    proc = start_server_process(env, tmp_path / "server.log")
    yield proc
    stop_server_process(proc)
