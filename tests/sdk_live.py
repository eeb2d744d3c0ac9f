"""Helpers for the SDK's tests (tests/test_sdk_*.py): a clock the gateway and the SDK share,
and httpx transports that record what the gateway answered (status and rate-limit headers).

The transports are httpx's real ones, sending over loopback; they only keep a note of each
answer, so that a test can count the `429`s the gateway sent."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
from conftest import Gateway


def root_url(gw: Gateway) -> str:
    """The gateway's root URL on its real loopback port."""
    return str(gw.client.make_url("/"))


@dataclass
class SharedClock:
    """Unix seconds that move only when the SDK sleeps: give `now` to the gateway
    (`create_app(clock=...)`) and to the SDK, and `sleep`/`asleep` to the SDK. Each wait is
    recorded with the time it started. `frozen`: sleeping does not move the clock."""

    t: float = field(default_factory=lambda: time.time())
    frozen: bool = False
    waits: list[tuple[float, float]] = field(default_factory=list)  # (started at, seconds)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.waits.append((self.t, seconds))
            if not self.frozen:
                self.t += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


@dataclass
class Answer:
    status: int
    remaining: int | None
    reset: int | None
    retry_after: int | None
    at: float  # the shared clock when the answer came


def _note(response: httpx.Response, clock: SharedClock | None, seen: list[Answer]) -> None:
    def number(name: str) -> int | None:
        value = response.headers.get(name)
        return int(value) if value is not None else None

    seen.append(
        Answer(
            status=response.status_code,
            remaining=number("X-RateLimit-Remaining"),
            reset=number("X-RateLimit-Reset"),
            retry_after=number("Retry-After"),
            at=clock.now() if clock else time.time(),
        )
    )


class RecordingTransport(httpx.HTTPTransport):
    def __init__(self, clock: SharedClock | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.seen: list[Answer] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        _note(response, self.clock, self.seen)
        return response


class AsyncRecordingTransport(httpx.AsyncHTTPTransport):
    def __init__(self, clock: SharedClock | None = None) -> None:
        super().__init__()
        self.clock = clock
        self.seen: list[Answer] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        _note(response, self.clock, self.seen)
        return response


def statuses(seen: list[Answer]) -> list[int]:
    return [a.status for a in seen]
