"""Rate limits per client address (`RATE_BURST`) and for the whole service (`RATE_GLOBAL`).

Counters live in the storage named by `LEVQOR_RATE_STORAGE`: `memory://` for one process (counted by
`LocalWindows`, with no storage calls), `redis://...` (through `limits`) when several processes or
machines must share them. The strategy is `limits`' sliding window counter: it follows a moving window
closely with two counters per client, whatever the limit, where an exact moving window keeps one entry
per request.

A client's own limit is charged first and the global one only if that passed, so one client past its
limit cannot use up everyone's allowance. Limited responses carry `RateLimit-Limit`,
`RateLimit-Remaining` and `RateLimit-Reset` (seconds) for the tighter of the two; a refusal is 429
`rate_limited` with `Retry-After` (CONTRACT.md §4, §6).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string

from levqor.config import ConfigError, Settings
from levqor.errors import RateLimited
from levqor.http.client_ip import ClientAddress
from levqor.http.ratelimit_counters import LocalWindows, Verdict

logger = logging.getLogger(__name__)

# CONTRACT.md §6: health checks, static pages (and their stylesheet) and metrics scrapes are never
# limited. `/public/metrics` is computed from the database, so it is, though it sits under `/public/`.
UNLIMITED_PATHS = frozenset({"/", "/health", "/faq", "/faq/", "/metrics"})
STATIC_PREFIXES = ("/legal/", "/public/")
LIMITED_UNDER_STATIC = frozenset({"/public/metrics"})
STORAGE_WARNING_INTERVAL_S = 10.0


# The worker API: remote workers long-poll and heartbeat far more often than clients submit, so these
# routes are charged to `LEVQOR_RATE_WORKER` per address instead of RATE_BURST and RATE_GLOBAL.
_WORKER_PATH = re.compile(r"^/api/v1/(?:workers/claim|jobs/[^/]+/(?:heartbeat|complete|fail))$")


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
        if uri.startswith("async+redis"):
            # redis-py's asyncio client (a dependency already); keys under our own prefix.
            options = {"implementation": "redispy", "key_prefix": settings.rate_key_prefix}
        storage = storage_from_string(uri, wrap_exceptions=True, **options)
        if not isinstance(storage, AsyncStorage):
            raise ConfigError(f"LEVQOR_RATE_STORAGE {settings.rate_storage!r} has no asyncio storage")
        self.storage: AsyncStorage = storage
        self.strategy = SlidingWindowCounterRateLimiter(self.storage)
        # In one process the counters need no storage round trips at all.
        self.local: LocalWindows | None = LocalWindows() if isinstance(storage, MemoryStorage) else None
        self.per_client: list[RateLimitItem] = parse_many(settings.rate_burst)
        self.whole_service: list[RateLimitItem] = parse_many(settings.rate_global)
        self.per_worker: list[RateLimitItem] = parse_many(settings.rate_worker)
        self.client_address = ClientAddress(settings.trusted_proxies)
        # For the in-process counters, in the order `_limits` charges them: (kind, per address, limit,
        # window in seconds).
        self._request_plan = [("ip", True, item.amount, item.get_expiry()) for item in self.per_client] + [
            ("all", False, item.amount, item.get_expiry()) for item in self.whole_service
        ]
        self._worker_plan = [("worker", True, item.amount, item.get_expiry()) for item in self.per_worker]
        self._warned_at = -math.inf

    async def check(self) -> bool:
        """Whether the storage answers (a Redis that is down does not stop the server)."""
        try:
            return await self.storage.check()
        except StorageError:
            return False

    async def hit(self, client_ip: str, cost: int = 1, *, worker_api: bool = False) -> Verdict:
        """Charge `cost` requests to the client and to the service (or, for the worker API, to the
        address's worker allowance); refuse if either is spent."""
        if self.local is not None:
            return self._hit_local(self.local, client_ip, cost, worker_api)
        try:
            return await self._hit(client_ip, cost, worker_api)
        except StorageError:
            # Availability over limiting: an unreachable Redis lets requests through, loudly.
            now = time.monotonic()
            if now - self._warned_at >= STORAGE_WARNING_INTERVAL_S:
                self._warned_at = now
                logger.warning("rate-limit storage unreachable: requests are not limited", exc_info=True)
            return Verdict(allowed=True)

    def _limits(
        self, client_ip: str, worker_api: bool
    ) -> tuple[tuple[list[RateLimitItem], tuple[str, ...]], ...]:
        if worker_api:
            return ((self.per_worker, ("worker", client_ip)),)
        return ((self.per_client, ("ip", client_ip)), (self.whole_service, ("all",)))

    def _hit_local(self, local: LocalWindows, client_ip: str, cost: int, worker_api: bool) -> Verdict:
        best: Verdict | None = None
        now = time.time()
        for kind, per_address, amount, expiry_s in self._worker_plan if worker_api else self._request_plan:
            # The same limit for the same caller as `item.key_for(*identifiers)`, built cheaper.
            key = (kind, client_ip if per_address else kind, amount, expiry_s)
            verdict = local.charge(key, amount, expiry_s, cost, now)
            if not verdict.allowed:
                return verdict
            if best is None or _tighter(verdict, best):
                best = verdict
        return best or Verdict(allowed=True)

    async def _hit(self, client_ip: str, cost: int, worker_api: bool) -> Verdict:
        charged: list[tuple[RateLimitItem, tuple[str, ...]]] = []
        for items, identifiers in self._limits(client_ip, worker_api):
            for item in items:
                if not await self.strategy.hit(item, *identifiers, cost=cost):
                    return await self._verdict(False, [(item, identifiers)])
                charged.append((item, identifiers))
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
        bridge = getattr(self.storage, "bridge", None)
        client = getattr(bridge, "storage", None)
        close = getattr(client, "aclose", None)
        if close is not None:
            await close()


def _tighter(verdict: Verdict, than: Verdict) -> bool:
    return (verdict.remaining, verdict.limit or 0) < (than.remaining, than.limit or 0)


@dataclass(slots=True)
class Allowance:
    """A request's handle on the limiter, for GraphQL to charge each extra root mutation field."""

    limiter: RateLimiter
    client_ip: str
    request_counted: bool  # an HTTP request has paid for one field already; a WebSocket message has not
    verdict: Verdict | None = None

    async def charge(self, cost: int) -> None:
        if cost <= 0:
            return
        verdict = await self.limiter.hit(self.client_ip, cost)
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
