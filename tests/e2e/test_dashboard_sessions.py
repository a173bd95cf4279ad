"""`levqor serve --workers 2` without LEVQOR_SESSION_SECRET: both server processes share the secret
the command made at start, so a sign-in holds whichever process answers, and the log says sign-ins
end with the server."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import start_server_process, stop_server_process
from tests.ops_support import server_env

KEY = "dashboard-sessions-key-0123456789"
CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')
SIGN_INS = 20  # each on a new connection, which either process may accept


@pytest.mark.parametrize("db_kind", ["sqlite"])
def test_sessions_hold_across_server_processes(db_url: str, tmp_path: Path, db_kind: str) -> None:
    proc = start_server_process(server_env(db_url, API_KEYS=KEY), tmp_path / "server.log", "--workers", "2")
    try:
        answers = []
        for _ in range(SIGN_INS):
            with httpx.Client(base_url=proc.url) as http:
                token = CSRF.search(http.get("/dashboard/login").text)
                assert token is not None
                signed = http.post("/dashboard/login", data={"key": KEY, "csrf": token.group(1)})
                assert signed.status_code == 303
            # A new client, with the cookie only: a new connection, so possibly the other process.
            with httpx.Client(
                base_url=proc.url, headers={"Cookie": signed.headers["set-cookie"].split(";")[0]}
            ) as again:
                answers.append(again.get("/dashboard/jobs").status_code)
        assert answers == [200] * SIGN_INS
    finally:
        stop_server_process(proc)
    assert "LEVQOR_SESSION_SECRET is not set: dashboard sign-ins last until this server stops" in proc.log()
