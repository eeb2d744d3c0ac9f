"""The gateway's own rate limits: token buckets (unit tests with an injected clock) and the
`X-RateLimit-*` headers on every `/api/v2` and `/v1` answer, then `429` with `Retry-After`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import Gateway

from gateway.ratelimit import RateLimiter
from gateway.settings import Settings

MakeGateway = Callable[..., Awaitable[Gateway]]
RL_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- the bucket -----------------------------------------------------------------------------


def test_a_full_bucket_allows_burst_requests_then_refuses() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=1.0, burst=3, clock=clock)
    decisions = [limiter.take("t") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert all(d.limit == 3 for d in decisions)
    refused = decisions[-1]
    assert refused.retry_after == 1
    assert refused.headers()["Retry-After"] == "1"
    assert "Retry-After" not in decisions[0].headers()


def test_tokens_come_back_at_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=2.0, burst=2, clock=clock)
    assert limiter.take("t").allowed and limiter.take("t").allowed
    assert not limiter.take("t").allowed
    clock.now += 0.5  # one token at 2 per second
    assert limiter.take("t").allowed
    assert not limiter.take("t").allowed
    clock.now += 3600  # never more than the burst saved up
    assert [limiter.take("t").allowed for _ in range(3)] == [True, True, False]


def test_reset_is_when_the_bucket_is_full_again_in_unix_seconds() -> None:
    clock = Clock(1_000_000.0)
    limiter = RateLimiter(rate=0.5, burst=4, clock=clock)
    first = limiter.take("t")
    assert first.reset == 1_000_002  # one token missing, 2 s each
    for _ in range(3):
        last = limiter.take("t")
    assert last.remaining == 0
    assert last.reset == 1_000_008
    refused = limiter.take("t")
    assert not refused.allowed
    assert refused.retry_after == 2


def test_retry_after_rounds_up_for_slow_rates() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=0.001, burst=1, clock=clock)
    limiter.take("t")
    refused = limiter.take("t")
    assert refused.retry_after == 1000
    clock.now += 999.5
    assert not limiter.take("t").allowed
    clock.now += 0.5
    assert limiter.take("t").allowed


def test_each_key_has_its_own_bucket() -> None:
    limiter = RateLimiter(rate=1.0, burst=1, clock=Clock())
    assert limiter.take("tenant:a").allowed
    assert not limiter.take("tenant:a").allowed
    assert limiter.take("tenant:b").allowed


def test_a_clock_stepping_back_neither_refills_nor_drains() -> None:
    clock = Clock(1000.0)
    limiter = RateLimiter(rate=1.0, burst=2, clock=clock)
    limiter.take("t")
    clock.now = 900.0
    assert limiter.take("t").remaining == 0
    assert not limiter.take("t").allowed
    clock.now = 1001.0  # one second after the latest time seen
    assert limiter.take("t").allowed


def test_the_number_of_remembered_keys_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RateLimiter, "MAX_KEYS", 10)
    clock = Clock()
    limiter = RateLimiter(rate=0.001, burst=5, clock=clock)
    for i in range(50):
        limiter.take(f"k{i}")  # none of them refills: forgetting only full ones is not enough
    assert len(limiter._buckets) <= 10
    assert limiter.take("k49").remaining == 3  # the newest are kept: its second take


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_a_limiter_that_could_never_allow_is_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate=rate, burst=burst)


# -- over HTTP ------------------------------------------------------------------------------


@pytest.fixture
async def limited(make_gateway: MakeGateway, make_settings: Callable[..., Settings]) -> Gateway:
    gw = await make_gateway(
        make_settings(
            ratelimit={
                "management_burst": 3,
                "management_rate": 0.001,
                "ingest_burst": 3,
                "ingest_rate": 0.001,
            }
        )
    )
    await gw.create_tenant("acme")  # an operator's bucket, not acme's
    return gw


def assert_rl_headers(resp: Any, limit: int, remaining: int) -> None:
    for name in RL_HEADERS:
        assert name in resp.headers, (name, dict(resp.headers))
    assert int(resp.headers["X-RateLimit-Limit"]) == limit
    assert int(resp.headers["X-RateLimit-Remaining"]) == remaining
    assert int(resp.headers["X-RateLimit-Reset"]) > 1_600_000_000  # unix seconds


async def test_management_answers_carry_the_headers_then_429_with_retry_after(limited: Gateway) -> None:
    for remaining in (2, 1, 0):
        resp = await limited.client.get("/api/v2/hooks", headers=limited.auth())
        assert resp.status == 200
        assert_rl_headers(resp, 3, remaining)
    resp = await limited.client.get("/api/v2/hooks", headers=limited.auth())
    assert resp.status == 429
    assert_rl_headers(resp, 3, 0)
    assert int(resp.headers["Retry-After"]) == 1000
    body = await resp.json()
    assert body["statusCode"] == 429 and body["error"] == "Too Many Requests"
    # Another tenant has its own bucket.
    await limited.create_tenant("globex")
    resp = await limited.client.get("/api/v2/hooks", headers=limited.auth("globex"))
    assert resp.status == 200
    assert_rl_headers(resp, 3, 2)


@pytest.mark.parametrize(
    ("method", "path", "headers_of", "status"),
    [
        ("GET", "/api/v2/hooks", "none", 401),
        ("GET", "/api/v2/hooks", "junk", 401),
        ("GET", "/api/v2/hooks/hk_nope", "tenant", 404),
        ("GET", "/api/v2/no-such-route", "tenant", 404),
        ("PUT", "/api/v2/hooks", "tenant", 405),
        ("GET", "/api/v2/tenants", "tenant", 403),
        ("POST", "/api/v2/hooks", "tenant", 400),
        ("GET", "/api/v2/openapi.json", "none", 200),
        ("GET", "/v1/ip-ranges", "none", 200),
        ("POST", "/v1/tenants/acme/triggers/post-user-registration", "none", 401),
        ("POST", "/v1/tenants/acme/triggers/no-such-point", "forward", 404),
        ("POST", "/v1/tenants/acme/triggers/post-user-registration", "forward", 400),
        ("GET", "/v1/nothing-here", "none", 404),
    ],
)
async def test_every_answer_carries_the_rate_limit_headers(
    gateway: Gateway, method: str, path: str, headers_of: str, status: int
) -> None:
    headers = {
        "none": {},
        "junk": {"Authorization": "Bearer junk"},
        "tenant": gateway.auth(),
        "forward": gateway.auth("acme", ("forward:events",)),
    }[headers_of]
    resp = await gateway.client.request(
        method, path, headers=headers, data=b"{}" if method == "POST" else None
    )
    assert resp.status == status, await resp.text()
    for name in RL_HEADERS:
        assert name in resp.headers, name


async def test_refused_ingest_addresses_still_get_the_headers(
    make_gateway: MakeGateway, make_settings: Callable[..., Settings]
) -> None:
    gw = await make_gateway(make_settings(ingest={"allowed_cidrs": ["192.0.2.0/24"]}))
    await gw.create_tenant("acme")
    resp = await gw.forward(
        "post-user-registration",
        {"user": {"id": "u"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
    )
    assert resp.status == 403
    for name in RL_HEADERS:
        assert name in resp.headers


async def test_ingest_has_its_own_bucket(limited: Gateway) -> None:
    for _ in range(3):
        resp = await limited.client.get("/api/v2/hooks", headers=limited.auth())
    resp = await limited.forward(
        "post-user-registration",
        {"user": {"id": "u"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
    )
    assert resp.status == 202
    assert_rl_headers(resp, 3, 2)
    for _ in range(2):
        await limited.forward(
            "post-user-registration",
            {"user": {"id": "u"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
        )
    resp = await limited.forward(
        "post-user-registration",
        {"user": {"id": "u"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
    )
    assert resp.status == 429
    assert "Retry-After" in resp.headers


async def test_unauthenticated_callers_cannot_drain_a_tenants_bucket(limited: Gateway) -> None:
    for _ in range(5):
        resp = await limited.client.get("/api/v2/hooks", headers={"Authorization": "Bearer forged"})
        assert resp.status in (401, 429)
        await limited.client.post("/v1/tenants/acme/triggers/post-user-registration", json={})
    resp = await limited.client.get("/api/v2/hooks", headers=limited.auth())
    assert resp.status == 200
    assert_rl_headers(resp, 3, 2)
    resp = await limited.forward(
        "post-user-registration",
        {"user": {"id": "u"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
    )
    assert resp.status == 202


async def test_another_tenants_token_cannot_drain_a_tenants_ingest_bucket(limited: Gateway) -> None:
    await limited.create_tenant("globex")
    for _ in range(4):
        resp = await limited.client.post(
            "/v1/tenants/acme/triggers/post-user-registration",
            json={"user": {"id": "u"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
            headers=limited.auth("globex", ("forward:events",)),
        )
        assert resp.status in (403, 429)
    resp = await limited.forward(
        "post-user-registration",
        {"user": {"id": "u"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
    )
    assert resp.status == 202
    assert_rl_headers(resp, 3, 2)
