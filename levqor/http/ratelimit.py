"""Rate limits (CONTRACT.md §6): per client address, per API key and for the whole service.

An anonymous caller is counted per address (`RATE_BURST`), a caller with a valid key per key
(`LEVQOR_RATE_KEY`, or the managed key's own `rate_limit`), and everyone against `RATE_GLOBAL`; the
worker API has its own allowance per address (`LEVQOR_RATE_WORKER`). A key that is refused counts
against its address's allowance of refused keys (`RATE_BURST` too), and once that is spent no key
from the address is looked up until it refills: guessing keys is as slow as anonymous requests, and
never reaches the database faster.

Counters live in the storage named by `LEVQOR_RATE_STORAGE`: `memory://` for one process (counted by
`LocalWindows`), `redis://...` (through `limits`) when several processes or machines must share them.
The strategy is `limits`' sliding window counter. A caller's own limit is charged first and the
global one only if that passed, so one caller past its limit cannot use up everyone's allowance.
Limited responses carry `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` for the
tighter of the two; a refusal is 429 `rate_limited` with `Retry-After` (CONTRACT.md §4).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, RateLimitItemPerMinute, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from redis.asyncio import ConnectionPool

from levqor.config import ConfigError, Settings
from levqor.errors import RateLimited
from levqor.http.client_ip import ClientAddress
from levqor.http.ratelimit_counters import LocalWindows, Verdict
from levqor.resolvers.context import Principal

logger = logging.getLogger(__name__)

# CONTRACT.md §6: health checks, static pages (and their stylesheet, GraphiQL's and the dashboard's
# files) and metrics scrapes are never limited. `/public/metrics` is computed from the database, so
# it is, though it sits under `/public/`.
UNLIMITED_PATHS = frozenset({"/", "/health", "/faq", "/faq/", "/metrics"})
STATIC_PREFIXES = ("/legal/", "/public/", "/graphql/assets/", "/dashboard/static/")
LIMITED_UNDER_STATIC = frozenset({"/public/metrics"})
STORAGE_WARNING_INTERVAL_S = 10.0
# Managed keys' own limits are few distinct numbers; their items are kept, up to this many.
KEY_LIMIT_ITEMS_KEPT = 1024

# The worker API: remote workers long-poll and heartbeat far more often than clients submit, so these
# routes are charged to `LEVQOR_RATE_WORKER` per address instead of the other limits.
_WORKER_PATH = re.compile(r"^/api/v1/(?:workers/claim|jobs/[^/]+/(?:heartbeat|complete|fail))$")

# The items of one limit and the identifiers of whom they count.
Limit = tuple[list[RateLimitItem], tuple[str, ...]]


def is_worker_api(path: str) -> bool:
    return _WORKER_PATH.match(path) is not None


def is_unlimited(path: str) -> bool:
    if path in UNLIMITED_PATHS:
        return True
    return path.startswith(STATIC_PREFIXES) and path.rstrip("/") not in LIMITED_UNDER_STATIC


def async_storage_uri(uri: str) -> str:
    """`limits` names its asyncio storages `async+<scheme>`; settings use the plain scheme."""
    uri = uri.strip()
    return uri if uri.startswith("async+") else "async+" + uri


class RateLimiter:
    """The counters of one server process; built in the lifespan, closed at shutdown."""

    def __init__(self, settings: Settings) -> None:
        uri = async_storage_uri(settings.rate_storage)
        options: dict[str, Any] = {}
        # A Redis connection pool of our own, so that shutdown can close it.
        self._pool: ConnectionPool | None = None
        if uri.startswith("async+redis"):
            # redis-py's asyncio client (a dependency already); keys under our own prefix.
            options = {"implementation": "redispy", "key_prefix": settings.rate_key_prefix}
            plain = uri.removeprefix("async+")
            if plain.startswith(("redis://", "rediss://")):
                self._pool = options["connection_pool"] = ConnectionPool.from_url(plain)
        storage = storage_from_string(uri, wrap_exceptions=True, **options)
        if not isinstance(storage, AsyncStorage):
            raise ConfigError(f"LEVQOR_RATE_STORAGE {settings.rate_storage!r} has no asyncio storage")
        self.storage: AsyncStorage = storage
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        # In one process the counters need no storage round trips at all.
        self.local: LocalWindows | None = LocalWindows() if isinstance(storage, MemoryStorage) else None
        self.per_client: list[RateLimitItem] = parse_many(settings.rate_burst)
        self.per_key: list[RateLimitItem] = parse_many(settings.rate_key)
        self.whole_service: list[RateLimitItem] = parse_many(settings.rate_global)
        self.per_worker: list[RateLimitItem] = parse_many(settings.rate_worker)
        self._own_key_limits: dict[int, list[RateLimitItem]] = {}
        self.client_address = ClientAddress(settings.trusted_proxies)
        self._warned_at = -math.inf

    async def check(self) -> bool:
        """Whether the storage answers (a Redis that is down does not stop the server)."""
        try:
            return await self.storage.check()
        except StorageError:
            return False

    async def hit(
        self,
        client_ip: str,
        cost: int = 1,
        *,
        principal: Principal | None = None,
        worker_api: bool = False,
    ) -> Verdict:
        """Charge `cost` requests to the caller (its key, or its address) and to the service, or, for
        the worker API, to the address's worker allowance; refuse if either is spent."""
        if worker_api:
            limits: list[Limit] = [(self.per_worker, ("worker", client_ip))]
        elif principal is not None and principal.key_id is not None:
            limits = [(self._key_items(principal), ("key", principal.key_id)), (self.whole_service, ("all",))]
        else:
            limits = [(self.per_client, ("ip", client_ip)), (self.whole_service, ("all",))]
        return await self._charge(limits, cost)

    async def may_present_key(self, client_ip: str) -> Verdict:
        """Whether the address may have one more key checked (its refused keys are within
        `RATE_BURST`); charges nothing."""
        return await self._charge(self._refused_keys(client_ip), 1, record=False)

    async def key_refused(self, client_ip: str) -> None:
        await self._charge(self._refused_keys(client_ip), 1)

    def _refused_keys(self, client_ip: str) -> list[Limit]:
        return [(self.per_client, ("refused-key", client_ip))]

    def _key_items(self, principal: Principal) -> list[RateLimitItem]:
        per_minute = principal.rate_limit
        if per_minute is None:
            return self.per_key
        items = self._own_key_limits.get(per_minute)
        if items is None:
            items = [RateLimitItemPerMinute(per_minute)]
            if len(self._own_key_limits) < KEY_LIMIT_ITEMS_KEPT:
                self._own_key_limits[per_minute] = items
        return items

    async def _charge(self, limits: list[Limit], cost: int, *, record: bool = True) -> Verdict:
        if self.local is not None:
            return self._charge_local(self.local, limits, cost, record)
        try:
            return await self._charge_storage(limits, cost, record)
        except StorageError:
            # Availability over limiting: an unreachable Redis lets requests through, loudly.
            now = time.monotonic()
            if now - self._warned_at >= STORAGE_WARNING_INTERVAL_S:
                self._warned_at = now
                logger.warning("rate-limit storage unreachable: requests are not limited", exc_info=True)
            return Verdict(allowed=True)

    def _charge_local(self, local: LocalWindows, limits: list[Limit], cost: int, record: bool) -> Verdict:
        best: Verdict | None = None
        now = time.time()
        for items, identifiers in limits:
            for item in items:
                # The same limit for the same caller as `item.key_for(*identifiers)`, built cheaper.
                expiry_s = item.get_expiry()
                key = (identifiers, item.amount, expiry_s)
                verdict = local.charge(key, item.amount, expiry_s, cost, now, record=record)
                if not verdict.allowed:
                    return verdict
                if best is None or _tighter(verdict, best):
                    best = verdict
        return best or Verdict(allowed=True)

    async def _charge_storage(self, limits: list[Limit], cost: int, record: bool) -> Verdict:
        charged: list[tuple[RateLimitItem, tuple[str, ...]]] = []
        for items, identifiers in limits:
            for item in items:
                check = self.strategy.hit if record else self.strategy.test
                if not await check(item, *identifiers, cost=cost):
                    return await self._verdict(False, [(item, identifiers)])
                charged.append((item, identifiers))
        if not record:
            return Verdict(allowed=True)  # a look that passed needs no counters: no round trips
        return await self._verdict(True, charged)

    async def _verdict(self, allowed: bool, items: list[tuple[RateLimitItem, tuple[str, ...]]]) -> Verdict:
        """The verdict with the counters of the tightest limit among `items`."""
        # Read together: on Redis the round trips overlap instead of following one another.
        all_stats = await asyncio.gather(
            *(self.strategy.get_window_stats(item, *identifiers) for item, identifiers in items)
        )
        now = time.time()
        best: Verdict | None = None
        for (item, _identifiers), stats in zip(items, all_stats, strict=True):
            reset_s = max(0, math.ceil(stats.reset_time - now))
            verdict = Verdict(allowed, item.amount, max(0, stats.remaining), reset_s)
            if best is None or _tighter(verdict, best):
                best = verdict
        return best or Verdict(allowed=allowed)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()


def _tighter(verdict: Verdict, than: Verdict) -> bool:
    return (verdict.remaining, verdict.limit or 0) < (than.remaining, than.limit or 0)


@dataclass(slots=True)
class Allowance:
    """A request's handle on the limiter, for GraphQL to charge each extra root mutation field."""

    limiter: RateLimiter
    client_ip: str
    request_counted: bool  # an HTTP request has paid for one field already; a WebSocket message has not
    principal: Principal | None = None
    verdict: Verdict | None = None

    async def charge(self, cost: int) -> None:
        if cost <= 0:
            return
        verdict = await self.limiter.hit(self.client_ip, cost, principal=self.principal)
        self.verdict = verdict
        if not verdict.allowed:
            raise RateLimited(
                f"rate limit reached: this request counts {cost + int(self.request_counted)} requests; "
                f"retry in {max(1, verdict.reset_s)} s",
                retry_after_s=max(1, verdict.reset_s),
            )


def refusal(verdict: Verdict) -> RateLimited:
    """The 429 for a request the limiter refused."""
    retry_after_s = max(1, verdict.reset_s)
    return RateLimited(f"rate limit reached; retry in {retry_after_s} s", retry_after_s=retry_after_s)
