"""With `redis://` storage, one limit holds across several `levqor serve` processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import ServerProcess, start_server_process, stop_server_process

LIMIT = 6
LIMITED = "/api/v1/users/00000000-0000-0000-0000-000000000000"


@pytest.fixture
def two_servers(
    db_url: str, redis_url: str, redis_prefix: str, tmp_path: Path
) -> Iterator[list[ServerProcess]]:
    env = {
        "LEVQOR_LOG_FORMAT": "json",
        "LEVQOR_INPROCESS_WORKER": "false",
        "RATE_BURST": f"{LIMIT}/day",
        "RATE_GLOBAL": "1000/day",
        "LEVQOR_RATE_STORAGE": redis_url,
        "LEVQOR_RATE_KEY_PREFIX": redis_prefix,
    }
    if db_url.startswith("sqlite"):
        env["SQLITE_PATH"] = make_url(db_url).database or ""
    else:
        env["LEVQOR_DATABASE_URL"] = db_url
    servers: list[ServerProcess] = []
    try:
        for name in ("a", "b"):
            servers.append(start_server_process(env, tmp_path / f"server-{name}.log", "--no-migrate"))
        yield servers
    finally:
        for server in servers:
            stop_server_process(server)


def test_limit_is_shared_by_two_processes(two_servers: list[ServerProcess]) -> None:
    first, second = (httpx.Client(base_url=server.url, timeout=30) for server in two_servers)
    with first, second:
        remaining: list[str] = []
        for n in range(LIMIT):
            response = (first, second)[n % 2].get(LIMITED)
            assert response.status_code == 404
            remaining.append(response.headers["RateLimit-Remaining"])
        # Each process saw the other's requests: one count, not two.
        assert remaining == [str(LIMIT - 1 - n) for n in range(LIMIT)]
        for http in (first, second):
            refused = http.get(LIMITED)
            assert refused.status_code == 429
            assert refused.json()["error"] == "rate_limited"
            assert int(refused.headers["Retry-After"]) >= 1
