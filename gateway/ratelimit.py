"""Token buckets for the gateway's own APIs, per tenant and API, and their headers.

Auth0's Management API answers `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
`X-RateLimit-Reset` (unix seconds when the bucket is full again) on every call and a `429`
with `Retry-After` past the limit; so does the gateway.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


@dataclass(slots=True)  # not frozen: built per request (gateway/store/models.py)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset: int  # unix seconds when the bucket is full again
    retry_after: int  # seconds until one token is available (0 when allowed)

    def headers(self) -> dict[str, str]:
        out = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            out["Retry-After"] = str(self.retry_after)
        return out


class RateLimiter:
    """One bucket per key; `rate` tokens per second, at most `burst` saved up."""

    MAX_KEYS = 100_000  # full buckets are forgotten first past this many keys

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.time,
        instances: Callable[[], int] = lambda: 1,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a rate limiter needs rate > 0 and burst >= 1")
        self.total_rate = rate
        self.total_burst = burst
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._instances = instances
        self._buckets: dict[str, _Bucket] = {}

    def _share(self) -> None:
        """Several instances keep the limit together: each allows its share (the total holds
        when callers are spread over the instances; a caller that reaches one only gets less)."""
        n = max(1, self._instances())
        self.rate = self.total_rate / n
        self.burst = max(1, self.total_burst // n)

    def take(self, key: str) -> Decision:
        self._share()
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_KEYS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(tokens=float(self.burst), updated=now)
        else:
            # A clock that steps back refills nothing (and takes nothing away).
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.burst, bucket.tokens + elapsed * self.rate)
            bucket.updated = max(bucket.updated, now)
        allowed = bucket.tokens >= 1.0
        if allowed:
            bucket.tokens -= 1.0
        missing = self.burst - bucket.tokens
        reset = math.ceil(now + missing / self.rate)
        retry_after = 0 if allowed else max(1, math.ceil((1.0 - bucket.tokens) / self.rate))
        return Decision(
            allowed=allowed,
            limit=self.burst,
            remaining=max(0, int(bucket.tokens)),
            reset=reset,
            retry_after=retry_after,
        )

    def _forget_full(self, now: float) -> None:
        """Forget buckets that have refilled (forgetting them changes nothing); if that is not
        enough, the oldest ones, so that memory stays bounded whatever the callers do."""
        for key, b in list(self._buckets.items()):
            if b.tokens + (now - b.updated) * self.rate >= self.burst:
                del self._buckets[key]
        # Down to 90% at once, so that the scan above is not repeated for every new key.
        excess = len(self._buckets) - self.MAX_KEYS * 9 // 10
        for key in list(self._buckets)[: max(0, excess)]:
            del self._buckets[key]
