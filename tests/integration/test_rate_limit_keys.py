"""Callers with a valid key are counted per key (`LEVQOR_RATE_KEY`, or the managed key's own limit),
anonymous callers per address (`RATE_BURST`), everyone against `RATE_GLOBAL`; refused keys count
against their address, so guessing keys is no faster than anonymous requests (CONTRACT.md §6).
On the in-process counters and on Redis."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.conftest import LiveServer

LIMITED = "/api/v1/users/00000000-0000-0000-0000-000000000000"  # 404, but a limited route
STATIC_KEY = "rate-test-static-key"


@pytest.fixture(params=["memory", "redis"])
def limited_server(
    request: pytest.FixtureRequest, make_server: Callable[..., LiveServer]
) -> Callable[..., LiveServer]:
    """`make_server` with the counters in memory or in Redis; limits per day, so no window turns."""

    def make(**env: str) -> LiveServer:
        if request.param == "redis":
            redis_url = request.getfixturevalue("redis_url")
            env = {
                **env,
                "LEVQOR_RATE_STORAGE": redis_url,
                "LEVQOR_RATE_KEY_PREFIX": request.getfixturevalue("redis_prefix"),
            }
        return make_server(**env)

    return make


def statuses(http: httpx.Client, count: int, **headers: str) -> list[int]:
    return [http.get(LIMITED, headers=headers).status_code for _ in range(count)]


def test_a_key_has_its_own_allowance_apart_from_its_address(
    limited_server: Callable[..., LiveServer],
) -> None:
    live = limited_server(
        API_KEYS=STATIC_KEY, RATE_BURST="2/day", LEVQOR_RATE_KEY="5/day", RATE_GLOBAL="100/day"
    )
    with live.client() as http:
        # The address spends its anonymous allowance...
        assert statuses(http, 3) == [404, 404, 429]
        # ...and the key from the same address still has all of its own.
        keyed = http.get(LIMITED, headers={"X-Api-Key": STATIC_KEY})
        assert keyed.status_code == 404
        assert keyed.headers["RateLimit-Limit"] == "5"
        assert keyed.headers["RateLimit-Remaining"] == "4"
        assert statuses(http, 5, **{"X-Api-Key": STATIC_KEY}) == [404, 404, 404, 404, 429]


def test_a_managed_key_may_carry_its_own_limit(limited_server: Callable[..., LiveServer]) -> None:
    live = limited_server(API_KEYS=STATIC_KEY, RATE_BURST="100/day", LEVQOR_RATE_KEY="50/day")
    with live.client(headers={"X-Api-Key": STATIC_KEY}) as admin:
        made = admin.post("/api/v1/keys", json={"name": "narrow", "scopes": ["jobs:read"], "rate_limit": 3})
        assert made.status_code == 201, made.text
        assert made.json()["key"]["rate_limit"] == 3
        default = admin.post("/api/v1/keys", json={"name": "wide", "scopes": ["jobs:read"]})
        assert default.json()["key"]["rate_limit"] is None
    with live.client() as http:
        narrow = {"X-Api-Key": made.json()["secret"]}
        answers = [http.get("/api/v1/jobs", headers=narrow) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        # Per minute, as CONTRACT.md §9 counts a key's `rate_limit`.
        assert answers[0].headers["RateLimit-Limit"] == "3"
        assert answers[0].headers["RateLimit-Reset"] != ""
        wide = http.get("/api/v1/jobs", headers={"X-Api-Key": default.json()["secret"]})
        assert wide.status_code == 200
        assert wide.headers["RateLimit-Limit"] == "50"


def test_the_global_limit_counts_keyed_and_anonymous_callers(
    limited_server: Callable[..., LiveServer],
) -> None:
    live = limited_server(
        API_KEYS=STATIC_KEY, RATE_BURST="100/day", LEVQOR_RATE_KEY="100/day", RATE_GLOBAL="4/day"
    )
    with live.client() as http:
        assert statuses(http, 2) == [404, 404]
        assert statuses(http, 3, **{"X-Api-Key": STATIC_KEY}) == [404, 404, 429]
        assert statuses(http, 1) == [429]


def test_refused_keys_are_limited_per_address_before_any_look_up(
    limited_server: Callable[..., LiveServer],
) -> None:
    live = limited_server(API_KEYS=STATIC_KEY, RATE_BURST="3/day", LEVQOR_RATE_KEY="100/day")
    with live.client() as http:
        guesses = [http.get(LIMITED, headers={"X-Api-Key": f"lvq_guess{n}"}) for n in range(5)]
        assert [g.status_code for g in guesses] == [401, 401, 401, 429, 429]
        assert guesses[-1].json()["error"] == "rate_limited"
        assert int(guesses[-1].headers["Retry-After"]) >= 1
        # Until the address's allowance of refused keys refills, no key from it is checked, even a
        # good one: the answer must not tell a guesser which guess was right.
        assert http.get(LIMITED, headers={"X-Api-Key": STATIC_KEY}).status_code == 429
        # Anonymous requests have an allowance of their own.
        assert http.get(LIMITED).status_code == 404
