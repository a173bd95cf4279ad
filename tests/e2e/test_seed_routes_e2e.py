"""The seed routes against `levqor serve` started as a subprocess, as a user runs it, on both databases."""

from __future__ import annotations

import httpx

from tests.conftest import ServerProcess
from tests.seed_contract import check_seed_contract
from tests.support import assert_error


def test_seed_routes_answer_as_documented(server_process: ServerProcess) -> None:
    with httpx.Client(base_url=server_process.url, timeout=30) as http:
        check_seed_contract(http)
        # A representative bad request: the contract's body, no traceback, over the real socket.
        assert_error(http.post("/api/v1/intake", json={"workflow": "echo"}), 400, "invalid_request")
    assert "Traceback" not in server_process.log()
