"""Rate-limit verdicts, and the sliding window counters of one process (`memory://` storage)."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TypeVar

LOCAL_SWEEP_INTERVAL_S = 60.0
# The limit, what is left of it, when more is left; Retry-After only on a refusal.
RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After")
RATE_LIMIT_HEADERS_RAW = tuple(name.lower().encode("latin-1") for name in RATE_LIMIT_HEADERS)
_Name = TypeVar("_Name", str, bytes)


@dataclass(slots=True)  # not frozen: two are made per request, and a frozen one costs three times as much
class Verdict:
    allowed: bool
    limit: int | None = None  # None when the counters could not be read (storage down)
    remaining: int = 0
    reset_s: int = 0

    def headers(self) -> list[tuple[str, str]]:
        return [(name, value.decode("latin-1")) for name, value in self._pairs(RATE_LIMIT_HEADERS)]

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """`headers()` as ASGI response headers: lower-case names, bytes."""
        return self._pairs(RATE_LIMIT_HEADERS_RAW)

    def _pairs(self, names: tuple[_Name, ...]) -> list[tuple[_Name, bytes]]:
        if self.limit is None:
            return []
        pairs = [
            (names[0], b"%d" % self.limit),
            (names[1], b"%d" % self.remaining),
            (names[2], b"%d" % self.reset_s),
        ]
        if not self.allowed:
            pairs.append((names[3], b"%d" % max(1, self.reset_s)))
        return pairs


class LocalWindows:
    """The sliding window counters of one process, for `memory://` storage.

    The same counting as `limits`' sliding window counter (the previous window weighed by how much of
    it still overlaps the moving window, plus the current one), in one call per limit with no task or
    lock: 3 us per request for both limits against 39 us through `limits`' own memory storage
    (`python -m bench.auth_limits`)."""

    def __init__(self) -> None:
        # key -> [window index, count in the previous window, count in the current window, window s]
        self._windows: dict[Hashable, list[int]] = {}
        self._swept_at = -math.inf

    def charge(
        self, key: Hashable, limit: int, expiry_s: int, cost: int, now: float, *, record: bool = True
    ) -> Verdict:
        """Charge `cost` to the window of `key` if it fits (only tell whether it would without
        `record`)."""
        if now - self._swept_at >= LOCAL_SWEEP_INTERVAL_S:
            self._sweep(now)
        index = int(now / expiry_s)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = [index, 0, 0, expiry_s]
        elif window[0] != index:
            # The current window became the previous one (or both are past, after a quiet spell).
            window[1] = window[2] if window[0] == index - 1 else 0
            window[2] = 0
            window[0] = index
        into_window_s = now - index * expiry_s
        previous_weight = (expiry_s - into_window_s) / expiry_s
        allowed = cost <= limit and math.floor(window[1] * previous_weight + window[2]) + cost <= limit
        if allowed and record:
            window[2] += cost
        previous, current = window[1], window[2]
        remaining = max(0, limit - math.floor(previous * previous_weight + current))
        if not (previous or current):
            return Verdict(allowed, limit, remaining, 0)
        # When the weighted count next drops by one: a previous hit slides out, or the window turns.
        reset_in_s = math.inf
        if previous:
            reset_in_s = (expiry_s - into_window_s) % (expiry_s / previous)
        if current:
            reset_in_s = min(reset_in_s, expiry_s - into_window_s)
        return Verdict(allowed, limit, remaining, max(0, math.ceil(reset_in_s)))

    def _sweep(self, now: float) -> None:
        """Forget clients not seen for two windows, so that passing addresses do not pile up."""
        self._swept_at = now
        stale = [key for key, window in self._windows.items() if window[0] < int(now / window[3]) - 1]
        for key in stale:
            del self._windows[key]
