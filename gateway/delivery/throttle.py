"""Holding back: pauses per destination (a receiver said `X-RateLimit-Remaining: 0`), and
each hook's `maxConcurrency` and `rateLimitPerSecond`, shared by every worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..store.base import Store

DEFAULT_PORTS = {"http": 80, "https": 443}


def destination(url: str) -> str:
    """`scheme://host:port`, the unit a receiver's rate limit applies to."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"


class Pauses:
    """Destination pauses, written to the store so every worker (and instance) honours them."""

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._local: dict[tuple[str, str], float] = {}

    def until(self, tenant_id: str, dest: str) -> float | None:
        until = self._local.get((tenant_id, dest))
        if until is None:
            return None
        if until <= self._clock():
            del self._local[(tenant_id, dest)]
            return None
        return until

    async def pause(self, tenant_id: str, dest: str, until: float) -> None:
        key = (tenant_id, dest)
        if self._local.get(key, 0.0) >= until:
            return
        self._local[key] = until
        await self._store.set_pause(tenant_id, dest, until)

    async def refresh(self, tenant_id: str, dest: str) -> float | None:
        """Pick up a pause another instance wrote."""
        until = await self._store.get_pause(tenant_id, dest, self._clock())
        if until is not None:
            self._local[(tenant_id, dest)] = max(until, self._local.get((tenant_id, dest), 0.0))
        return self.until(tenant_id, dest)


@dataclass(slots=True)
class _HookState:
    limit: int
    active: int = 0
    waiting: int = 0
    tokens: float = 0.0
    updated: float = 0.0
    rate: float | None = None
    cond: asyncio.Condition | None = None


class HookLimits:
    """Per hook: at most `maxConcurrency` requests at once, at most `rateLimitPerSecond`."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._state: dict[str, _HookState] = {}

    def _get(self, hook_id: str, limit: int, rate: float | None) -> _HookState:
        st = self._state.get(hook_id)
        if st is None:
            st = self._state[hook_id] = _HookState(limit=limit, rate=rate, tokens=1.0, updated=self._clock())
        st.limit, st.rate = limit, rate
        if st.cond is None:
            st.cond = asyncio.Condition()
        return st

    def active(self, hook_id: str) -> int:
        st = self._state.get(hook_id)
        return st.active if st else 0

    def can_queue(self, hook_id: str, limit: int) -> bool:
        """False when the hook is at its cap with a queue as deep as the cap already waiting."""
        st = self._state.get(hook_id)
        return st is None or st.active < limit or st.waiting < limit

    async def acquire(self, hook_id: str, limit: int, rate: float | None) -> None:
        st = self._get(hook_id, limit, rate)
        assert st.cond is not None
        async with st.cond:
            st.waiting += 1
            try:
                await st.cond.wait_for(lambda: st.active < st.limit)
            finally:
                st.waiting -= 1
            st.active += 1
        if rate:
            await self._take_token(st, rate)

    async def _take_token(self, st: _HookState, rate: float) -> None:
        while True:
            now = self._clock()
            st.tokens = min(max(rate, 1.0), st.tokens + (now - st.updated) * rate)
            st.updated = now
            if st.tokens >= 1.0:
                st.tokens -= 1.0
                return
            await asyncio.sleep((1.0 - st.tokens) / rate)

    async def release(self, hook_id: str) -> None:
        st = self._state.get(hook_id)
        if st is None or st.cond is None:
            return
        async with st.cond:
            st.active -= 1
            st.cond.notify(1)
