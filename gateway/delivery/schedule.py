"""When to try again: the retry schedule with jitter, `Retry-After`, and `X-RateLimit-*`.

Delays are computed here (tenacity's jittered wait strategies) but the due time is written to
the database, so a restart resumes the schedule instead of forgetting a sleeping task.
"""

from __future__ import annotations

import email.utils
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tenacity import RetryCallState
from tenacity.wait import wait_base

# `X-RateLimit-Reset` values below this are "seconds from now", above it unix seconds
# (GitHub sends unix seconds, many others a delta; 1e9 s is in 2001).
RESET_DELTA_MAX_S = 1_000_000_000
# Hard bounds on what a receiver's headers can ask for, whatever the settings say: a longer
# wait is a receiver's mistake or an attack, and a year already outlives any delivery.
RETRY_AFTER_MAX_S = 366 * 86_400.0  # seconds of `Retry-After`
RESET_AHEAD_MAX_S = 366 * 86_400.0  # seconds from now of `X-RateLimit-Reset`
RATE_LIMIT_INT_MAX = 2**53 - 1  # `X-RateLimit-Limit`/`-Remaining`: exact in JSON, fits SQLite

_OWS = " \t"  # HTTP's optional white space; nothing else is trimmed
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: `\d` would take "²" and "١"
_DECIMAL = re.compile(r"([0-9]+)(?:\.[0-9]+)?")
_DIGITS_MAX = 15  # digits past which a number is treated as "huge" without converting it


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
    """`Retry-After` as seconds from now, within `0..RETRY_AFTER_MAX_S`: plain ASCII
    delta-seconds or an HTTP date; None for anything else. Never raises, whatever was sent."""
    if not value:
        return None
    value = value.strip(_OWS)
    if _DIGITS.fullmatch(value):
        # RFC 9111 lets a recipient clamp huge delta-seconds; the length check keeps int() away
        # from a 5,000-digit string (which Python refuses with ValueError).
        if len(value.lstrip("0")) > _DIGITS_MAX:
            return RETRY_AFTER_MAX_S
        return min(float(value), RETRY_AFTER_MAX_S)
    if not value.isascii():  # an HTTP date is ASCII; "١٢" or "²" is not a number either
        return None
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError, OSError):
        return None
    if not math.isfinite(when - now):
        return None
    return min(max(0.0, when - now), RETRY_AFTER_MAX_S)


@dataclass(slots=True)  # not frozen: built per request (gateway/store/models.py)
class RateLimitInfo:
    limit: int | None  # 0..RATE_LIMIT_INT_MAX
    remaining: int | None  # 0..RATE_LIMIT_INT_MAX
    reset: float | None  # unix seconds, at most `RESET_AHEAD_MAX_S` from the answer


def _int(value: str | None) -> int | None:
    """A count of `X-RateLimit-Limit`/`-Remaining`: ASCII digits (a fraction is dropped), at
    most `RATE_LIMIT_INT_MAX`, else None: it is stored as an SQLite INTEGER and shown as JSON."""
    if value is None:
        return None
    match = _DECIMAL.fullmatch(value.strip(_OWS))
    if match is None:
        return None
    whole = match.group(1).lstrip("0")
    if len(whole) > _DIGITS_MAX + 1:
        return None
    number = int(whole or "0")
    return number if number <= RATE_LIMIT_INT_MAX else None


def _reset(value: str | None, now: float) -> float | None:
    """`X-RateLimit-Reset` as unix seconds: seconds from now below `RESET_DELTA_MAX_S`, unix
    seconds above; clamped to `now + RESET_AHEAD_MAX_S`. None unless ASCII digits."""
    if value is None:
        return None
    text = value.strip(_OWS)
    match = _DECIMAL.fullmatch(text)
    if match is None or not math.isfinite(now):
        return None
    latest = now + RESET_AHEAD_MAX_S
    if len(match.group(1).lstrip("0")) > _DIGITS_MAX:
        return latest
    seconds = float(text)
    reset = now + seconds if seconds < RESET_DELTA_MAX_S else seconds
    return min(reset, latest)


def parse_rate_limit(headers: Mapping[str, str], now: float) -> RateLimitInfo:
    """`X-RateLimit-*` from headers whose names are in lower case (or looked up case-blind).
    Never raises: a value that is not plain ASCII digits reads as absent."""
    return RateLimitInfo(
        limit=_int(headers.get("x-ratelimit-limit")),
        remaining=_int(headers.get("x-ratelimit-remaining")),
        reset=_reset(headers.get("x-ratelimit-reset"), now),
    )


def rate_limited_delay(retry_after: float | None, consecutive_429s: int, *, floor_s: float,
                       max_s: float) -> float:
    """The wait after the `consecutive_429s`-th `429` in a row (1 for the first): at least
    `floor_s * 2**(n-1)`, so that `Retry-After: 0` cannot make a loop, at least `retry_after`,
    never more than `max_s`."""
    exponent = min(max(consecutive_429s, 1) - 1, 64)  # 2**64 floors are past any max_s
    delay = floor_s * 2.0**exponent
    if retry_after is not None and retry_after > delay:  # False for NaN
        delay = retry_after
    return max(0.0, min(delay, max_s))


def clamp_pause(until: float | None, now: float, max_pause_s: float) -> float | None:
    """A pause's end (unix seconds) no later than `now + max_pause_s`; None stays None."""
    if until is None or until != until:  # NaN: no usable end
        return None
    return min(until, now + max_pause_s)


def pause_until(info: RateLimitInfo, threshold: int, now: float) -> float | None:
    """Until when a destination must rest, given its answer's rate-limit headers."""
    if info.remaining is None or info.reset is None or info.remaining > threshold:
        return None
    return info.reset if info.reset > now else None
