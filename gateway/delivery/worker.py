"""Delivery workers: claim due deliveries with a lease, send them, record what happened.

Each worker keeps up to `batch` attempts in flight and claims more as they finish, so one slow
receiver does not hold up the others. The lease is the row's due time pushed forward: a
worker that dies simply lets its rows come due again. A clean stop finishes what is in flight
(up to the shutdown timeout) and gives the rest back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ..egress import MAX_STORED_BODY_BYTES
from ..registry import HookRegistry, LiveHook
from ..settings import Settings
from ..store.base import Store
from ..store.models import Claimed, Outcome
from ..store.sqlite import PARKED_AT
from .attempt import AttemptResult, envelope_error, render_body, request_headers, send
from .schedule import pause_until, wait_schedule_jitter
from .throttle import HookLimits, Pauses, destination

log = logging.getLogger("gateway.delivery")

CAP_RETRY_S = 0.5  # a hook at its concurrency cap: look again this much later
IDLE_MAX_S = 5.0


class DeliveryEngine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        registry: HookRegistry,
        session_getter: Callable[[], aiohttp.ClientSession],
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        allow_cidrs: Any = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self._session = session_getter
        self.clock = clock
        self.cfg = settings.delivery
        self.wait = wait_schedule_jitter(self.cfg.retry_schedule, self.cfg.jitter, rng)
        self.pauses = Pauses(store, clock=clock)
        self.limits = HookLimits()
        self.allow_cidrs = allow_cidrs
        self.owner = f"{os.getpid()}-{os.urandom(4).hex()}"
        self._wake = asyncio.Event()
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self.delivered = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        for n in range(self.cfg.workers):
            self._tasks.append(asyncio.create_task(self._worker(n), name=f"delivery-worker-{n}"))
        self._tasks.append(asyncio.create_task(self._purger(), name="delivery-purger"))

    def notify(self) -> None:
        """New deliveries are due now (called by ingest)."""
        self._wake.set()

    async def stop(self, timeout_s: float) -> None:
        self._stopping = True
        self._wake.set()
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()
        pending = list(self._inflight.values())
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout_s)
            for t in still:
                t.cancel()
            for t in still:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        leftover = list(self._inflight)
        if leftover:
            await self.store.release(leftover, self.clock())

    # -- claiming --------------------------------------------------------------------------

    async def _worker(self, n: int) -> None:
        batch = max(1, self.cfg.batch)
        idle = self.cfg.poll_interval
        mine: set[asyncio.Task[None]] = set()
        while not self._stopping:
            free = batch - len(mine)
            if free < max(1, batch // 4):
                await asyncio.wait(mine, return_when=asyncio.FIRST_COMPLETED)
                continue
            try:
                claimed = await self.store.claim_due(
                    now=self.clock(), limit=free, lease_s=self.cfg.lease, owner=self.owner
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("claiming deliveries failed; retrying")
                await asyncio.sleep(1.0)
                continue
            for item in claimed:
                task = asyncio.create_task(self._deliver(item))
                self._inflight[item.delivery.id] = task
                mine.add(task)
                task.add_done_callback(mine.discard)
                task.add_done_callback(lambda t, did=item.delivery.id: self._inflight.pop(did, None))
            if claimed:
                idle = self.cfg.poll_interval
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=idle)
            idle = min(IDLE_MAX_S, max(idle, self.cfg.poll_interval))

    async def _purger(self) -> None:
        while not self._stopping:
            try:
                now = self.clock()
                removed = await self.store.purge(before=now - self.cfg.retention, now=now)
                if removed:
                    log.info("purged %d finished deliveries older than the retention", removed)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("purge failed")
            await asyncio.sleep(self.cfg.purge_interval)

    # -- one delivery ----------------------------------------------------------------------

    async def _deliver(self, item: Claimed) -> None:
        d = item.delivery
        try:
            outcome = await self._attempt(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("delivery %s failed unexpectedly", d.id)
            outcome = self._failure(item, f"internal error: {type(exc).__name__}", uses_attempt=False, result=None)
        if outcome is not None:
            await self.store.record_outcomes([outcome], self.clock(), owner=self.owner)
            if outcome.status == "succeeded":
                self.delivered += 1

    async def _attempt(self, item: Claimed) -> Outcome | None:
        d = item.delivery
        view = await self.registry.view(d.tenant_id)
        live = view.hooks.get(d.hook_id) if view else None
        now = self.clock()
        if live is None:
            return Outcome(d.id, None, "cancelled", None, False, "hook deleted")
        if not live.hook.enabled:
            return Outcome(d.id, None, "pending", PARKED_AT, False, None)
        if now - d.created_at > self.cfg.max_age:
            return Outcome(d.id, None, "failed", None, False, "max age exceeded")
        dest = destination(live.hook.url)
        paused = self.pauses.until(d.tenant_id, dest) or await self.pauses.refresh(d.tenant_id, dest)
        if paused is not None:
            return Outcome(d.id, None, "pending", paused, False, None)
        hook = live.hook
        if not self.limits.can_queue(hook.id, hook.max_concurrency):
            return Outcome(d.id, None, "pending", now + CAP_RETRY_S, False, None)
        await self.limits.acquire(hook.id, hook.max_concurrency, hook.rate_limit_per_second)
        try:
            # The pause may have been set while this one waited for its turn.
            paused = self.pauses.until(d.tenant_id, dest)
            if paused is not None:
                return Outcome(d.id, None, "pending", paused, False, None)
            result = await self._send(live, item)
        finally:
            await self.limits.release(hook.id)
        return await self._classify(item, live, result)

    async def _send(self, live: LiveHook, item: Claimed) -> AttemptResult:
        now = self.clock()
        body = render_body(live.hook.format, item.delivery.trigger_id, item.body, now)
        headers = request_headers(live, item.delivery.id, body, now)
        return await send(
            self._session(),
            live.hook.url,
            body,
            headers,
            timeout_s=live.hook.timeout_ms / 1000.0,
            connect_timeout_s=self.settings.egress.connect_timeout,
            body_cap=MAX_STORED_BODY_BYTES,
            allow_http=self.settings.egress.allow_http,
            allow_cidrs=self.allow_cidrs,
            clock=self.clock,
        )

    async def _classify(self, item: Claimed, live: LiveHook, result: AttemptResult) -> Outcome:
        d = item.delivery
        now = self.clock()
        until = pause_until(result.rate_limit, self.cfg.ratelimit_remaining_threshold, now)
        if until is not None:
            await self.pauses.pause(d.tenant_id, destination(live.hook.url), until)
        status = result.status_code
        if result.ok:
            return Outcome(d.id, result.record(note=envelope_error(result.body)), "succeeded", None, True, None)
        if status == 410:
            reason = f"receiver answered 410 Gone at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))}"
            await self.registry_disable(live, reason)
            return Outcome(d.id, result.record(), "pending", PARKED_AT, True, f"{result.error}; hook disabled")
        if status == 429:
            # A 429 is the receiver pacing us, not a failure of this delivery: no attempt used.
            base = result.retry_after if result.retry_after is not None else self.wait.delay(max(1, d.attempt_count + 1))
            due = now + base
            if until is not None:
                due = max(due, until)
            if due - d.created_at > self.cfg.max_age:
                return Outcome(d.id, result.record(), "failed", None, False, "max age exceeded (429)")
            return Outcome(d.id, result.record(), "pending", due, False, result.error)
        return self._failure(item, result.error or "failed", uses_attempt=True, result=result, floor=until)

    def _failure(
        self, item: Claimed, reason: str, *, uses_attempt: bool, result: AttemptResult | None,
        floor: float | None = None,
    ) -> Outcome:
        d = item.delivery
        now = self.clock()
        made = d.attempt_count + (1 if uses_attempt else 0)
        record = result.record() if result is not None else None
        if made > len(self.cfg.retry_schedule):
            return Outcome(d.id, record, "failed", None, uses_attempt, reason)
        due = now + self.wait.delay(max(1, made))
        if result is not None and result.retry_after is not None and result.status_code == 503:
            due = max(due, now + result.retry_after)
        if floor is not None:
            due = max(due, floor)
        if due - d.created_at > self.cfg.max_age:
            return Outcome(d.id, record, "failed", None, uses_attempt, f"{reason}; max age exceeded")
        return Outcome(d.id, record, "pending", due, uses_attempt, reason)

    async def registry_disable(self, live: LiveHook, reason: str) -> None:
        hook = live.hook
        await self.store.update_hook(hook.tenant_id, hook.id, {"enabled": False, "disabledReason": reason},
                                     self.clock())
        self.registry.invalidate(hook.tenant_id)
        log.warning("hook %s disabled: %s", hook.id, reason)
