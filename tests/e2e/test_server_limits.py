"""`levqor serve` as users run it, attacked from loopback: request heads too large or too slow, a crowd
of slow clients, and development mode across server processes."""

from __future__ import annotations

import contextlib
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ServerProcess, start_server_process, stop_server_process

HEAD_TIMEOUT_S = 1


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the module: what these tests send never changes what it stores."""
    tmp_path = tmp_path_factory.mktemp("served")
    env = {
        "SQLITE_PATH": str(tmp_path / "levqor.db"),
        "LEVQOR_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
        "LEVQOR_INPROCESS_WORKER": "false",
        "RATE_BURST": "100000",
        "RATE_GLOBAL": "100000",
    }
    proc = start_server_process(env, tmp_path / "server.log")
    yield proc
    stop_server_process(proc)


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def read_answer(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))


def test_an_unfinished_head_over_the_cap_is_431(served: ServerProcess) -> None:
    sock = connect(served.url)
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000)
    answer = read_answer(sock)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"error":"invalid_request"' in answer
    assert b"x-content-type-options: nosniff" in answer.lower()


@pytest.mark.parametrize("path", ["/health", "/api/v1/intake", "/graphql", "/no/such/route"])
def test_a_whole_head_over_the_cap_is_431_with_the_request_id(served: ServerProcess, path: str) -> None:
    response = httpx.get(f"{served.url}{path}", headers={"X-Big": "a" * 20_000})
    assert response.status_code == 431
    body = response.json()
    assert body["error"] == "invalid_request"
    assert body["request_id"] == response.headers["X-Request-Id"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    long_path = httpx.get(f"{served.url}/api/v1/status/{'a' * 20_000}")
    assert long_path.status_code == 431


def test_huge_heads_are_cut_off_and_memory_stays_flat(served: ServerProcess) -> None:
    """Ten 32 MiB headers once were answered 200 and grew the process by ~385 MB."""
    before = rss_kib(served.process.pid)
    for _ in range(10):
        sock = connect(served.url)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        try:
            while sent < 32 * 1024 * 1024:
                sock.sendall(b"a" * 65536)
                sent += 65536
        except OSError:
            pass  # the server refused and closed while we were still sending
        sock.close()
        # What was sent beyond the cap sat in the kernel's socket buffers, never in the server.
        assert sent < 32 * 1024 * 1024, "the server read a 32 MiB head"
    assert rss_kib(served.process.pid) - before < 20 * 1024
    assert httpx.get(f"{served.url}/health").status_code == 200


def test_a_head_under_the_cap_is_served(served: ServerProcess) -> None:
    response = httpx.get(f"{served.url}/health", headers={"X-Fine": "a" * 8000})
    assert response.status_code == 200


def test_a_head_that_never_finishes_is_408_after_the_timeout(served: ServerProcess) -> None:
    sock = connect(served.url)
    started = time.monotonic()
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    answer = read_answer(sock)
    waited = time.monotonic() - started
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert HEAD_TIMEOUT_S * 0.8 <= waited < HEAD_TIMEOUT_S + 5


def test_a_connection_that_sends_nothing_is_closed_after_the_timeout(served: ServerProcess) -> None:
    sock = connect(served.url)
    started = time.monotonic()
    assert read_answer(sock) == b""
    assert time.monotonic() - started < HEAD_TIMEOUT_S + 5
    sock.close()


def test_a_crowd_of_slow_clients_does_not_keep_health_from_answering(tmp_path: Path) -> None:
    """1,100 sockets that never finish a head, against a server allowed 1,024 open files: each is
    cut at the head timeout, so the server keeps answering."""
    env = {
        "SQLITE_PATH": str(tmp_path / "slow.db"),
        "LEVQOR_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
        "LEVQOR_INPROCESS_WORKER": "false",
    }

    def limit_open_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))

    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    if limits[0] < 1200 and limits[1] < 1200:
        pytest.skip("this test needs more than 1,200 open files for its own sockets")
    if limits[0] < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, limits[1]), limits[1]))
    proc = start_server_process(env, tmp_path / "server.log", preexec_fn=limit_open_files)
    crowd: list[socket.socket] = []
    try:
        host, port = proc.url.removeprefix("http://").split(":")
        for _ in range(1100):
            sock = socket.socket()
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                sock.connect((host, int(port)))
            crowd.append(sock)
        time.sleep(0.5)
        for sock in crowd:
            with contextlib.suppress(OSError):
                sock.send(b"GET /health HTTP/1.1\r\n")
        deadline = time.monotonic() + HEAD_TIMEOUT_S + 20
        while True:
            try:
                if httpx.get(f"{proc.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "/health did not answer while slow clients held sockets"
            time.sleep(0.2)
    finally:
        for sock in crowd:
            sock.close()
        stop_server_process(proc)


def test_development_mode_ends_in_every_server_process_at_once(tmp_path: Path) -> None:
    """Under --workers 2, the first managed key ends development mode in both processes for every
    request that comes after it (it once outlived the key for up to a second in the other)."""
    env = {
        "SQLITE_PATH": str(tmp_path / "dev.db"),
        "LEVQOR_INPROCESS_WORKER": "false",
        "RATE_BURST": "100000",
        "RATE_GLOBAL": "100000",
    }
    proc = start_server_process(env, tmp_path / "server.log", "--workers", "2")
    try:
        with httpx.Client(base_url=proc.url, timeout=10) as http:
            intake = {"workflow": "echo", "payload": {}}
            # Both processes serve requests in development mode first.
            assert all(http.post("/api/v1/intake", json=intake).status_code == 202 for _ in range(10))
            made = http.post("/api/v1/keys", json={"name": "first", "scopes": ["admin"]})
            assert made.status_code == 201
            # New connections, so that both processes answer some.
            answers = [
                httpx.post(f"{proc.url}/api/v1/intake", json=intake, timeout=10).status_code
                for _ in range(40)
            ]
    finally:
        stop_server_process(proc)
    assert answers == [401] * 40
