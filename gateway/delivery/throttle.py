"""Holding back: pauses per destination (a receiver said `X-RateLimit-Remaining: 0`).

A hook's `maxConcurrency` and `rateLimitPerSecond` are kept by the store's claim instead
(gateway/store/sqlite/lanes.py), so a delivery never waits for them inside a worker."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from ..store.base import Store

log = logging.getLogger("gateway.delivery")

DEFAULT_PORTS = {"http": 80, "https": 443}
PAUSE_REFRESH_S = 1.0  # a destination's pause is read from the store at most this often


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

    async def pause(self, tenant_id: str, dest: str, until: float) -> bool:
        """Pause the destination until `until`; True when this began a pause (none was recorded,
        here or by another instance): the news for `destination.paused`."""
        key = (tenant_id, dest)
        if self._local.get(key, 0.0) >= until:
            return False
        if self.until(tenant_id, dest) is None:  # not paused until now: a change of state
            log.warning("destination %s paused for %.0f s by its receiver's rate-limit headers", dest,
                        until - self._clock(), extra={"destination": dest, "paused_until": until})
        previous = self._local.get(key)
        self._local[key] = until
        try:
            return await self._store.start_pause(tenant_id, dest, until)
        except BaseException:  # not stored: a retry (the database unwritable) must store it
            if self._local.get(key) == until:
                if previous is None:
                    del self._local[key]
                else:
                    self._local[key] = previous
            raise

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
