"""What API keys and rate limits cost per request, in one process, without sockets. Prints one JSON line.

Run it as a module (bench/http.py would hide the standard library's `http` from a script here):

    python -m bench.auth_limits [--rounds 15] [--per-round 200] [--postgres URL] [--redis URL]

- Authentication: `Authenticator.authenticate` for no key, a static `API_KEYS` key and a managed
  `lvq_` key. A managed key is looked up in the database on every request (one read in a worker
  thread), so a revocation holds on the next request in every process; this shows what that costs,
  alone and with 32 requests at once, whose look-ups share one read (per request).
- Rate limits: `RateLimiter.hit` (the client's limit, the global one, and the counters for the
  headers) with `memory://` and, given --redis, `redis://`; beside `memory://`, the same two limits
  and counters charged through `limits`' own asyncio memory storage, the reference for Levqor's
  in-process counters (`levqor.http.ratelimit_counters.LocalWindows`).
The variants run interleaved, round after round, and each figure is the median over the rounds, in
microseconds per request: other load on the machine moves all of them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from bench.result_file import add_json_option, write_json
from levqor.config import Settings
from levqor.db.engine import Database
from levqor.db.migrate import upgrade
from levqor.http.ratelimit import RateLimiter
from levqor.resolvers import keys
from levqor.resolvers.auth import Authenticator
from levqor.resolvers.context import DEV_PRINCIPAL, Context

STATIC_KEY = "bench-static-key"
CONCURRENT = 32
FAR_ABOVE_LOAD = "1000000000/minute"


async def interleaved(
    variants: dict[str, Callable[[], Awaitable[object]]], rounds: int, per: int
) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, call in variants.items():
            started = time.perf_counter()
            for _ in range(per):
                await call()
            samples[name].append((time.perf_counter() - started) / per * 1e6)
    return {name: round(statistics.median(values), 1) for name, values in samples.items()}


async def auth_costs(db_url: str, rounds: int, per: int) -> dict[str, float]:
    settings = Settings.from_mapping({"API_KEYS": STATIC_KEY, **_db_env(db_url)})
    db = Database(settings.db_url)
    try:
        upgrade(db.engine)
        made = await keys.create_api_key(
            Context(db, settings, DEV_PRINCIPAL), {"name": "bench", "scopes": ["jobs:read"]}
        )
        auth = Authenticator(db, settings)
        await auth.start()
        try:
            figures = await interleaved(
                {
                    "no_key": lambda: auth.authenticate(None),
                    "static_key": lambda: auth.authenticate(STATIC_KEY),
                    "managed_key": lambda: auth.authenticate(made.secret),
                    f"managed_key_{CONCURRENT}_at_once": lambda: asyncio.gather(
                        *(auth.authenticate(made.secret) for _ in range(CONCURRENT))
                    ),
                },
                rounds,
                per,
            )
        finally:
            await auth.stop()
        figures[f"managed_key_{CONCURRENT}_at_once"] = round(
            figures[f"managed_key_{CONCURRENT}_at_once"] / CONCURRENT, 1
        )
        return figures
    finally:
        db.dispose()


async def limiter_costs(storage: str, rounds: int, per: int) -> dict[str, float]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings.from_mapping(
        {
            "RATE_BURST": FAR_ABOVE_LOAD,
            "RATE_GLOBAL": FAR_ABOVE_LOAD,
            "LEVQOR_RATE_STORAGE": storage,
            "LEVQOR_RATE_KEY_PREFIX": prefix,
        }
    )
    limiter = RateLimiter(settings)
    clients = [f"198.51.100.{n}" for n in range(50)]
    turn = iter(range(10**12))
    variants: dict[str, Callable[[], Awaitable[object]]] = {
        "hit": lambda: limiter.hit(clients[next(turn) % len(clients)])
    }
    if storage == "memory://":
        variants["limits_memory_storage"] = limits_memory_hit(clients, turn)
    try:
        return await interleaved(variants, rounds, per)
    finally:
        await limiter.storage.reset()  # only the keys under this run's prefix
        await limiter.close()


def limits_memory_hit(clients: list[str], turn: Iterator[int]) -> Callable[[], Awaitable[object]]:
    """What `RateLimiter.hit` does for `memory://`, through `limits`' own memory storage."""
    strategy = SlidingWindowCounterRateLimiter(MemoryStorage())
    per_client, whole_service = parse(FAR_ABOVE_LOAD), parse(FAR_ABOVE_LOAD)

    async def hit() -> object:
        client = clients[next(turn) % len(clients)]
        await strategy.hit(per_client, "ip", client)
        await strategy.hit(whole_service, "all")
        return await asyncio.gather(
            strategy.get_window_stats(per_client, "ip", client),
            strategy.get_window_stats(whole_service, "all"),
        )

    return hit


def _db_env(db_url: str) -> dict[str, str]:
    if db_url.startswith("sqlite:///"):
        return {"SQLITE_PATH": db_url.removeprefix("sqlite:///")}
    return {"LEVQOR_DATABASE_URL": db_url}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=200)
    parser.add_argument(
        "--postgres", help="a scratch PostgreSQL database URL (its api_keys table gets a row)"
    )
    parser.add_argument("--redis", help="a Redis URL for the shared-storage figures")
    add_json_option(parser)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        figures: dict[str, object] = {"unit": "microseconds per request, median of rounds"}
        databases = {"sqlite": f"sqlite:///{Path(scratch) / 'bench.db'}"}
        if args.postgres:
            databases["postgres"] = args.postgres
        for name, url in databases.items():
            figures[f"authenticate_{name}"] = await auth_costs(url, args.rounds, args.per_round)
        storages = {"memory": "memory://", **({"redis": args.redis} if args.redis else {})}
        for name, storage in storages.items():
            figures[f"rate_limit_{name}"] = await limiter_costs(storage, args.rounds, args.per_round)
    write_json(args.json, figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    asyncio.run(main())
