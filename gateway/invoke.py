"""Blocking points: call the enabled hooks in order within one deadline, fold their answers.

Within the deadline a failed attempt that may succeed on a second try (connection failed, a
5xx, a 429 whose Retry-After fits) is retried with tenacity, at most `MAX_ATTEMPTS` times per
hook so that a dead hook leaves time for the next ones; then the hook's `failurePolicy`
decides: `fail` answers a `ServerError`, `skip` goes on as if the hook were absent. Records
of these invocations (kind `sync`) are written after the answer, batched with other writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from . import ids, logs, points, strictjson, tracing
from .coordination import share_count
from .delivery.attempt import AttemptResult, deliver, error_note, render_body, request_headers
from .delivery.schedule import RateLimitInfo
from .egress import MAX_SYNC_BODY_BYTES
from .errors import DeliveryFailure, TooManyRequests
from .metrics import Metrics
from .registry import LiveHook, TenantView
from .settings import Settings
from .store.base import Store
from .store.models import SyncRecord, SyncRow
from .transport import Transport

log = logging.getLogger("gateway.invoke")

RETRY_BASE_S = 0.05  # first pause between retries inside a deadline, doubled each time
RETRY_MAX_S = 1.0
MIN_ATTEMPT_S = 0.05  # no attempt is started with less time than this left
RECORD_WINDOW_S = 0.05  # records of blocking invocations wait this long to be written together
RECORD_BATCH_MAX = 500  # ... or until this many have queued up
MAX_ATTEMPTS = 3  # per hook and invocation: a dead hook must not eat the deadline of the next ones


class _Retryable(DeliveryFailure):
    """An attempt that may succeed when tried again within the deadline."""


class Invoker:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        transport_getter: Callable[[], Transport],
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        metrics: Metrics | None = None,
        instances: Callable[[], int] = lambda: 1,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._instances = instances  # the instances that share a tenant's cap (coordination.py)
        self.store = store
        self._transport = transport_getter
        self.clock = clock
        self.sleep = sleep
        self._in_flight: dict[str, int] = {}
        self.metrics.track_in_flight(self._in_flight)  # read when /metrics is scraped
        self._records: list[SyncRecord] = []
        self._flusher: asyncio.Task[None] | None = None
        self._flush_now = asyncio.Event()

    def in_flight(self, tenant_id: str) -> int:
        return self._in_flight.get(tenant_id, 0)

    async def invoke(
        self, view: TenantView, trigger_id: str, event: dict[str, Any], raw: bytes | None = None
    ) -> dict[str, Any]:
        """The envelope for the auth server. `raw` is the event as received: the first hook
        (in `auth0` format) gets exactly these bytes, and they are what is recorded."""
        hooks = view.enabled.get(trigger_id, [])
        if not hooks:
            return points.neutral_answer(trigger_id, event)
        tenant = view.tenant
        # Each instance allows its share of the tenant's cap: the total holds across instances.
        cap = share_count(tenant.max_in_flight or self.settings.sync.max_in_flight, self._instances())
        running = self._in_flight.get(tenant.id, 0)
        if running >= cap:
            raise TooManyRequests(
                f"too many blocking invocations in flight for tenant {tenant.id!r} (max {cap})", retry_after=1
            )
        self._in_flight[tenant.id] = running + 1
        started = time.perf_counter()
        with tracing.invocation(tenant.id, trigger_id):
            try:
                answer = await self._run(view, trigger_id, event, hooks, raw)
            except Exception as exc:  # the auth server always gets an Auth0 envelope, never a 500
                log.exception("blocking invocation of %s for tenant %s failed", trigger_id, tenant.id)
                answer = points.error_envelope("ServerError", f"internal error: {type(exc).__name__}")
            finally:
                self._in_flight[tenant.id] -= 1
            tracing.envelope(answer)
        self.metrics.invoked(trigger_id, answer, time.perf_counter() - started)
        return answer

    async def _run(
        self,
        view: TenantView,
        trigger_id: str,
        event: dict[str, Any],
        hooks: list[LiveHook],
        raw: bytes | None,
    ) -> dict[str, Any]:
        deadline_ms = view.tenant.deadlines.get(trigger_id)
        budget = deadline_ms / 1000.0 if deadline_ms else self.settings.sync.deadline
        deadline = time.monotonic() + budget
        chain = points.Chain(trigger_id, event)
        now = self.clock()
        event_id = ids.new_id(ids.EVENT, now=now)
        tracing.annotate(event_id=event_id)
        logs.bind(event_id=event_id)
        rows: list[SyncRow] = []
        for position, live in enumerate(hooks):
            if chain.done:
                break
            delivery_id = ids.new_id(ids.DELIVERY, now=now)
            logs.bind(hook_id=live.hook.id, delivery_id=delivery_id)
            attempts: list[AttemptResult] = []
            note: str | None = None  # for the last attempt, when it was answered 2xx
            try:
                if position == 0 and raw is not None and live.hook.format == "auth0":
                    body = raw  # the first hook sees the event exactly as the auth server sent it
                else:
                    body = render_body(live.hook.format, trigger_id, chain.next_request(), self.clock())
                with tracing.hook_call(view.tenant.id, live.hook.id, event_id, delivery_id):
                    reason = await self._call(live, delivery_id, body, deadline, attempts)
                    tracing.failed(reason)
                if reason is None:
                    last = attempts[-1]
                    try:
                        answer = points.parse_receiver_answer(
                            last.status_code or 0, last.content_type, last.body
                        )
                        # An answered error envelope (a deny, too) is kept in the attempt, as for async ones.
                        note = error_note(answer)
                        chain.apply(answer, hook_name=live.hook.name)
                    except points.AnswerError as exc:  # answered, but malformed
                        reason = note = exc.message
            except Exception as exc:  # a bug met by this hook's answer: its failed attempt, not a 500
                log.exception("blocking call of hook %s failed inside the gateway", live.hook.id)
                reason = note = f"internal error: {type(exc).__name__}"
                if not attempts or attempts[-1].error is not None:  # it broke before an answer was kept
                    attempts.append(_internal_failure(self.clock(), reason))
            status = "succeeded" if reason is None else "failed"
            records = [a.record() for a in attempts[:-1]] + [a.record(note=note) for a in attempts[-1:]]
            rows.append(SyncRow(delivery_id, live.hook.id, status, records, reason))
            if reason is not None:
                if live.hook.failure_policy == "skip":
                    log.info("hook %s skipped: %s", live.hook.id, reason)
                    continue
                chain.fail(live.hook.name, reason)
                break
        body_bytes = raw if raw is not None else json.dumps(event, separators=(",", ":")).encode()
        self._record_later(SyncRecord(view.tenant.id, trigger_id, event_id, body_bytes, now, rows))
        return chain.result()

    async def _call(
        self, live: LiveHook, delivery_id: str, body: bytes, deadline: float, attempts: list[AttemptResult]
    ) -> str | None:
        """Attempts until one is answered 2xx, or a failure that may not be retried, or the
        deadline or `MAX_ATTEMPTS` stops retries; None on success, else the last reason."""
        try:  # the first attempt without tenacity: the common case costs nothing extra
            await self._attempt(live, delivery_id, body, deadline, attempts)
            return None
        except _Retryable as exc:
            first = exc
        except DeliveryFailure as exc:
            return exc.reason
        pause = _backoff(1, first)
        if MAX_ATTEMPTS <= 1 or time.monotonic() + pause + MIN_ATTEMPT_S >= deadline:
            return first.reason
        await self.sleep(pause)
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Retryable),
            wait=lambda state: _retry_wait(state, done=1),
            stop=lambda state: _stop_retrying(state, deadline, done=1),
            sleep=self.sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._attempt(live, delivery_id, body, deadline, attempts)
        except DeliveryFailure as exc:
            return exc.reason
        return None

    async def _attempt(
        self, live: LiveHook, delivery_id: str, body: bytes, deadline: float, attempts: list[AttemptResult]
    ) -> None:
        """One attempt within what is left of the deadline; raises `DeliveryFailure` unless 2xx."""
        hook = live.hook
        left = deadline - time.monotonic()
        if left < MIN_ATTEMPT_S:
            raise DeliveryFailure(
                "deadline of the invocation reached before the hook was called", retryable=False
            )
        hook_timeout = hook.timeout_ms / 1000.0
        now = self.clock()
        result = await deliver(
            live,
            self._transport(),
            body,
            request_headers(live, delivery_id, body, now),
            timeout_s=min(hook_timeout, left),
            body_cap=MAX_SYNC_BODY_BYTES,
            clock=self.clock,
        )
        attempts.append(result)
        self.metrics.sync_attempt(result.status_code, result.error, result.duration_ms / 1000.0)
        logs.sync_attempt(result.status_code, result.error, result.duration_ms)
        if result.ok:
            return
        reason = result.error or "failed"
        if left < hook_timeout and result.status_code is None and reason.startswith("timed out"):
            reason = f"deadline of the invocation reached ({reason})"
        raise _classify(result, reason)

    def _record_later(self, record: SyncRecord) -> None:
        """Queue the record; one writer task stores what has queued up, many in one write."""
        self._records.append(record)
        if len(self._records) >= RECORD_BATCH_MAX:
            self._flush_now.set()
        if self._flusher is None or self._flusher.done():
            # In a context of its own: the writer outlives the invocation that started it, and
            # its store calls belong to no one invocation's trace.
            loop = asyncio.get_running_loop()
            self._flusher = loop.create_task(self._flush(), context=contextvars.Context())

    async def _flush(self) -> None:
        while self._records:
            # Wait a moment for more: one write of a hundred records costs less than half as
            # much per record as ten writes of ten (measured: ~19 vs ~48 us of CPU per record).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._flush_now.wait(), timeout=RECORD_WINDOW_S)
            self._flush_now.clear()
            batch, self._records = self._records, []
            try:
                await self.store.record_sync(batch)
            except Exception:
                log.exception("recording %d blocking invocations failed", len(batch))

    async def drain(self) -> None:
        """Write the queued records now and wait for them (shutdown, tests)."""
        while self._flusher is not None and not self._flusher.done():
            self._flush_now.set()
            await asyncio.shield(self._flusher)


def _internal_failure(now: float, reason: str) -> AttemptResult:
    """The record of an attempt that an error inside the gateway ended before any answer."""
    return AttemptResult(
        started_at=now, duration_ms=0.0, status_code=None, error=reason, body=b"", content_type=None,
        rate_limit=RateLimitInfo(None, None, None), retry_after=None,
    )


def envelope_response(envelope: dict[str, Any]) -> web.Response:
    """The envelope for the auth server as strict JSON (no `NaN`, no `Infinity`); a `ServerError`
    envelope if it cannot be written, so that the auth server never gets a 500 from here."""
    try:
        body = strictjson.dumps(envelope).encode()
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        log.error("the envelope for the auth server is not strict JSON: %s", type(exc).__name__)
        body = strictjson.dumps(
            points.error_envelope("ServerError", "the hooks' answer is not strict JSON")
        ).encode()
    return web.Response(body=body, content_type="application/json")


def _backoff(attempts_made: int, exc: BaseException | None) -> float:
    """Exponential backoff from `RETRY_BASE_S`, or the receiver's Retry-After if longer."""
    backoff: float = min(RETRY_MAX_S, RETRY_BASE_S * 2.0 ** (attempts_made - 1))
    if isinstance(exc, DeliveryFailure) and exc.retry_after is not None:
        return max(backoff, float(exc.retry_after))
    return backoff


def _retry_wait(state: RetryCallState, *, done: int = 0) -> float:
    exc = state.outcome.exception() if state.outcome else None
    return _backoff(state.attempt_number + done, exc)


def _stop_retrying(state: RetryCallState, deadline: float, *, done: int = 0) -> bool:
    """Stop after `MAX_ATTEMPTS` in all, or when the pause and one more attempt no longer fit."""
    if state.attempt_number + done >= MAX_ATTEMPTS:
        return True
    return time.monotonic() + _retry_wait(state, done=done) + MIN_ATTEMPT_S >= deadline


def _classify(result: AttemptResult, reason: str) -> DeliveryFailure:
    status = result.status_code
    if status is None:
        if reason.startswith("connection failed"):
            return _Retryable(reason)
        return DeliveryFailure(reason, retryable=False)
    if status == 429 or status >= 500:
        if status == 429 and result.retry_after is None:
            return DeliveryFailure(reason, status=status, retryable=False)
        return _Retryable(reason, status=status, retry_after=result.retry_after)
    return DeliveryFailure(reason, status=status, retryable=False)


INVOKER: web.AppKey[Invoker] = web.AppKey("invoker", Invoker)
