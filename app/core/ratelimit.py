"""Token buckets keyed by who is asking: `rate` tokens a second, at most `burst` saved up.

In-process (each API process limits what it is sent), bounded in memory: past `max_keys`
the fullest buckets, which cost nothing to forget, are dropped first."""

from __future__ import annotations

import time
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBuckets:
    def __init__(self, rate: float, burst: float, *, max_keys: int = 100_000) -> None:
        self.rate, self.burst, self.max_keys = rate, burst, max_keys
        self._buckets: dict[Hashable, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _refill(self, key: Hashable, now: float) -> _Bucket:
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            b = self._buckets[key] = _Bucket(self.burst, now)
        else:
            b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
            b.at = now
        return b

    def _forget_full(self, now: float) -> None:
        for k in [k for k, b in self._buckets.items() if b.tokens + (now - b.at) * self.rate >= self.burst]:
            del self._buckets[k]
        if len(self._buckets) >= self.max_keys:  # everyone is busy: start over rather than grow
            self._buckets.clear()

    def take(self, key: Hashable, cost: float = 1.0, now: float | None = None) -> float:
        """Spend `cost` tokens of `key`'s bucket: 0.0 if it had them, else the seconds until it
        will (nothing is spent then).  Always 0.0 when the rate is 0 (no limit)."""
        if not self.enabled:
            return 0.0
        b = self._refill(key, time.monotonic() if now is None else now)
        if b.tokens >= cost:
            b.tokens -= cost
            return 0.0
        return (cost - b.tokens) / self.rate

    def exhausted(self, key: Hashable, now: float | None = None) -> float:
        """Seconds until `key` has a token again, without spending one (0.0 if it has one)."""
        if not self.enabled or key not in self._buckets:
            return 0.0
        b = self._refill(key, time.monotonic() if now is None else now)
        return 0.0 if b.tokens >= 1.0 else (1.0 - b.tokens) / self.rate
