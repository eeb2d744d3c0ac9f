"""Holding back: pauses per destination (a receiver said `X-RateLimit-Remaining: 0`), and
each hook's `maxConcurrency` and `rateLimitPerSecond`, shared by every worker."""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..store.base import Store

DEFAULT_PORTS = {"http": 80, "https": 443}
PAUSE_REFRESH_S = 1.0  # a destination's pause is read from the store at most this often
QUEUE_PER_SLOT = 4  # deliveries waiting in memory per `maxConcurrency` slot; the rest go back


@functools.lru_cache(maxsize=4096)
def destination(url: str) -> str:
    """`scheme://host:port`, the unit a receiver's rate limit applies to (cached: hooks are
    called at the same few URLs again and again)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


class Pauses:
    """Destination pauses, written to the store so every worker (and instance) honours them.

    Pauses this process set are known at once; pauses other instances wrote are picked up
    from the store at most once per `refresh_s` per destination, so the hot path rarely reads.
    """

    def __init__(
        self, store: Store, *, clock: Callable[[], float] = time.time, refresh_s: float = PAUSE_REFRESH_S
    ) -> None:
        self._store = store
        self._clock = clock
        self._refresh_s = refresh_s
        self._local: dict[tuple[str, str], float] = {}
        self._checked: dict[tuple[str, str], float] = {}  # key -> monotonic time of the last read
        self._reading: dict[tuple[str, str], asyncio.Future[None]] = {}

    def until(self, tenant_id: str, dest: str) -> float | None:
        """The end of the pause this process knows of, or None."""
        key = (tenant_id, dest)
        until = self._local.get(key)
        if until is None:
            return None
        if until <= self._clock():
            del self._local[key]
            return None
        return until

    async def pause(self, tenant_id: str, dest: str, until: float) -> None:
        key = (tenant_id, dest)
        if self._local.get(key, 0.0) >= until:
            return
        self._local[key] = until
        await self._store.set_pause(tenant_id, dest, until)

    async def check(self, tenant_id: str, dest: str) -> float | None:
        """The end of the pause of a destination, including pauses other instances wrote."""
        key = (tenant_id, dest)
        last = self._checked.get(key)
        if last is None or time.monotonic() - last >= self._refresh_s:
            await self._read(key)
        return self.until(tenant_id, dest)

    async def _read(self, key: tuple[str, str]) -> None:
        pending = self._reading.get(key)
        if pending is not None:  # one read per destination at a time; the others share it
            await asyncio.shield(pending)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reading[key] = future
        try:
            until = await self._store.get_pause(key[0], key[1], self._clock())
            self._checked[key] = time.monotonic()
            if until is not None:
                self._local[key] = max(until, self._local.get(key, 0.0))
        finally:
            del self._reading[key]
            future.set_result(None)
        if len(self._checked) > 10_000:  # forget destinations not seen lately
            horizon = time.monotonic() - self._refresh_s
            self._checked = {k: t for k, t in self._checked.items() if t >= horizon}


@dataclass(slots=True)
class _Gate:
    limit: int
    rate: float | None
    active: int = 0
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)
    tokens: float = 1.0
    updated: float = 0.0


class HookLimits:
    """Per hook: at most `maxConcurrency` requests at once, at most `rateLimitPerSecond`.

    Waiters are served first come, first served; a slot is handed straight to the next
    waiter, so a late arrival never overtakes the queue.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._gates: dict[str, _Gate] = {}

    def _gate(self, hook_id: str, limit: int, rate: float | None) -> _Gate:
        gate = self._gates.get(hook_id)
        if gate is None:
            gate = self._gates[hook_id] = _Gate(limit=limit, rate=rate, updated=self._clock())
        elif gate.limit != limit or gate.rate != rate:
            gate.limit, gate.rate = limit, rate
            self._hand_over(gate)  # a raised limit lets waiters in now
        return gate

    def active(self, hook_id: str) -> int:
        gate = self._gates.get(hook_id)
        return gate.active if gate else 0

    def can_queue(self, hook_id: str, limit: int) -> bool:
        """False when the hook is at its cap with `QUEUE_PER_SLOT` waiters per slot already."""
        gate = self._gates.get(hook_id)
        return gate is None or gate.active < limit or len(gate.waiters) < limit * QUEUE_PER_SLOT

    async def acquire(self, hook_id: str, limit: int, rate: float | None) -> bool:
        """Wait for a slot (and a token when the hook has a rate); `release` gives it back.
        Returns whether it had to wait (then what was checked before may have changed)."""
        gate = self._gate(hook_id, limit, rate)
        waited = False
        if gate.active < gate.limit and not gate.waiters:
            gate.active += 1
        else:
            waited = True
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            gate.waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._release(gate)  # the slot was handed over just as we were cancelled
                elif waiter in gate.waiters:
                    gate.waiters.remove(waiter)
                raise
        if gate.rate:
            try:
                waited = await self._take_token(gate) or waited
            except BaseException:
                self._release(gate)
                raise
        return waited

    async def _take_token(self, gate: _Gate) -> bool:
        """Take the hook's next token; returns whether it had to wait for it."""
        waited = False
        while gate.rate:
            rate = gate.rate
            now = self._clock()
            # A bucket of one token: requests are paced 1/rate apart, never sent in a burst, so
            # no one-second window of the receiver sees more than `rate` (plus the edge one).
            gate.tokens = min(1.0, gate.tokens + (now - gate.updated) * rate)
            gate.updated = now
            if gate.tokens >= 1.0:
                gate.tokens -= 1.0
                return waited
            waited = True
            await self._sleep((1.0 - gate.tokens) / rate)
        return waited

    def release(self, hook_id: str) -> None:
        gate = self._gates.get(hook_id)
        if gate is not None:
            self._release(gate)

    def _release(self, gate: _Gate) -> None:
        gate.active -= 1
        self._hand_over(gate)

    @staticmethod
    def _hand_over(gate: _Gate) -> None:
        while gate.waiters and gate.active < gate.limit:
            waiter = gate.waiters.popleft()
            if not waiter.done():
                gate.active += 1
                waiter.set_result(None)
