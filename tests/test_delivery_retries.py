"""When deliveries are tried again: the schedule, Retry-After, 429s, X-RateLimit pauses, the
maximum age, per-hook caps and 410 Gone. Real receivers on loopback; short schedules."""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from gateway.auth import SCOPE_FORWARD, mint
from gateway.delivery.schedule import wait_schedule_jitter

PUR = "post-user-registration"
RENDER_S = 0.001  # startedAt is rendered to the millisecond


def event(user_id: str = "u1") -> dict[str, Any]:
    return {"user": {"id": user_id}, "context": {"connection": {"id": "con_1", "name": "db"}}}


def ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class Clock:
    """A wall clock that a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


def scripted(*answers: tuple[int, dict[str, str]] | Callable[[], tuple[int, dict[str, str]]]):
    """A responder answering `answers` in turn, then 200; it records when each request came."""

    async def respond(request: web.Request, received, state) -> web.StreamResponse:
        n = len(state.setdefault("times", []))
        state["times"].append(time.time())
        if n < len(answers):
            answer = answers[n]
            status, headers = answer() if callable(answer) else answer
            return web.json_response({"n": n}, status=status, headers=headers)
        return web.json_response({"status": "success", "data": {}})

    return respond


async def gateway_with(make_gateway, make_settings, **delivery: Any):
    gw = await make_gateway(make_settings(delivery=delivery))
    await gw.create_tenant("acme")
    return gw


async def forward_one(gw, hook_url: str, **hook_fields: Any) -> str:
    await gw.create_hook(url=hook_url, enabled=True, **hook_fields)
    resp = await gw.forward(PUR, event())
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["deliveries"][0]["deliveryId"])


async def test_failing_twice_then_succeeding_takes_three_attempts_on_schedule(
    make_gateway, make_settings, make_receiver
) -> None:
    schedule = [0.2, 0.4]
    gw = await gateway_with(make_gateway, make_settings, retry_schedule=["200ms", "400ms"])
    rx = await make_receiver(scripted((500, {}), (502, {})))
    delivery_id = await forward_one(gw, rx.url())

    d = await gw.wait_delivery(delivery_id, status="succeeded")

    assert [a["statusCode"] for a in d["attempts"]] == [500, 502, 200]
    assert [a["number"] for a in d["attempts"]] == [1, 2, 3]
    assert d["attemptCount"] == 3
    started = [ts(a["startedAt"]) for a in d["attempts"]]
    for i, delay in enumerate(schedule):
        assert started[i + 1] - started[i] >= delay - RENDER_S
    assert "HTTP 500" in d["attempts"][0]["error"]


async def test_a_delivery_fails_once_the_schedule_is_used_up(
    make_gateway, make_settings, make_receiver
) -> None:
    gw = await gateway_with(make_gateway, make_settings, retry_schedule=["100ms", "100ms"])
    rx = await make_receiver(scripted(*[(500, {})] * 10))
    delivery_id = await forward_one(gw, rx.url())

    d = await gw.wait_delivery(delivery_id, status="failed")

    assert len(d["attempts"]) == 3  # the first attempt and one per schedule entry
    assert d["nextAttemptAt"] is None
    assert "HTTP 500" in d["lastError"]
    await asyncio.sleep(0.3)  # past where a fourth attempt would have come
    assert len(rx.requests) == 3


async def test_429_waits_for_retry_after_seconds(make_gateway, make_settings, make_receiver) -> None:
    gw = await gateway_with(make_gateway, make_settings, retry_schedule=["100ms"])
    rx = await make_receiver(scripted((429, {"Retry-After": "1"})))
    delivery_id = await forward_one(gw, rx.url())

    d = await gw.wait_delivery(delivery_id, status="succeeded")

    first, second = rx.state["times"]
    assert second - first >= 1.0
    assert d["attempts"][0]["statusCode"] == 429
    assert d["attempts"][0]["retryAfter"] == 1.0


async def test_429_waits_for_retry_after_as_an_http_date(make_gateway, make_settings, make_receiver) -> None:
    gw = await gateway_with(make_gateway, make_settings, retry_schedule=["100ms"])
    not_before: list[float] = []

    def later() -> tuple[int, dict[str, str]]:
        when = int(time.time()) + 2  # HTTP dates have whole seconds
        not_before.append(float(when))
        return 429, {"Retry-After": email.utils.formatdate(when, usegmt=True)}

    rx = await make_receiver(scripted(later))
    delivery_id = await forward_one(gw, rx.url())

    await gw.wait_delivery(delivery_id, status="succeeded")

    assert rx.state["times"][1] >= not_before[0]


async def test_429_does_not_use_up_an_attempt(make_gateway, make_settings, make_receiver) -> None:
    # One retry in the schedule: if 429s counted, the delivery would fail at the second 429.
    gw = await gateway_with(make_gateway, make_settings, retry_schedule=["100ms"])
    rx = await make_receiver(scripted(*[(429, {"Retry-After": "0"})] * 3, (500, {})))
    delivery_id = await forward_one(gw, rx.url())

    d = await gw.wait_delivery(delivery_id, status="succeeded")

    assert [a["statusCode"] for a in d["attempts"]] == [429, 429, 429, 500, 200]
    assert d["attemptCount"] == 2


async def test_503_waits_for_retry_after_beyond_the_schedule(
    make_gateway, make_settings, make_receiver
) -> None:
    gw = await gateway_with(make_gateway, make_settings, retry_schedule=["100ms"])
    rx = await make_receiver(scripted((503, {"Retry-After": "1"})))
    delivery_id = await forward_one(gw, rx.url())

    d = await gw.wait_delivery(delivery_id, status="succeeded")

    first, second = rx.state["times"]
    assert second - first >= 1.0
    assert d["attemptCount"] == 2  # unlike a 429, a 503 is a failed attempt


async def test_a_delivery_past_the_maximum_age_fails(make_gateway, make_settings, make_receiver) -> None:
    clock = Clock()
    settings = make_settings(delivery={"retry_schedule": ["100ms", "100ms", "100ms"], "max_age": "3d"})
    gw = await make_gateway(settings, clock=clock)
    token = mint(
        settings,
        tenant="acme",
        scopes=("read:hooks", "create:hooks", "update:hooks", "delete:hooks", SCOPE_FORWARD),
        ttl_s=10 * 86400,
    )
    auth = {"Authorization": f"Bearer {token}"}
    await gw.create_tenant("acme")
    rx = await make_receiver(scripted(*[(500, {})] * 10))
    resp = await gw.client.post(
        "/api/v2/hooks", json={"name": "h", "triggerId": PUR, "url": rx.url(), "enabled": True}, headers=auth
    )
    assert resp.status == 201
    resp = await gw.client.post(f"/v1/tenants/acme/triggers/{PUR}", json=event(), headers=auth)
    delivery_id = (await resp.json())["deliveries"][0]["deliveryId"]
    await rx.wait_for(1)
    # The first attempt's outcome is recorded (a retry scheduled) before time moves on: moved
    # while the attempt is still being judged, the first attempt itself would be past the age.
    for _ in range(500):
        first = await (await gw.client.get(f"/api/v2/deliveries/{delivery_id}", headers=auth)).json()
        if first["attempts"]:
            break
        await asyncio.sleep(0.02)
    assert first["status"] == "pending" and len(first["attempts"]) == 1

    clock.offset = 3 * 86400  # three days later, the next retry is past the maximum age

    d: dict[str, Any] = {}
    for _ in range(500):
        d = await (await gw.client.get(f"/api/v2/deliveries/{delivery_id}", headers=auth)).json()
        if d["status"] != "pending":
            break
        await asyncio.sleep(0.02)
    assert d["status"] == "failed"
    assert "max age" in d["lastError"]
    assert len(d["attempts"]) == 2


def test_retry_delays_are_spread_by_the_jitter() -> None:
    wait = wait_schedule_jitter([10.0, 100.0], 0.2, random.Random(7))
    firsts = [wait.delay(1) for _ in range(200)]
    seconds = [wait.delay(2) for _ in range(200)]
    lasts = [wait.delay(5) for _ in range(20)]  # past the end: the last entry again
    assert all(8.0 <= d <= 12.0 for d in firsts)
    assert all(80.0 <= d <= 120.0 for d in seconds + lasts)
    assert max(firsts) - min(firsts) > 2.0  # spread, not constant


async def test_ratelimit_remaining_zero_pauses_every_hook_on_that_destination(
    make_gateway, make_settings, make_receiver
) -> None:
    resets: list[float] = []

    def exhausted() -> tuple[int, dict[str, str]]:
        reset = int(time.time()) + 2
        resets.append(reset)
        return 200, {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)}

    gw = await gateway_with(make_gateway, make_settings)
    rx = await make_receiver(scripted(exhausted))
    first_id = await forward_one(gw, rx.url("/a"), name="first")
    first = await gw.wait_delivery(first_id, status="succeeded")
    assert first["attempts"][0]["rateLimit"] == {"limit": 10, "remaining": 0, "reset": resets[0]}
    await gw.create_hook(name="second", url=rx.url("/b"), enabled=True)

    answers = [await gw.forward(PUR, event(f"u{i}")) for i in range(3)]
    later = [d["deliveryId"] for r in answers for d in (await r.json())["deliveries"]]
    assert len(later) == 6
    for delivery_id in later:
        await gw.wait_delivery(delivery_id, status="succeeded")

    assert len(rx.state["times"]) == 7
    assert {r.path for r in rx.requests[1:]} == {"/a", "/b"}
    assert all(t >= resets[0] for t in rx.state["times"][1:])


async def test_max_concurrency_is_never_exceeded_across_workers(
    make_gateway, make_settings, make_receiver
) -> None:
    async def slow(request: web.Request, received, state) -> web.StreamResponse:
        await asyncio.sleep(0.05)
        return web.json_response({})

    # Four workers holding two attempts each could send eight at once without the cap.
    gw = await gateway_with(make_gateway, make_settings, workers=4, batch=2)
    rx = await make_receiver(slow)
    await gw.create_hook(url=rx.url(), enabled=True, maxConcurrency=2)

    answers = await asyncio.gather(*(gw.forward(PUR, event(f"u{i}")) for i in range(16)))
    ids = [(await r.json())["deliveries"][0]["deliveryId"] for r in answers]
    for delivery_id in ids:
        await gw.wait_delivery(delivery_id, status="succeeded")

    assert rx.state["max_active"] == 2


async def test_rate_limit_per_second_spaces_requests(make_gateway, make_settings, make_receiver) -> None:
    gw = await gateway_with(make_gateway, make_settings)
    rx = await make_receiver(scripted())
    rate = 10.0
    await gw.create_hook(url=rx.url(), enabled=True, rateLimitPerSecond=rate)

    answers = await asyncio.gather(*(gw.forward(PUR, event(f"u{i}")) for i in range(6)))
    started = []
    for r in answers:
        d = await gw.wait_delivery((await r.json())["deliveries"][0]["deliveryId"], status="succeeded")
        started += [datetime.fromisoformat(a["startedAt"].replace("Z", "+00:00")).timestamp()
                    for a in d["attempts"]]

    assert len(rx.state["times"]) == 6
    # Each send starts 1/rate after the one before, as recorded (ms precision) by the gateway;
    # arrival times at the receiver would add the loopback's jitter of a loaded machine.
    times = sorted(started)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 1 / rate - 0.002, gaps


async def test_410_gone_disables_the_hook_and_says_why(gateway, make_receiver) -> None:
    rx = await make_receiver(scripted((410, {})))
    hook = await gateway.create_hook(url=rx.url(), enabled=True)
    resp = await gateway.forward(PUR, event())
    delivery_id = (await resp.json())["deliveries"][0]["deliveryId"]

    d = await gateway.wait_delivery(delivery_id, attempts=1)
    # The attempt and the parking of its delivery may be seen a moment apart: wait (bounded)
    # for the delivery to leave its lease; a delivery never parked fails below.
    for _ in range(250):
        if d["nextAttemptAt"] is None:
            break
        await asyncio.sleep(0.02)
        d = await gateway.delivery(delivery_id)
    shown = await (await gateway.client.get(f"/api/v2/hooks/{hook['id']}", headers=gateway.auth())).json()

    assert shown["enabled"] is False
    assert "410" in shown["disabledReason"]
    assert d["status"] == "pending"  # waits for the hook to be enabled again
    assert d["nextAttemptAt"] is None
    assert (await (await gateway.forward(PUR, event("u2"))).json())["deliveries"] == []

    enabled = await gateway.client.patch(
        f"/api/v2/hooks/{hook['id']}", json={"enabled": True}, headers=gateway.auth()
    )
    assert (await enabled.json())["disabledReason"] is None
    d = await gateway.wait_delivery(delivery_id, status="succeeded")
    assert [a["statusCode"] for a in d["attempts"]] == [410, 200]


async def test_a_2xx_answer_that_is_not_json_is_a_failed_attempt(
    make_gateway, make_settings, make_receiver
) -> None:
    async def respond(request: web.Request, received, state) -> web.StreamResponse:
        if len(state.setdefault("seen", [])) == 0:
            state["seen"].append(1)
            return web.Response(text="OK, thanks")
        return web.Response(status=204)

    gw = await gateway_with(make_gateway, make_settings, retry_schedule=["50ms"])
    rx = await make_receiver(respond)
    await gw.create_hook(url=rx.url(), enabled=True)
    sent = await (await gw.forward(PUR, event())).json()
    d = await gw.wait_delivery(sent["deliveries"][0]["deliveryId"], status="succeeded")
    first, second = d["attempts"]
    assert first["statusCode"] == 200 and "not JSON" in first["error"]
    assert second["statusCode"] == 204 and second["error"] is None
