"""The Management API's objects as typed, frozen values (SPEC "Management API").

Field names are Python's (`trigger_id`); the wire's camelCase is read in one place, here.
Times are timezone-aware `datetime`s in UTC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from .errors import ProtocolError

T = TypeVar("T")


class _Reader:
    """Typed access to one JSON object of an answer; `ProtocolError` on a wrong shape."""

    def __init__(self, value: Any, what: str) -> None:
        if not isinstance(value, dict):
            raise ProtocolError(f"{what} in the gateway's answer is not an object")
        self.obj: dict[str, Any] = value
        self.what = what

    def _wrong(self, key: str, kind: str) -> ProtocolError:
        return ProtocolError(f'"{key}" of {self.what} in the gateway\'s answer is not {kind}')

    def text(self, key: str) -> str:
        value = self.obj.get(key)
        if not isinstance(value, str):
            raise self._wrong(key, "a string")
        return value

    def opt_text(self, key: str) -> str | None:
        value = self.obj.get(key)
        return None if value is None else self.text(key)

    def integer(self, key: str) -> int:
        value = self.obj.get(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self._wrong(key, "an integer")
        return value

    def opt_integer(self, key: str) -> int | None:
        return None if self.obj.get(key) is None else self.integer(key)

    def opt_number(self, key: str) -> float | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self._wrong(key, "a number")
        return float(value)

    def flag(self, key: str) -> bool:
        value = self.obj.get(key)
        if not isinstance(value, bool):
            raise self._wrong(key, "a boolean")
        return value

    def when(self, key: str) -> datetime:
        try:
            value = datetime.fromisoformat(self.text(key))
        except ValueError:
            raise self._wrong(key, "an ISO-8601 time") from None
        if value.tzinfo is None:  # a naive time would fail later, compared with an aware one
            raise self._wrong(key, "an ISO-8601 time with its offset")
        return value

    def opt_when(self, key: str) -> datetime | None:
        return None if self.obj.get(key) is None else self.when(key)

    def items(self, key: str, item: Callable[[Any], T]) -> list[T]:
        value = self.obj.get(key, [])
        if not isinstance(value, list):
            raise self._wrong(key, "an array")
        return [item(v) for v in value]


@dataclass(frozen=True, slots=True)
class Hook:
    id: str
    name: str
    trigger_id: str
    url: str
    enabled: bool
    order: int
    timeout_ms: int
    failure_policy: str
    max_concurrency: int
    rate_limit_per_second: float | None
    format: str
    disabled_reason: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_json(cls, value: Any) -> Hook:
        r = _Reader(value, "a hook")
        return cls(
            id=r.text("id"), name=r.text("name"), trigger_id=r.text("triggerId"), url=r.text("url"),
            enabled=r.flag("enabled"), order=r.integer("order"), timeout_ms=r.integer("timeoutMs"),
            failure_policy=r.text("failurePolicy"), max_concurrency=r.integer("maxConcurrency"),
            rate_limit_per_second=r.opt_number("rateLimitPerSecond"), format=r.text("format"),
            disabled_reason=r.opt_text("disabledReason"), created_at=r.when("createdAt"),
            updated_at=r.when("updatedAt"),
        )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request to a receiver, as the gateway recorded it."""

    number: int
    started_at: datetime
    duration_ms: float | None
    status_code: int | None
    error: str | None
    response_body: str | None  # the first 4 KiB, as text
    ratelimit_limit: int | None
    ratelimit_remaining: int | None
    ratelimit_reset: int | None
    retry_after: float | None

    @classmethod
    def from_json(cls, value: Any) -> Attempt:
        r = _Reader(value, "an attempt")
        rl = _Reader(r.obj.get("rateLimit") or {}, "an attempt's rateLimit")
        return cls(
            number=r.integer("number"), started_at=r.when("startedAt"),
            duration_ms=r.opt_number("durationMs"),
            status_code=r.opt_integer("statusCode"), error=r.opt_text("error"),
            response_body=r.opt_text("responseBody"), ratelimit_limit=rl.opt_integer("limit"),
            ratelimit_remaining=rl.opt_integer("remaining"), ratelimit_reset=rl.opt_integer("reset"),
            retry_after=r.opt_number("retryAfter"),
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event for one hook: `status` is `pending`, `succeeded`, `failed` or `cancelled`.
    `attempts` is filled by `get_delivery` only."""

    id: str
    event_id: str
    hook_id: str
    trigger_id: str
    kind: str  # "async" (durable) or "sync" (a blocking invocation)
    status: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    attempts: list[Attempt] | None = None

    @classmethod
    def from_json(cls, value: Any) -> Delivery:
        r = _Reader(value, "a delivery")
        return cls(
            id=r.text("id"), event_id=r.text("eventId"), hook_id=r.text("hookId"),
            trigger_id=r.text("triggerId"),
            kind=r.text("kind"), status=r.text("status"), attempt_count=r.integer("attemptCount"),
            next_attempt_at=r.opt_when("nextAttemptAt"), last_error=r.opt_text("lastError"),
            created_at=r.when("createdAt"), updated_at=r.when("updatedAt"),
            attempts=r.items("attempts", Attempt.from_json) if "attempts" in r.obj else None,
        )


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list: `start` is the offset of its first item, `total` counts all."""

    items: list[T]
    start: int
    limit: int
    total: int


def read_page(value: Any, key: str, item: Callable[[Any], T]) -> Page[T]:
    r = _Reader(value, "a page")
    return Page(
        items=r.items(key, item), start=r.integer("start"), limit=r.integer("limit"), total=r.integer("total")
    )


@dataclass(frozen=True, slots=True)
class PreviousSecret:
    created_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class SigningSecret:
    """The hook's current `whsec_` secret; `previous` ones still sign until they expire."""

    secret: str
    created_at: datetime
    previous: list[PreviousSecret]

    def __repr__(self) -> str:  # the secret stays out of logs and tracebacks
        return f"SigningSecret(secret='whsec_…', created_at={self.created_at!r}, previous={self.previous!r})"

    @classmethod
    def from_json(cls, value: Any) -> SigningSecret:
        r = _Reader(value, "a signing secret")

        def previous(item: Any) -> PreviousSecret:
            p = _Reader(item, "a previous secret")
            return PreviousSecret(created_at=p.when("createdAt"), expires_at=p.when("expiresAt"))

        return cls(
            secret=r.text("secret"), created_at=r.when("createdAt"), previous=r.items("previous", previous)
        )


@dataclass(frozen=True, slots=True)
class Replay:
    """What a replay queued: `count` new deliveries; `skipped` events already had one pending."""

    count: int
    delivery_ids: list[str]
    skipped: int

    @classmethod
    def from_json(cls, value: Any) -> Replay:
        r = _Reader(value, "a replay")

        def delivery_id(item: Any) -> str:
            if isinstance(item, str):
                return item
            return _Reader(item, "a replayed delivery").text("id")

        skipped = r.obj.get("skipped", 0)
        if isinstance(skipped, list):
            skipped = len(skipped)
        if not isinstance(skipped, int):
            raise ProtocolError('"skipped" of a replay in the gateway\'s answer is not a count')
        return cls(count=r.integer("count"), delivery_ids=r.items("deliveries", delivery_id), skipped=skipped)
