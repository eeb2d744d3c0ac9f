"""When to try again: the retry schedule with jitter, `Retry-After`, and `X-RateLimit-*`.

Delays are computed here (tenacity's jittered wait strategies) but the due time is written to
the database, so a restart resumes the schedule instead of forgetting a sleeping task.
"""

from __future__ import annotations

import email.utils
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tenacity import RetryCallState
from tenacity.wait import wait_base

# `X-RateLimit-Reset` values below this are "seconds from now", above it unix seconds
# (GitHub sends unix seconds, many others a delta; 1e9 s is in 2001).
RESET_DELTA_MAX_S = 1_000_000_000


class wait_schedule_jitter(wait_base):  # noqa: N801 - tenacity's naming
    """The n-th delay of a fixed schedule, spread by ±`jitter` (a fraction)."""

    def __init__(self, schedule: Sequence[float], jitter: float, rng: random.Random | None = None) -> None:
        self.schedule = tuple(schedule)
        self.jitter = jitter
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.delay(retry_state.attempt_number)

    def delay(self, attempts_made: int) -> float:
        base = self.schedule[min(attempts_made, len(self.schedule)) - 1]
        return base * (1.0 + self.rng.uniform(-self.jitter, self.jitter))


def parse_retry_after(value: str | None, now: float) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


@dataclass(slots=True)  # not frozen: built per request (gateway/store/models.py)
class RateLimitInfo:
    limit: int | None
    remaining: int | None
    reset: float | None  # unix seconds


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value.strip()))
    except ValueError:
        return None


def parse_rate_limit(headers: Mapping[str, str], now: float) -> RateLimitInfo:
    """`X-RateLimit-*` from headers whose names are in lower case (or looked up case-blind)."""
    reset_raw = headers.get("x-ratelimit-reset")
    reset: float | None = None
    if reset_raw is not None:
        try:
            value = float(reset_raw.strip())
        except ValueError:
            value = -1.0
        if value >= 0:
            reset = now + value if value < RESET_DELTA_MAX_S else value
    return RateLimitInfo(
        limit=_int(headers.get("x-ratelimit-limit")),
        remaining=_int(headers.get("x-ratelimit-remaining")),
        reset=reset,
    )


def pause_until(info: RateLimitInfo, threshold: int, now: float) -> float | None:
    """Until when a destination must rest, given its answer's rate-limit headers."""
    if info.remaining is None or info.reset is None or info.remaining > threshold:
        return None
    return info.reset if info.reset > now else None
