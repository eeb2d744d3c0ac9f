"""One call to the gateway, sync or async: pacing, the request, back-off on 429, typed errors.

A `Call` says what to send and how to read the answer; `Session` and `AsyncSession` each own
one httpx client (connections are reused across calls) and run calls through the same
`_Core`, which holds everything but the I/O: the pacers, the deadline, the request as
built, and the reading of the answer. This is the one place where httpx's errors become the
SDK's (gateway/client/errors.py).
"""

from __future__ import annotations

import json
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio
import httpx
from tenacity import AsyncRetrying, Retrying

from .constants import USER_AGENT
from .errors import DeadlineExceeded, ProtocolError, TransportError, api_error
from .ratelimit import Clock, Pacers, RateLimitInfo, RateLimitPolicy, pacing_wait, retry_options

T = TypeVar("T")

#: A bearer token, or a function that returns a fresh one (called before every request).
TokenSource = str | Callable[[], str]
SyncSleep = Callable[[float], None]
AsyncSleep = Callable[[float], Awaitable[None]]

_NO_BODY: Any = object()
MIN_REQUEST_TIMEOUT_S = 0.001  # httpx refuses a timeout of 0


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One API call: the request, the bucket it spends, how to read a 2xx answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    bucket: str  # the gateway's bucket: per API, and per tenant for a service token
    params: Mapping[str, str] | None = None
    json: Any = _NO_BODY
    headers: Mapping[str, str] = field(default_factory=dict)
    deadline_s: float | None = None  # None: the client's default


def read_json(response: httpx.Response) -> Any:
    """The answer's JSON; `ProtocolError` when it is not JSON."""
    try:
        return json.loads(response.content)
    except ValueError:
        raise ProtocolError(f"the gateway's answer to {response.request.url.path} is not JSON") from None


def read_nothing(response: httpx.Response) -> None:
    return None


class _Core:
    """Everything of a call but the I/O, shared by the sync and async sessions."""

    def __init__(
        self,
        token: TokenSource,
        *,
        policy: RateLimitPolicy,
        clock: Clock,
        deadline_s: float,
        rng: random.Random | None,
    ) -> None:
        self.token = token
        self.policy = policy
        self.clock = clock
        self.deadline_s = deadline_s
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self.pacers = Pacers()

    def deadline_at(self, call: Call[Any]) -> float:
        return self.clock() + (self.deadline_s if call.deadline_s is None else call.deadline_s)

    def retry_options(self, deadline_at: float) -> dict[str, Any]:
        return retry_options(self.policy, self.clock, deadline_at, self.rng)

    def pace(self, call: Call[Any], deadline_at: float) -> float:
        return pacing_wait(self.pacers[call.bucket], self.policy, self.clock(), deadline_at)

    def build(
        self, http: httpx.Client | httpx.AsyncClient, call: Call[Any], deadline_at: float
    ) -> httpx.Request:
        left = deadline_at - self.clock()
        if left <= 0:
            raise DeadlineExceeded(f"{call.method} {call.path}: the deadline passed before it was sent")
        token = self.token() if callable(self.token) else self.token
        headers = {"Authorization": f"Bearer {token}", **call.headers}
        return http.build_request(
            call.method,
            call.path,
            params=call.params,
            json=None if call.json is _NO_BODY else call.json,
            headers=headers,
            timeout=httpx.Timeout(max(left, MIN_REQUEST_TIMEOUT_S)),
        )

    def settle(self, call: Call[T], response: httpx.Response, attempt: int) -> T:
        """Read the answer: the rate-limit headers always, then the result or the error."""
        info = RateLimitInfo.parse(response.headers, self.clock())
        self.pacers[call.bucket].observe(info)
        if response.status_code == 429:
            raise info.error(f"{call.method} {call.path}: rate limited by the gateway", attempts=attempt)
        if response.status_code >= 400:
            try:
                body = json.loads(response.content)
            except ValueError:
                body = None
            raise api_error(response.status_code, body)
        return call.read(response)


def _translate(call: Call[Any], exc: httpx.HTTPError) -> TransportError:
    if isinstance(exc, httpx.TimeoutException):
        return DeadlineExceeded(f"{call.method} {call.path}: no answer within the call's deadline")
    return TransportError(f"{call.method} {call.path}: {type(exc).__name__}: {exc}")


class Session:
    """Runs calls with one `httpx.Client`; close it (or use `with`) when done."""

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        deadline_s: float,
        rate_limit: RateLimitPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        clock: Clock = time.time,
        sleep: SyncSleep = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._core = _Core(token, policy=rate_limit or RateLimitPolicy(), clock=clock, deadline_s=deadline_s,
                           rng=rng)
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=base_url, transport=transport, verify=verify, headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )

    def run(self, call: Call[T]) -> T:
        core = self._core
        deadline_at = core.deadline_at(call)
        for attempt in Retrying(sleep=self._sleep, **core.retry_options(deadline_at)):
            with attempt:
                wait = core.pace(call, deadline_at)
                if wait > 0:
                    self._sleep(wait)
                request = core.build(self._http, call, deadline_at)
                try:
                    response = self._http.send(request)
                except httpx.HTTPError as exc:
                    raise _translate(call, exc) from None
                return core.settle(call, response, attempt.retry_state.attempt_number)
        raise AssertionError("unreachable: tenacity re-raises the last error when it stops")

    def close(self) -> None:
        self._http.close()


async def default_async_sleep(seconds: float) -> None:
    await anyio.sleep(seconds)


class AsyncSession:
    """Runs calls with one `httpx.AsyncClient`; `await aclose()` (or `async with`) when done."""

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        deadline_s: float,
        rate_limit: RateLimitPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        clock: Clock = time.time,
        sleep: AsyncSleep = default_async_sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._core = _Core(token, policy=rate_limit or RateLimitPolicy(), clock=clock, deadline_s=deadline_s,
                           rng=rng)
        self._sleep = sleep
        self._http = httpx.AsyncClient(
            base_url=base_url, transport=transport, verify=verify, headers={"User-Agent": USER_AGENT},
            follow_redirects=False,
        )

    async def run(self, call: Call[T]) -> T:
        core = self._core
        deadline_at = core.deadline_at(call)
        async for attempt in AsyncRetrying(sleep=self._sleep, **core.retry_options(deadline_at)):
            with attempt:
                wait = core.pace(call, deadline_at)
                if wait > 0:
                    await self._sleep(wait)
                request = core.build(self._http, call, deadline_at)
                try:
                    response = await self._http.send(request)
                except httpx.HTTPError as exc:
                    raise _translate(call, exc) from None
                return core.settle(call, response, attempt.retry_state.attempt_number)
        raise AssertionError("unreachable: tenacity re-raises the last error when it stops")

    async def aclose(self) -> None:
        await self._http.aclose()
