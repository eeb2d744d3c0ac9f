"""One attempt to a receiver: build the signed request, send it through the egress guard,
read a capped answer, and say what happened. Shared by durable and blocking delivery."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .. import points, tracing
from ..egress import MAX_STORED_BODY_BYTES
from ..errors import AnswerTimeout, ApiError, ConnectTimeout, DestinationRefused, TransportError
from ..registry import LiveHook
from ..runtime.process import RuntimeFailure
from ..store.models import Attempt
from ..transport import Transport
from .schedule import RateLimitInfo, parse_rate_limit, parse_retry_after

_NO_RATE_LIMIT = RateLimitInfo(None, None, None)


@dataclass(slots=True)  # not frozen: built per request (gateway/store/models.py)
class AttemptResult:
    started_at: float
    duration_ms: float
    status_code: int | None
    error: str | None  # why the attempt failed (None: the receiver answered 2xx)
    body: bytes  # the answer, up to the cap it was read with
    content_type: str | None
    rate_limit: RateLimitInfo
    retry_after: float | None
    # The receiver closed a reused kept-alive connection before answering: it may have read the
    # request. The outbound client does not send it again; the caller records this attempt and
    # may make a new one at once (most often the receiver had closed the connection as idle).
    closed_reused: bool = False
    # The answer's headers (names in lower case), for the dashboard's test runner.
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def record(self, *, note: str | None = None) -> Attempt:
        """The attempt as stored: first 4 KiB of the body as text, rate-limit headers."""
        text = self.body[:MAX_STORED_BODY_BYTES].decode("utf-8", "replace") if self.body else None
        return Attempt(
            number=0,
            started_at=self.started_at,
            duration_ms=round(self.duration_ms, 3),
            status_code=self.status_code,
            error=self.error or note,
            response_body=text,
            rl_limit=self.rate_limit.limit,
            rl_remaining=self.rate_limit.remaining,
            rl_reset=self.rate_limit.reset,
            retry_after=self.retry_after,
        )


def render_body(hook_format: str, trigger_id: str, event: bytes | Mapping[str, Any], now: float) -> bytes:
    """The request body: the event unchanged (`auth0`), or Standard Webhooks' envelope."""
    if hook_format == "standard":
        data = json.loads(event) if isinstance(event, bytes) else dict(event)
        stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return json.dumps(
            points.standard_envelope(trigger_id, data, timestamp=stamp), separators=(",", ":")
        ).encode()
    if isinstance(event, bytes):
        return event
    return json.dumps(event, separators=(",", ":")).encode()


def request_headers(live: LiveHook, msg_id: str, body: bytes, now: float) -> bytes:
    """The request's header lines: the hook's fixed ones (rendered once) and its signature; none
    for a hosted hook, which gets no HTTP request (nothing to sign: ~40 us of CPU saved a call)."""
    if live.hosted is not None:
        return b""
    return live.head + live.signer.header_lines(msg_id, int(now), body)


def error_note(answer: points.Answer) -> str | None:
    """What an answered error envelope said, for the attempt record."""
    if answer.ok:
        return None
    return f"receiver answered an error: {answer.error_name}: {answer.error_message or ''}"[:1000]


def deliver(
    live: LiveHook,
    transport: Transport,
    body: bytes,
    headers: Mapping[str, str] | bytes,
    *,
    timeout_s: float,
    body_cap: int,
    clock: Callable[[], float] = time.time,
) -> Awaitable[AttemptResult]:
    """One attempt to the hook: a POST to its `url`, or a call of its hosted `script`."""
    if live.hosted is not None:
        return _call_hosted(live, body, timeout_s=timeout_s, body_cap=body_cap, clock=clock)
    return send(transport, live.hook.url, body, headers, timeout_s=timeout_s, body_cap=body_cap, clock=clock)


async def _call_hosted(
    live: LiveHook, body: bytes, *, timeout_s: float, body_cap: int, clock: Callable[[], float]
) -> AttemptResult:
    """A call of the hook's script in its runtime process (gateway/runtime/): the answer is what
    Auth0's compiler wrote, read as a receiver's answer; no answer is a failed attempt."""
    assert live.hosted is not None and live.hosting is not None
    started = clock()
    t0 = time.perf_counter()
    status: int | None = None
    data = b""
    error: str | None = None
    try:
        answer = await live.hosting.call(live.hosted, body, timeout_s=timeout_s, body_cap=body_cap)
        status, data = answer.status, answer.body
        if not 200 <= status < 300:
            error = f"the hook's script answered HTTP {status}"
            with contextlib.suppress(ValueError, TypeError, KeyError):  # webtask's error body, when it is one
                detail = json.loads(data)
                error += f": {detail['error']} {detail['details']}"[:500]
    except RuntimeFailure as exc:
        error = exc.message
    return AttemptResult(
        started_at=started,
        duration_ms=(time.perf_counter() - t0) * 1000.0,
        status_code=status,
        error=error,
        body=data,
        content_type="application/json" if status is not None else None,
        rate_limit=_NO_RATE_LIMIT,
        retry_after=None,
    )


def send(
    transport: Transport,
    url: str,
    body: bytes,
    headers: Mapping[str, str] | bytes,
    *,
    timeout_s: float,
    body_cap: int,
    clock: Callable[[], float] = time.time,
) -> Awaitable[AttemptResult]:
    """POST once; never raises for anything the receiver or network does. With tracing on, in a
    span of its own whose `traceparent` the receiver gets (gateway/tracing.py); off, no
    coroutine of its own is added to the call."""
    if tracing.ENABLED:
        return _traced_send(transport, url, body, headers, timeout_s=timeout_s, body_cap=body_cap,
                            clock=clock)
    return _send(transport, url, body, headers, timeout_s=timeout_s, body_cap=body_cap, clock=clock)


async def _traced_send(
    transport: Transport,
    url: str,
    body: bytes,
    headers: Mapping[str, str] | bytes,
    *,
    timeout_s: float,
    body_cap: int,
    clock: Callable[[], float],
) -> AttemptResult:
    with tracing.outbound(url):
        result = await _send(transport, url, body, tracing.with_traceparent(headers), timeout_s=timeout_s,
                             body_cap=body_cap, clock=clock)
        tracing.answered(result.status_code, result.error)
        return result


async def _send(
    transport: Transport,
    url: str,
    body: bytes,
    headers: Mapping[str, str] | bytes,
    *,
    timeout_s: float,
    body_cap: int,
    clock: Callable[[], float],
) -> AttemptResult:
    started = clock()
    t0 = time.perf_counter()
    status: int | None = None
    data = b""
    ctype: str | None = None
    rate_limit = _NO_RATE_LIMIT
    retry_after: float | None = None
    error: str | None = None
    closed_reused = False
    answer_headers: Mapping[str, str] = {}
    try:
        target = transport.target(url)  # BadRequest when the URL's policy check refuses it
        answer = await transport.post(target, body, headers, timeout_s=timeout_s, body_cap=body_cap)
        status = answer.status
        data = answer.body
        answer_headers = answer.headers
        ctype = answer_headers.get("content-type")
        now = clock()
        rate_limit = parse_rate_limit(answer_headers, now)
        retry_after = parse_retry_after(answer_headers.get("retry-after"), now)
        if not 200 <= status < 300:
            error = f"receiver answered HTTP {status}"
            if 300 <= status < 400:
                error += " (redirects are not followed)"
        elif answer.truncated:
            error = f"answer larger than {body_cap} bytes"
    except ApiError as exc:  # the URL itself is refused by policy
        error = exc.message
    except DestinationRefused as exc:  # the guard refused every address before connecting
        error = str(exc)
    except (ConnectTimeout, AnswerTimeout) as exc:
        error = exc.message
    except TransportError as exc:
        error = f"connection failed: {exc.message}"  # invoke.py retries "connection failed" ones
        closed_reused = exc.reused
    duration_ms = (time.perf_counter() - t0) * 1000.0
    return AttemptResult(
        started_at=started,
        duration_ms=duration_ms,
        status_code=status,
        error=error,
        body=data,
        content_type=ctype,
        rate_limit=rate_limit,
        retry_after=retry_after,
        closed_reused=closed_reused,
        headers=answer_headers,
    )


