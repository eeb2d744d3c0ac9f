"""For the auth server: forward each extensibility point to the gateway.

    gateway = AuthServerClient("https://hooks.example.com", token=SERVICE_TOKEN, deadline_s=3)
    result = gateway.invoke("acme", "credentials-exchange", body)   # CredentialsExchangeResult
    event = gateway.emit("acme", "post-user-registration", body, idempotency_key=signup_id)

The token is a service token (scope `forward:events`). `invoke` waits for the hooks of a
blocking point and returns its typed result, or raises the typed `HookError` the hooks
answered (`Denied`, `InvalidScope`, ...); `emit` returns once the gateway stored the event.
Each call has a deadline: waits for the rate limit, back-off and the request all fit in it.
"""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, Self, overload
from urllib.parse import quote

import httpx

from .constants import (
    BLOCKING_TRIGGERS,
    DEFAULT_EMIT_DEADLINE_S,
    DEFAULT_INVOKE_DEADLINE_S,
    EVENT_TRIGGERS,
    HEADER_IDEMPOTENCY_KEY,
    HEADER_IDEMPOTENT_REPLAYED,
    BlockingTrigger,
    EventTrigger,
)
from .ratelimit import Clock, RateLimitPolicy
from .results import (
    CredentialsExchangeResult,
    Emitted,
    InvokeResult,
    PreUserRegistrationResult,
    SendPhoneMessageResult,
    read_emitted,
    read_envelope,
)
from .session import (
    AsyncSession,
    AsyncSleep,
    Call,
    Session,
    SyncSleep,
    TokenSource,
    default_async_sleep,
    read_json,
)


def _path(tenant: str, trigger: str) -> str:
    return f"/v1/tenants/{quote(tenant, safe='')}/triggers/{quote(trigger, safe='')}"


def invoke_call(
    tenant: str, trigger: str, body: Mapping[str, Any], deadline_s: float | None
) -> Call[InvokeResult]:
    if trigger not in BLOCKING_TRIGGERS:
        raise ValueError(f"{trigger!r} is not a blocking point: use emit()")
    return Call(
        method="POST",
        path=_path(tenant, trigger),
        json=dict(body),
        read=lambda response: read_envelope(trigger, read_json(response)),
        bucket=f"ingest:{tenant}",
        deadline_s=deadline_s,
    )


def emit_call(
    tenant: str, trigger: str, body: Mapping[str, Any], idempotency_key: str | None, deadline_s: float | None
) -> Call[Emitted]:
    if trigger not in EVENT_TRIGGERS:
        raise ValueError(f"{trigger!r} is a blocking point: use invoke()")
    headers = {} if idempotency_key is None else {HEADER_IDEMPOTENCY_KEY: idempotency_key}

    def read(response: httpx.Response) -> Emitted:
        replayed = response.headers.get(HEADER_IDEMPOTENT_REPLAYED, "").lower() == "true"
        return read_emitted(read_json(response), replayed=replayed)

    return Call(
        method="POST",
        path=_path(tenant, trigger),
        json=dict(body),
        headers=headers,
        read=read,
        bucket=f"ingest:{tenant}",
        deadline_s=DEFAULT_EMIT_DEADLINE_S if deadline_s is None else deadline_s,
    )


class AuthServerClient:
    """The auth server's side of the gateway, synchronous; one connection pool per client."""

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        deadline_s: float = DEFAULT_INVOKE_DEADLINE_S,
        rate_limit: RateLimitPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        clock: Clock = time.time,
        sleep: SyncSleep = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        """`base_url`: the gateway's root URL; `token`: a service token, or a function returning
        a fresh one; `deadline_s`: the default deadline of `invoke` (emit's is 10 s).
        `clock`, `sleep`, `rng` and `transport` are seams for tests."""
        self._session = Session(
            base_url, token, deadline_s=deadline_s, rate_limit=rate_limit, transport=transport,
            verify=verify, clock=clock, sleep=sleep, rng=rng,
        )

    @overload
    def invoke(
        self, tenant: str, trigger: Literal["credentials-exchange"], body: Mapping[str, Any], *,
        deadline_s: float | None = None,
    ) -> CredentialsExchangeResult: ...
    @overload
    def invoke(
        self, tenant: str, trigger: Literal["pre-user-registration"], body: Mapping[str, Any], *,
        deadline_s: float | None = None,
    ) -> PreUserRegistrationResult: ...
    @overload
    def invoke(
        self, tenant: str, trigger: Literal["send-phone-message"], body: Mapping[str, Any], *,
        deadline_s: float | None = None,
    ) -> SendPhoneMessageResult: ...
    @overload
    def invoke(
        self, tenant: str, trigger: BlockingTrigger, body: Mapping[str, Any], *,
        deadline_s: float | None = None,
    ) -> InvokeResult: ...
    def invoke(
        self, tenant: str, trigger: BlockingTrigger, body: Mapping[str, Any], *,
        deadline_s: float | None = None,
    ) -> InvokeResult:
        """Run the hooks of a blocking point; raises `HookError` (`Denied`, `InvalidScope`,
        `InvalidRequest`, `HookFailed`) when they answered an error."""
        return self._session.run(invoke_call(tenant, trigger, body, deadline_s))

    def emit(
        self,
        tenant: str,
        trigger: EventTrigger,
        body: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
    ) -> Emitted:
        """Store a non-blocking event for durable delivery. A repeat with the same
        `idempotency_key` (1 to 255 visible ASCII characters) returns the first event."""
        return self._session.run(emit_call(tenant, trigger, body, idempotency_key, deadline_s))

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncAuthServerClient:
    """The auth server's side of the gateway, for asyncio (or trio); one pool per client."""

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        deadline_s: float = DEFAULT_INVOKE_DEADLINE_S,
        rate_limit: RateLimitPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
        clock: Clock = time.time,
        sleep: AsyncSleep = default_async_sleep,
        rng: random.Random | None = None,
    ) -> None:
        """As `AuthServerClient`; `sleep` is awaited."""
        self._session = AsyncSession(
            base_url, token, deadline_s=deadline_s, rate_limit=rate_limit, transport=transport,
            verify=verify, clock=clock, sleep=sleep, rng=rng,
        )

    @overload
    async def invoke(
        self, tenant: str, trigger: Literal["credentials-exchange"], body: Mapping[str, Any], *,
        deadline_s: float | None = None,
    ) -> CredentialsExchangeResult: ...
    @overload
    async def invoke(
        self, tenant: str, trigger: Literal["pre-user-registration"], body: Mapping[str, Any], *,
        deadline_s: float | None = None,
    ) -> PreUserRegistrationResult: ...
    @overload
    async def invoke(
        self, tenant: str, trigger: Literal["send-phone-message"], body: Mapping[str, Any], *,
        deadline_s: float | None = None,
    ) -> SendPhoneMessageResult: ...
    @overload
    async def invoke(
        self, tenant: str, trigger: BlockingTrigger, body: Mapping[str, Any], *,
        deadline_s: float | None = None,
    ) -> InvokeResult: ...
    async def invoke(
        self, tenant: str, trigger: BlockingTrigger, body: Mapping[str, Any], *,
        deadline_s: float | None = None,
    ) -> InvokeResult:
        """See `AuthServerClient.invoke`."""
        return await self._session.run(invoke_call(tenant, trigger, body, deadline_s))

    async def emit(
        self,
        tenant: str,
        trigger: EventTrigger,
        body: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        deadline_s: float | None = None,
    ) -> Emitted:
        """See `AuthServerClient.emit`."""
        return await self._session.run(emit_call(tenant, trigger, body, idempotency_key, deadline_s))

    async def aclose(self) -> None:
        await self._session.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
