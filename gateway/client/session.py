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
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio
import httpx
from tenacity import AsyncRetrying, Retrying

from . import deadline
from .constants import MAX_ANSWER_BYTES, USER_AGENT
from .errors import DeadlineExceeded, ProtocolError, TransportError, api_error
from .ratelimit import Clock, Pacers, RateLimitInfo, RateLimitPolicy, pacing_wait, retry_options

T = TypeVar("T")

#: A bearer token, or a function that returns a fresh one (called before every request).
TokenSource = str | Callable[[], str]
SyncSleep = Callable[[float], None]
AsyncSleep = Callable[[float], Awaitable[None]]

_NO_BODY: Any = object()
MIN_REQUEST_TIMEOUT_S = 0.001  # httpx refuses a timeout of 0
_HEADER_VALUE = re.compile(r"[!-~]+(?: +[!-~]+)*")  # visible ASCII, inner spaces: what h11 sends


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
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
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

    def left(self, call: Call[Any], deadline_at: float) -> float:
        """Seconds left before the deadline; `DeadlineExceeded` when none are."""
        left = deadline_at - self.clock()
        if left <= 0:
            raise DeadlineExceeded(f"{call.method} {call.path}: the deadline passed before it was sent")
        return left

    def build(
        self, http: httpx.Client | httpx.AsyncClient, call: Call[Any], deadline_at: float
    ) -> httpx.Request:
        left = self.left(call, deadline_at)
        token = self.token() if callable(self.token) else self.token
        if not _HEADER_VALUE.fullmatch(token):
            # Checked here: httpx and h11 refuse it too, but in an error that quotes the token.
            raise TransportError(f"{call.method} {call.path}: not sent: the token is no valid header value")
        headers = {"Authorization": f"Bearer {token}", **call.headers}
        return http.build_request(
            call.method,
            call.path,
            params=call.params,
            json=None if call.json is _NO_BODY else call.json,
            headers=headers,
            timeout=httpx.Timeout(max(left, MIN_REQUEST_TIMEOUT_S)),
        )

    def ticket(self, call: Call[Any]) -> int:
        """The number of a request about to be sent, for `settle` (see `Pacer.observe`)."""
        return self.pacers[call.bucket].ticket()

    def settle(self, call: Call[T], response: httpx.Response, attempt: int, ticket: int) -> T:
        """Read the answer: the rate-limit headers always, then the result or the error."""
        info = RateLimitInfo.parse(response.headers, self.clock())
        self.pacers[call.bucket].observe(info, ticket)
        if response.status_code == 429:
            raise info.error(f"{call.method} {call.path}: rate limited by the gateway", attempts=attempt)
        if response.status_code >= 400:
            try:
                body = json.loads(response.content)
            except (ValueError, RecursionError):
                body = None
            raise api_error(response.status_code, body)
        if response.status_code >= 300:  # not followed: a redirect is no answer of the gateway's
            status = response.status_code
            raise ProtocolError(f"{call.method} {call.path}: the gateway answered HTTP {status}")
        return call.read(response)


class _Body:
    """An answer's body as it is read, bounded by `MAX_ANSWER_BYTES` once decoded."""

    def __init__(self, call: Call[Any]) -> None:
        self.call = call
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > MAX_ANSWER_BYTES:
            raise ProtocolError(
                f"{self.call.method} {self.call.path}: the answer is larger than {MAX_ANSWER_BYTES} bytes"
            )
        self.chunks.append(chunk)

    def response(self, streamed: httpx.Response) -> httpx.Response:
        """The answer with its whole body, decoded (so without its Content-Encoding)."""
        headers = [(k, v) for k, v in streamed.headers.raw if k.lower() != b"content-encoding"]
        return httpx.Response(
            streamed.status_code, headers=headers, content=b"".join(self.chunks), request=streamed.request
        )


def _translate(call: Call[Any], exc: httpx.HTTPError) -> TransportError:
    if isinstance(exc, httpx.TimeoutException):
        return DeadlineExceeded(f"{call.method} {call.path}: no answer within the call's deadline")
    if isinstance(exc, httpx.LocalProtocolError):  # h11 quotes the header value it refused
        return TransportError(f"{call.method} {call.path}: not sent: a header value is not valid HTTP")
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
            base_url=base_url, transport=transport or deadline.transport(verify), verify=verify,
            headers={"User-Agent": USER_AGENT}, follow_redirects=False,
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
                ticket = core.ticket(call)
                body = _Body(call)
                with deadline.deadline(core.left(call, deadline_at)):
                    try:
                        streamed = self._http.send(request, stream=True)
                        try:
                            for chunk in streamed.iter_bytes():
                                body.add(chunk)
                        finally:
                            streamed.close()
                    except httpx.HTTPError as exc:
                        raise _translate(call, exc) from None
                return core.settle(call, body.response(streamed), attempt.retry_state.attempt_number, ticket)
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
                ticket = core.ticket(call)
                body = _Body(call)
                # httpx's timeouts are per read: the cancel scope holds the whole request to the deadline.
                with anyio.move_on_after(core.left(call, deadline_at)) as scope:
                    try:
                        streamed = await self._http.send(request, stream=True)
                        try:
                            async for chunk in streamed.aiter_bytes():
                                body.add(chunk)
                        finally:
                            await streamed.aclose()
                    except httpx.HTTPError as exc:
                        raise _translate(call, exc) from None
                if scope.cancelled_caught:
                    raise DeadlineExceeded(f"{call.method} {call.path}: no answer within the call's deadline")
                return core.settle(call, body.response(streamed), attempt.retry_state.attempt_number, ticket)
        raise AssertionError("unreachable: tenacity re-raises the last error when it stops")

    async def aclose(self) -> None:
        await self._http.aclose()
