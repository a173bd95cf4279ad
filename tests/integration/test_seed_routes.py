"""Every seed route answers as the seed document shows, on the in-thread server and both databases."""

from __future__ import annotations

import httpx

from tests.seed_contract import check_seed_contract


def test_seed_routes_answer_as_documented(client: httpx.Client) -> None:
    check_seed_contract(client)
