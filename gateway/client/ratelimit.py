"""The seed's advice on rate limits, for calls to the gateway.

Every answer of the gateway's APIs carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` and
`X-RateLimit-Reset` (unix seconds when its token bucket is full again), per tenant and API.

- **Pacing.** A `Pacer` remembers what the last answer said of its bucket. When `Remaining`
  is at or below `RateLimitPolicy.pace_below`, the next call waits until `Reset` before it is
  sent, so a steady caller never meets a `429`. Calls in flight count against `Remaining`, so
  concurrent callers pace too. A pacing wait that would pass the call's deadline or the
  policy's longest wait is skipped: the gateway then decides, and a `429` is handled below.
- **Back-off on `429`.** tenacity retries the call, never earlier than `Retry-After` (or the
  reset when there is none), plus an exponential, jittered back-off so that many clients do
  not come back at the same instant; at most `max_tries` requests in all. When the tries are
  used up, or the wait asked for is longer than `max_wait_s` or the call's deadline, the SDK
  raises `RateLimited` carrying the reset time. No loop here is unbounded.
"""

from __future__ import annotations

import email.utils
import math
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from tenacity import RetryCallState, retry_if_exception_type
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from .constants import (
    HEADER_RATELIMIT_LIMIT,
    HEADER_RATELIMIT_REMAINING,
    HEADER_RATELIMIT_RESET,
    HEADER_RETRY_AFTER,
    RESET_DELTA_MAX_S,
)
from .errors import RateLimited

Clock = Callable[[], float]

DEADLINE_MARGIN_S = 0.05  # a retry is not started with less than this left before the deadline
MAX_BUCKETS = 10_000  # buckets remembered per client (one per tenant for a service token)


@dataclass(frozen=True, kw_only=True, slots=True)
class RateLimitPolicy:
    """How a client paces itself and backs off. All durations are seconds."""

    pace_below: int = 0  # wait for the reset when `X-RateLimit-Remaining` is at or below this
    max_tries: int = 4  # requests per call at most, the first included (429s only are retried)
    backoff_base_s: float = 0.25  # back-off added to `Retry-After` on the first retry, doubled after
    backoff_max_s: float = 8.0  # ... up to this
    max_wait_s: float = 60.0  # one wait longer than this gives up at once with `RateLimited`

    def __post_init__(self) -> None:
        if self.max_tries < 1:
            raise ValueError("max_tries must be at least 1")
        if self.pace_below < 0:
            raise ValueError("pace_below must be 0 or more")
        for name in ("backoff_base_s", "backoff_max_s", "max_wait_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number of seconds, 0 or more")


@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """The rate-limit headers of one answer; a value that is absent or unreadable is None."""

    limit: int | None
    remaining: int | None
    reset_at: float | None  # unix seconds
    retry_after: float | None  # seconds from the answer

    @classmethod
    def parse(cls, headers: Mapping[str, str], now: float) -> RateLimitInfo:
        """Read the headers of an answer received at `now` (unix seconds). Never raises."""
        reset = _number(headers.get(HEADER_RATELIMIT_RESET))
        reset_at = None if reset is None else (now + reset if reset < RESET_DELTA_MAX_S else reset)
        return cls(
            limit=_integer(headers.get(HEADER_RATELIMIT_LIMIT)),
            remaining=_integer(headers.get(HEADER_RATELIMIT_REMAINING)),
            reset_at=reset_at,
            retry_after=_retry_after(headers.get(HEADER_RETRY_AFTER), now),
        )

    def error(self, message: str, *, attempts: int) -> RateLimited:
        if self.retry_after is not None:
            message += f"; retry after {self.retry_after:g} s"
        if self.reset_at is not None:
            message += f"; the limit resets at unix time {self.reset_at:.0f}"
        return RateLimited(
            message,
            reset_at=self.reset_at,
            retry_after=self.retry_after,
            limit=self.limit,
            remaining=self.remaining,
            attempts=attempts,
        )


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 20 or not text.replace(".", "", 1).isdigit() or not text.isascii():
        return None
    return float(text)


def _integer(value: str | None) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def _retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds: a number of seconds, or an HTTP date."""
    seconds = _number(value)
    if seconds is not None or value is None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:  # asctime, or "-0000": an HTTP-date is GMT, never local time
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):  # OverflowError: a year past C's range
        return None


class Pacer:
    """What the SDK knows of one of the gateway's buckets, from the answers it got."""

    __slots__ = ("_lock", "_seen", "_sent", "limit", "remaining", "reset_at")

    def __init__(self) -> None:
        self._lock = threading.Lock()  # a sync client may be shared by threads
        self._sent = 0  # tickets given to requests
        self._seen = 0  # the ticket of the latest request whose answer was taken in
        self.limit: int | None = None
        self.remaining: int | None = None
        self.reset_at: float | None = None

    def ticket(self) -> int:
        """A number for a request about to be sent, rising with each: hand it to `observe`."""
        with self._lock:
            self._sent += 1
            return self._sent

    def observe(self, info: RateLimitInfo, ticket: int) -> None:
        """Take in the headers of the answer to request `ticket`; an answer without them
        changes nothing.

        An answer to a request sent before one whose answer was already taken in was overtaken
        on the way: it is stale. The order is the client's own, not told by the answers' reset
        times, so that one odd reset (an hour away, from a proxy or from before the limit was
        raised) cannot make every later answer look stale. With the same reset, the lower count
        wins, including this client's own count of calls sent."""
        if info.remaining is None:
            return
        with self._lock:
            if ticket < self._seen:
                return
            self._seen = ticket
            if self.reset_at is not None and info.reset_at is not None:
                if info.reset_at == self.reset_at and self.remaining is not None:
                    self.remaining = min(self.remaining, info.remaining)
                    self.limit = info.limit
                    return
            self.limit = info.limit
            self.remaining = info.remaining
            self.reset_at = info.reset_at

    def delay(self, now: float, pace_below: int) -> float:
        """Seconds to wait before the next request (0: send now), counting that request as spent."""
        with self._lock:
            if self.reset_at is not None and now >= self.reset_at:
                # Past the reset the bucket is full again.
                self.remaining, self.reset_at = self.limit, None
            if self.remaining is None:
                return 0.0
            if self.remaining <= pace_below and self.reset_at is not None:
                return self.reset_at - now
            self.remaining -= 1
            return 0.0


class Pacers:
    """One `Pacer` per bucket key, the least recently used forgotten past `MAX_BUCKETS`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pacers: OrderedDict[str, Pacer] = OrderedDict()

    def __getitem__(self, key: str) -> Pacer:
        with self._lock:
            pacer = self._pacers.get(key)
            if pacer is None:
                pacer = self._pacers[key] = Pacer()
                while len(self._pacers) > MAX_BUCKETS:
                    self._pacers.popitem(last=False)
            else:
                self._pacers.move_to_end(key)
            return pacer


def pacing_wait(
    pacer: Pacer, policy: RateLimitPolicy, now: float, deadline_at: float | None
) -> float:
    """The wait before a request, or 0 when there is none or it does not fit (then the request
    goes out at once and the gateway decides)."""
    wait = pacer.delay(now, policy.pace_below)
    if wait <= 0 or wait > policy.max_wait_s:
        return 0.0
    if deadline_at is not None and now + wait + DEADLINE_MARGIN_S >= deadline_at:
        return 0.0
    return wait


def _floor(state: RetryCallState, now: float) -> float:
    """The shortest wait the gateway asked for after the last 429 (seconds)."""
    exc = state.outcome.exception() if state.outcome is not None else None
    if not isinstance(exc, RateLimited):
        return 0.0
    if exc.retry_after is not None:
        return exc.retry_after
    if exc.reset_at is not None:
        return max(0.0, exc.reset_at - now)
    return 0.0


class _StopWhenWaitDoesNotFit(stop_base):
    """Stop after `max_tries` requests, or when the wait asked for does not fit."""

    def __init__(self, policy: RateLimitPolicy, clock: Clock, deadline_at: float | None) -> None:
        self.policy = policy
        self.clock = clock
        self.deadline_at = deadline_at

    def __call__(self, retry_state: RetryCallState) -> bool:
        if retry_state.attempt_number >= self.policy.max_tries:
            return True
        now = self.clock()
        floor = _floor(retry_state, now)
        if floor > self.policy.max_wait_s:
            return True
        return self.deadline_at is not None and now + floor + DEADLINE_MARGIN_S >= self.deadline_at


class _WaitAtLeastRetryAfter(wait_base):
    """`Retry-After` plus a jittered exponential back-off: never earlier than the gateway asked,
    and spread out so that clients that met the same 429 do not return at the same instant.
    The jitter is cut to fit the longest wait and the deadline; the floor never is (the stop
    condition gave up before a floor that does not fit)."""

    def __init__(
        self, policy: RateLimitPolicy, clock: Clock, deadline_at: float | None, rng: random.Random
    ) -> None:
        self.policy = policy
        self.clock = clock
        self.deadline_at = deadline_at
        self.rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        now = self.clock()
        floor = _floor(retry_state, now)
        exponent = min(retry_state.attempt_number - 1, 32)
        step = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2.0**exponent)
        wait = floor + self.rng.uniform(step / 2, step)
        ceiling = self.policy.max_wait_s
        if self.deadline_at is not None:
            ceiling = min(ceiling, self.deadline_at - now - DEADLINE_MARGIN_S)
        return max(floor, min(wait, ceiling))


def retry_options(
    policy: RateLimitPolicy, clock: Clock, deadline_at: float | None, rng: random.Random
) -> dict[str, Any]:
    """Keyword arguments for tenacity's `Retrying` / `AsyncRetrying` (all but `sleep`)."""
    return {
        "retry": retry_if_exception_type(RateLimited),
        "stop": _StopWhenWaitDoesNotFit(policy, clock, deadline_at),
        "wait": _WaitAtLeastRetryAfter(policy, clock, deadline_at, rng),
        "reraise": True,
    }
