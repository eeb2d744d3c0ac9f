"""For tenants: hooks, secrets, signing secrets, deliveries, retry and replay.

    with ManagementClient("https://hooks.example.com", token=TENANT_TOKEN) as gw:
        hook = gw.create_hook(name="welcome", trigger_id="post-user-registration",
                              url="https://hooks.acme.example/welcome", enabled=True)
        secret = gw.get_signing_secret(hook.id).secret

The token is a Management API token bound to the tenant (claim `tenant`, scopes
`read:hooks create:hooks update:hooks delete:hooks`). Every call paces itself and backs off
on `429` (gateway/client/ratelimit.py); errors are `ApiError`s (gateway/client/errors.py).
"""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from . import management_calls as calls
from .constants import DEFAULT_MANAGEMENT_DEADLINE_S, TriggerId
from .management_calls import UNSET, DeliveryStatus, Time, Unset
from .models import Delivery, Hook, Page, Replay, SigningSecret
from .ratelimit import Clock, RateLimitPolicy
from .session import AsyncSession, AsyncSleep, Session, SyncSleep, TokenSource, default_async_sleep

FailurePolicy = Literal["fail", "skip"]
HookFormat = Literal["auth0", "standard"]


class ManagementClient:
    """The Management API, synchronous; one connection pool per client."""

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        deadline_s: float = DEFAULT_MANAGEMENT_DEADLINE_S,
        rate_limit: RateLimitPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        clock: Clock = time.time,
        sleep: SyncSleep = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """`base_url`: the gateway's root URL; `token`: a tenant's token or a function returning
        a fresh one; `deadline_s`: per call. `clock`, `sleep`, `rng`, `transport`: test seams."""
        self._s = Session(
            base_url, token, deadline_s=deadline_s, rate_limit=rate_limit, transport=transport,
            verify=verify, clock=clock, sleep=sleep, rng=rng,
        )

    # hooks

    def list_hooks(
        self, *, trigger_id: TriggerId | None = None, enabled: bool | None = None, page: int = 0,
        per_page: int = 50,
    ) -> Page[Hook]:
        return self._s.run(calls.list_hooks(trigger_id, enabled, page, per_page))

    def create_hook(
        self, *, name: str, trigger_id: TriggerId, url: str, enabled: bool = False,
        order: int | Unset = UNSET, timeout_ms: int | Unset = UNSET,
        failure_policy: FailurePolicy | Unset = UNSET, max_concurrency: int | Unset = UNSET,
        rate_limit_per_second: float | None | Unset = UNSET, format: HookFormat | Unset = UNSET,
    ) -> Hook:
        body = calls.hook_fields(
            name=name, trigger_id=trigger_id, url=url, enabled=enabled, order=order, timeout_ms=timeout_ms,
            failure_policy=failure_policy, max_concurrency=max_concurrency,
            rate_limit_per_second=rate_limit_per_second, format=format,
        )
        return self._s.run(calls.create_hook(body))

    def get_hook(self, hook_id: str) -> Hook:
        return self._s.run(calls.get_hook(hook_id))

    def update_hook(
        self, hook_id: str, *, name: str | Unset = UNSET, url: str | Unset = UNSET,
        enabled: bool | Unset = UNSET, order: int | Unset = UNSET, timeout_ms: int | Unset = UNSET,
        failure_policy: FailurePolicy | Unset = UNSET, max_concurrency: int | Unset = UNSET,
        rate_limit_per_second: float | None | Unset = UNSET, format: HookFormat | Unset = UNSET,
    ) -> Hook:
        """Change the given fields only (`rate_limit_per_second=None` removes the limit)."""
        body = calls.hook_fields(
            name=name, url=url, enabled=enabled, order=order, timeout_ms=timeout_ms,
            failure_policy=failure_policy, max_concurrency=max_concurrency,
            rate_limit_per_second=rate_limit_per_second, format=format,
        )
        return self._s.run(calls.update_hook(hook_id, body))

    def delete_hook(self, hook_id: str) -> None:
        """Delete the hook; its pending deliveries are cancelled."""
        self._s.run(calls.delete_hook(hook_id))

    def test_hook(self, hook_id: str, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Send the point's sample event (or `event`) to the hook now; the attempt, as the
        gateway describes it (`statusCode`, `durationMs`, `answer`, `result`, ...)."""
        return self._s.run(calls.hook_test(hook_id, event))

    # secrets

    def list_secrets(self, hook_id: str) -> list[str]:
        """The names of the hook's secrets (values are never shown)."""
        return self._s.run(calls.list_secrets(hook_id))

    def add_secrets(self, hook_id: str, secrets: Mapping[str, str]) -> list[str]:
        return self._s.run(calls.add_secrets(hook_id, secrets))

    def update_secrets(self, hook_id: str, secrets: Mapping[str, str]) -> list[str]:
        return self._s.run(calls.update_secrets(hook_id, secrets))

    def delete_secrets(self, hook_id: str, names: Iterable[str]) -> None:
        self._s.run(calls.delete_secrets(hook_id, names))

    # signing secrets

    def get_signing_secret(self, hook_id: str) -> SigningSecret:
        return self._s.run(calls.get_signing_secret(hook_id))

    def rotate_signing_secret(self, hook_id: str, *, grace_period_s: int | None = None) -> SigningSecret:
        """A new signing secret; the old one keeps signing beside it for the grace period."""
        return self._s.run(calls.rotate_signing_secret(hook_id, grace_period_s))

    # deliveries

    def list_deliveries(
        self, *, hook_id: str | None = None, status: DeliveryStatus | None = None, since: Time | None = None,
        until: Time | None = None, page: int = 0, per_page: int = 50,
    ) -> Page[Delivery]:
        return self._s.run(calls.list_deliveries(hook_id, status, since, until, page, per_page))

    def get_delivery(self, delivery_id: str) -> Delivery:
        """The delivery with its `attempts`."""
        return self._s.run(calls.get_delivery(delivery_id))

    def retry_delivery(self, delivery_id: str) -> Delivery:
        return self._s.run(calls.retry_delivery(delivery_id))

    def replay(
        self, hook_id: str, *, since: Time, until: Time | None = None,
        statuses: Iterable[DeliveryStatus] | None = None,
    ) -> Replay:
        """Deliver again to the hook the events of [since, until) whose last delivery has one of
        `statuses` (the gateway's default: failed)."""
        return self._s.run(calls.replay(hook_id, since, until, statuses))

    def close(self) -> None:
        self._s.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncManagementClient:
    """The Management API for asyncio (or trio); the methods of `ManagementClient`, awaited."""

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        deadline_s: float = DEFAULT_MANAGEMENT_DEADLINE_S,
        rate_limit: RateLimitPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        clock: Clock = time.time,
        sleep: AsyncSleep = default_async_sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._s = AsyncSession(
            base_url, token, deadline_s=deadline_s, rate_limit=rate_limit, transport=transport,
            verify=verify, clock=clock, sleep=sleep, rng=rng,
        )

    async def list_hooks(
        self, *, trigger_id: TriggerId | None = None, enabled: bool | None = None, page: int = 0,
        per_page: int = 50,
    ) -> Page[Hook]:
        return await self._s.run(calls.list_hooks(trigger_id, enabled, page, per_page))

    async def create_hook(
        self, *, name: str, trigger_id: TriggerId, url: str, enabled: bool = False,
        order: int | Unset = UNSET, timeout_ms: int | Unset = UNSET,
        failure_policy: FailurePolicy | Unset = UNSET, max_concurrency: int | Unset = UNSET,
        rate_limit_per_second: float | None | Unset = UNSET, format: HookFormat | Unset = UNSET,
    ) -> Hook:
        body = calls.hook_fields(
            name=name, trigger_id=trigger_id, url=url, enabled=enabled, order=order, timeout_ms=timeout_ms,
            failure_policy=failure_policy, max_concurrency=max_concurrency,
            rate_limit_per_second=rate_limit_per_second, format=format,
        )
        return await self._s.run(calls.create_hook(body))

    async def get_hook(self, hook_id: str) -> Hook:
        return await self._s.run(calls.get_hook(hook_id))

    async def update_hook(
        self, hook_id: str, *, name: str | Unset = UNSET, url: str | Unset = UNSET,
        enabled: bool | Unset = UNSET, order: int | Unset = UNSET, timeout_ms: int | Unset = UNSET,
        failure_policy: FailurePolicy | Unset = UNSET, max_concurrency: int | Unset = UNSET,
        rate_limit_per_second: float | None | Unset = UNSET, format: HookFormat | Unset = UNSET,
    ) -> Hook:
        body = calls.hook_fields(
            name=name, url=url, enabled=enabled, order=order, timeout_ms=timeout_ms,
            failure_policy=failure_policy, max_concurrency=max_concurrency,
            rate_limit_per_second=rate_limit_per_second, format=format,
        )
        return await self._s.run(calls.update_hook(hook_id, body))

    async def delete_hook(self, hook_id: str) -> None:
        await self._s.run(calls.delete_hook(hook_id))

    async def test_hook(self, hook_id: str, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return await self._s.run(calls.hook_test(hook_id, event))

    async def list_secrets(self, hook_id: str) -> list[str]:
        return await self._s.run(calls.list_secrets(hook_id))

    async def add_secrets(self, hook_id: str, secrets: Mapping[str, str]) -> list[str]:
        return await self._s.run(calls.add_secrets(hook_id, secrets))

    async def update_secrets(self, hook_id: str, secrets: Mapping[str, str]) -> list[str]:
        return await self._s.run(calls.update_secrets(hook_id, secrets))

    async def delete_secrets(self, hook_id: str, names: Iterable[str]) -> None:
        await self._s.run(calls.delete_secrets(hook_id, names))

    async def get_signing_secret(self, hook_id: str) -> SigningSecret:
        return await self._s.run(calls.get_signing_secret(hook_id))

    async def rotate_signing_secret(
        self, hook_id: str, *, grace_period_s: int | None = None
    ) -> SigningSecret:
        return await self._s.run(calls.rotate_signing_secret(hook_id, grace_period_s))

    async def list_deliveries(
        self, *, hook_id: str | None = None, status: DeliveryStatus | None = None, since: Time | None = None,
        until: Time | None = None, page: int = 0, per_page: int = 50,
    ) -> Page[Delivery]:
        return await self._s.run(calls.list_deliveries(hook_id, status, since, until, page, per_page))

    async def get_delivery(self, delivery_id: str) -> Delivery:
        return await self._s.run(calls.get_delivery(delivery_id))

    async def retry_delivery(self, delivery_id: str) -> Delivery:
        return await self._s.run(calls.retry_delivery(delivery_id))

    async def replay(
        self, hook_id: str, *, since: Time, until: Time | None = None,
        statuses: Iterable[DeliveryStatus] | None = None,
    ) -> Replay:
        return await self._s.run(calls.replay(hook_id, since, until, statuses))

    async def aclose(self) -> None:
        await self._s.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
