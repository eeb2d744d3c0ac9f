"""The SDK follows the seed's advice on rate limits, against a running gateway with low limits.

The gateway and the SDK share a clock that moves only when the SDK sleeps (tests/sdk_live.py),
so a wait is observed exactly (it ends at the gateway's `X-RateLimit-Reset`, or after its
`Retry-After`) and a test needs no real waiting; one test runs on the real clock. What the
gateway answered is recorded by the SDK's own httpx transport, so `429`s are counted, not
guessed from timings.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import Gateway
from sdk_live import AsyncRecordingTransport, RecordingTransport, SharedClock, root_url, statuses

from gateway.auth import SCOPE_FORWARD
from gateway.client import (
    AsyncAuthServerClient,
    AsyncManagementClient,
    AuthServerClient,
    ManagementClient,
    RateLimited,
    RateLimitPolicy,
)
from gateway.settings import Settings

# The SDK's behaviour does not depend on the gateway's database: one backend is enough (the
# gateway's own paths run on both in their own tests).
pytestmark = pytest.mark.sqlite_only

# Three calls saved up, one more a second: the fourth call in a row meets the limit.
LOW = {"management_rate": 1.0, "management_burst": 3, "ingest_rate": 1.0, "ingest_burst": 3}
CE = {"audience": "https://api.example.com", "client": {"id": "c1", "name": "App"}, "scope": ["read"]}
SIGNUP = {"user": {"id": "u1", "email": "a@example.com"}, "context": {"connection": {"id": "con_1"}}}


@pytest.fixture
async def low_gateway(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Settings]
) -> Callable[..., Awaitable[tuple[Gateway, SharedClock]]]:
    async def make(*, frozen: bool = False, **limits: Any) -> tuple[Gateway, SharedClock]:
        clock = SharedClock(frozen=frozen)
        gw = await make_gateway(make_settings(ratelimit={**LOW, **limits}), clock=clock.now)
        await gw.create_tenant("acme")
        return gw, clock

    return make


def forwarder(gw: Gateway) -> str:
    return gw.token("acme", (SCOPE_FORWARD,))


async def drain(gw: Gateway, path: str, headers: dict[str, str]) -> None:
    """Spend the bucket with plain requests (not through the SDK, which would pace itself)."""
    for _ in range(20):
        resp = (
            await gw.client.get(path, headers=headers)
            if path.startswith("/api")
            else await gw.client.post(path, json=CE, headers=headers)
        )
        if resp.status == 429:
            return
    raise AssertionError("the bucket did not run out")


async def test_the_async_client_waits_for_the_reset_when_remaining_runs_out_and_meets_no_429(
    low_gateway: Callable[..., Awaitable[tuple[Gateway, SharedClock]]],
) -> None:
    gw, clock = await low_gateway()
    transport = AsyncRecordingTransport(clock)
    async with AsyncManagementClient(
        root_url(gw), gw.token(), transport=transport, clock=clock.now, sleep=clock.asleep
    ) as sdk:
        for _ in range(10):
            await sdk.list_hooks()

    seen = transport.seen
    assert statuses(seen) == [200] * 10
    assert [a.remaining for a in seen[:3]] == [2, 1, 0]
    # It waited exactly after the answers that left nothing, each time until that answer's reset.
    exhausted = [a for a in seen[:-1] if a.remaining == 0]
    assert len(exhausted) == 3
    assert len(clock.waits) == len(exhausted)
    for (started, seconds), answer in zip(clock.waits, exhausted, strict=True):
        assert started == answer.at
        assert started + seconds == pytest.approx(answer.reset)


async def test_the_sync_client_paces_its_events_the_same_way(
    low_gateway: Callable[..., Awaitable[tuple[Gateway, SharedClock]]],
) -> None:
    gw, clock = await low_gateway()
    transport = RecordingTransport(clock)

    def run() -> list[str]:
        with AuthServerClient(
            root_url(gw), forwarder(gw), transport=transport, clock=clock.now, sleep=clock.sleep
        ) as sdk:
            return [sdk.emit("acme", "post-user-registration", SIGNUP).event_id for _ in range(7)]

    ids = await asyncio.to_thread(run)

    assert len(set(ids)) == 7
    assert statuses(transport.seen) == [202] * 7
    exhausted = [a for a in transport.seen[:-1] if a.remaining == 0]
    assert [started + seconds for started, seconds in clock.waits] == pytest.approx(
        [a.reset for a in exhausted]
    )


async def test_a_429_is_retried_no_earlier_than_retry_after(
    low_gateway: Callable[..., Awaitable[tuple[Gateway, SharedClock]]],
) -> None:
    gw, clock = await low_gateway()
    await drain(gw, "/api/v2/hooks", gw.auth())
    transport = AsyncRecordingTransport(clock)
    async with AsyncManagementClient(
        root_url(gw), gw.token(), transport=transport, clock=clock.now, sleep=clock.asleep
    ) as sdk:
        page = await sdk.list_hooks()

    assert page.total == 0
    refused, accepted = transport.seen
    assert (refused.status, accepted.status) == (429, 200)
    assert refused.retry_after is not None and refused.retry_after >= 1
    # The back-off after the 429 alone is at least Retry-After; pacing may then wait on to
    # the reset the 429 announced (the bucket full again), never past it.
    (started, backoff), *pacing = clock.waits
    assert started == refused.at and backoff >= refused.retry_after
    assert accepted.at >= refused.at + refused.retry_after
    assert all(start + seconds == pytest.approx(refused.reset) for start, seconds in pacing)


@pytest.mark.parametrize("max_tries", [1, 3])
async def test_it_gives_up_after_max_tries_with_the_reset_time(
    low_gateway: Callable[..., Awaitable[tuple[Gateway, SharedClock]]], max_tries: int
) -> None:
    gw, clock = await low_gateway(frozen=True)  # the bucket never refills
    await drain(
        gw, "/v1/tenants/acme/triggers/credentials-exchange", {"Authorization": f"Bearer {forwarder(gw)}"}
    )
    transport = AsyncRecordingTransport(clock)
    async with AsyncAuthServerClient(
        root_url(gw),
        forwarder(gw),
        transport=transport,
        clock=clock.now,
        sleep=clock.asleep,
        rate_limit=RateLimitPolicy(max_tries=max_tries),
    ) as sdk:
        with pytest.raises(RateLimited) as raised:
            await sdk.invoke("acme", "credentials-exchange", CE)

    assert statuses(transport.seen) == [429] * max_tries
    last = transport.seen[-1]
    assert raised.value.attempts == max_tries
    assert raised.value.reset_at == last.reset
    assert raised.value.retry_after == last.retry_after
    assert raised.value.status == 429
    # Before each retry: the back-off (at least Retry-After), then pacing up to the reset.
    assert last.retry_after is not None and last.reset is not None
    assert len(clock.waits) == 2 * (max_tries - 1)
    assert all(seconds >= last.retry_after for _, seconds in clock.waits[0::2])
    assert all(start + seconds == pytest.approx(last.reset) for start, seconds in clock.waits[1::2])


async def test_the_default_policy_never_retries_forever(
    low_gateway: Callable[..., Awaitable[tuple[Gateway, SharedClock]]],
) -> None:
    gw, clock = await low_gateway(frozen=True)
    await drain(gw, "/api/v2/hooks", gw.auth())
    transport = RecordingTransport(clock)

    def run() -> RateLimited:
        with ManagementClient(
            root_url(gw), gw.token(), transport=transport, clock=clock.now, sleep=clock.sleep
        ) as sdk:
            try:
                sdk.list_hooks()
            except RateLimited as exc:
                return exc
        raise AssertionError("a bucket that never refills must end in RateLimited")

    error = await asyncio.to_thread(run)

    assert statuses(transport.seen) == [429] * RateLimitPolicy().max_tries
    assert error.attempts == RateLimitPolicy().max_tries
    assert error.reset_at is not None and error.reset_at > clock.now()


@pytest.mark.parametrize("limit", ["max_wait", "deadline"])
async def test_a_wait_longer_than_allowed_gives_up_at_once(
    low_gateway: Callable[..., Awaitable[tuple[Gateway, SharedClock]]], limit: str
) -> None:
    gw, clock = await low_gateway(ingest_rate=0.01)  # one token per 100 s: Retry-After: 100
    await drain(
        gw, "/v1/tenants/acme/triggers/credentials-exchange", {"Authorization": f"Bearer {forwarder(gw)}"}
    )
    transport = AsyncRecordingTransport(clock)
    policy = RateLimitPolicy(max_wait_s=10.0) if limit == "max_wait" else RateLimitPolicy()
    async with AsyncAuthServerClient(
        root_url(gw),
        forwarder(gw),
        transport=transport,
        clock=clock.now,
        sleep=clock.asleep,
        rate_limit=policy,
    ) as sdk:
        with pytest.raises(RateLimited) as raised:
            await sdk.invoke("acme", "credentials-exchange", CE, deadline_s=5.0)

    assert statuses(transport.seen) == [429]
    assert raised.value.retry_after == 100
    assert clock.waits == []


async def test_a_burst_meets_429s_then_the_client_keeps_under_the_limit(
    low_gateway: Callable[..., Awaitable[tuple[Gateway, SharedClock]]],
) -> None:
    gw, clock = await low_gateway()
    transport = AsyncRecordingTransport(clock)
    async with AsyncAuthServerClient(
        root_url(gw),
        forwarder(gw),
        transport=transport,
        clock=clock.now,
        sleep=clock.asleep,
        rate_limit=RateLimitPolicy(max_tries=6),
    ) as sdk:
        burst = await asyncio.gather(*(sdk.invoke("acme", "credentials-exchange", CE) for _ in range(12)))
        during = len(transport.seen)
        after = [await sdk.invoke("acme", "credentials-exchange", CE) for _ in range(9)]

    assert [r.scope for r in burst + after] == [["read"]] * 21
    assert 429 in statuses(transport.seen[:during])  # the burst did go over the limit...
    assert statuses(transport.seen[during:]) == [200] * 9  # ... and afterwards the client did not


async def test_on_the_real_clock_a_sync_client_paces_itself_without_a_429(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Settings]
) -> None:
    gw = await make_gateway(make_settings(ratelimit={**LOW, "management_rate": 10.0}))
    await gw.create_tenant("acme")
    transport = RecordingTransport()

    def run() -> None:
        with ManagementClient(root_url(gw), gw.token(), transport=transport) as sdk:
            for _ in range(8):
                sdk.list_hooks()

    await asyncio.to_thread(run)

    assert statuses(transport.seen) == [200] * 8
    assert [a.remaining for a in transport.seen].count(0) >= 2  # it met the limit, and waited
