"""Replay cannot flood the queue: it never adds a second pending delivery of one event to one
hook, and each tenant has a quota of replays per hour, counted in the database, past which the
answer is a 429 with the seconds until a replay leaves the hour."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from conftest import Gateway, Receiver

from gateway.api.openapi import document
from gateway.settings import Settings

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeSettings = Callable[..., Settings]
MakeReceiver = Callable[..., Awaitable[Receiver]]
PUR = "post-user-registration"
SINCE = "2000-01-01T00:00:00Z"


async def failing(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
    return web.Response(status=500)


def event(user_id: str) -> dict[str, Any]:
    return {"user": {"id": user_id}, "context": {"connection": {"id": "con_1", "name": "db"}}}


async def replay(gw: Gateway, hook_id: str, **body: Any) -> Any:
    return await gw.client.post(
        f"/api/v2/hooks/{hook_id}/replay", json={"since": SINCE, **body}, headers=gw.auth()
    )


async def replayed(gw: Gateway, hook_id: str, **body: Any) -> dict[str, Any]:
    resp = await replay(gw, hook_id, **body)
    assert resp.status == 202, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def pending_by_event(gw: Gateway, hook_id: str) -> dict[str, int]:
    resp = await gw.client.get(
        f"/api/v2/deliveries?hookId={hook_id}&status=pending&per_page=100", headers=gw.auth()
    )
    counts: dict[str, int] = {}
    for d in await resp.json():
        counts[d["eventId"]] = counts.get(d["eventId"], 0) + 1
    return counts


async def failed_events(gw: Gateway, hook_id: str, count: int) -> list[str]:
    """`count` events whose deliveries to the hook failed; the hook is then disabled, so what
    a replay enqueues stays pending (parked) for the rest of the test."""
    ids = []
    for i in range(count):
        resp = await gw.forward(PUR, event(f"u{i}"))
        assert resp.status == 202, await resp.text()
        ids.append((await resp.json())["deliveries"][0]["deliveryId"])
    for delivery_id in ids:
        await gw.wait_delivery(delivery_id, status="failed")
    patched = await gw.client.patch(f"/api/v2/hooks/{hook_id}", json={"enabled": False}, headers=gw.auth())
    assert patched.status == 200
    return ids


async def test_a_second_replay_of_the_same_window_enqueues_nothing_new(
    make_gateway: MakeGateway, make_settings: MakeSettings, make_receiver: MakeReceiver
) -> None:
    gw = await make_gateway(make_settings(delivery={"retry_schedule": ["50ms"]}))
    await gw.create_tenant("acme")
    rx = await make_receiver(failing)
    hook = await gw.create_hook(url=rx.url(), enabled=True)
    await failed_events(gw, hook["id"], 3)

    first = await replayed(gw, hook["id"], status=["failed"])
    again = await replayed(gw, hook["id"], status=["failed", "pending"])
    default = await replayed(gw, hook["id"])

    assert first["count"] == 3
    assert (again["count"], again["deliveries"]) == (0, [])
    assert default["count"] == 0
    pending = await pending_by_event(gw, hook["id"])
    assert len(pending) == 3 and set(pending.values()) == {1}
    assert (first["skipped"], again["skipped"], default["skipped"]) == (0, 3, 3)


async def test_a_replay_skips_an_event_whose_older_delivery_was_retried(
    make_gateway: MakeGateway, make_settings: MakeSettings, make_receiver: MakeReceiver
) -> None:
    gw = await make_gateway(make_settings(delivery={"retry_schedule": ["50ms"]}))
    await gw.create_tenant("acme")
    rx = await make_receiver(failing)
    hook = await gw.create_hook(url=rx.url(), enabled=True)
    resp = await gw.forward(PUR, event("u1"))
    original = (await resp.json())["deliveries"][0]["deliveryId"]
    await gw.wait_delivery(original, status="failed")
    (second,) = (await replayed(gw, hook["id"]))["deliveries"]
    await gw.wait_delivery(second, status="failed")
    patched = await gw.client.patch(f"/api/v2/hooks/{hook['id']}", json={"enabled": False}, headers=gw.auth())
    assert patched.status == 200
    retried = await gw.client.post(f"/api/v2/deliveries/{original}/retry", headers=gw.auth())
    assert retried.status == 202

    # The latest delivery of the event failed, but the first one is pending again.
    body = await replayed(gw, hook["id"])

    assert body["count"] == 0
    assert list((await pending_by_event(gw, hook["id"])).values()) == [1]
    assert body["skipped"] == 1


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_replays_past_the_hourly_quota_are_429_until_the_oldest_leaves_the_hour(
    make_gateway: MakeGateway,
) -> None:
    clock = Clock()
    start = clock.now
    gw = await make_gateway(clock=clock, start_workers=False)
    await gw.create_tenant("acme", quotas={"replaysPerHour": 2})
    hook = await gw.create_hook()
    headers = {"Authorization": f"Bearer {gw.token(ttl=4 * 3600)}"}

    async def call(at: float) -> Any:
        clock.now = start + at
        url = f"/api/v2/hooks/{hook['id']}/replay"
        return await gw.client.post(url, json={"since": SINCE}, headers=headers)

    assert (await call(0)).status == 202
    assert (await call(600)).status == 202
    over = await call(1200)
    assert over.status == 429
    assert over.headers["Retry-After"] == "2400"  # the first replay leaves the hour at 3600
    body = await over.json()
    assert set(body) == {"statusCode", "error", "message"} and body["statusCode"] == 429
    assert "replaysPerHour" in body["message"] and "2" in body["message"]
    assert "X-RateLimit-Limit" in over.headers
    assert (await call(3599)).headers["Retry-After"] == "1"
    assert (await call(3600)).status == 202
    # The refused calls did not count: the window now holds the replays of 600 and 3600.
    last = await call(3601)
    assert last.status == 429 and last.headers["Retry-After"] == "599"


async def test_the_replay_quota_comes_from_settings_and_holds_across_instances(
    make_gateway: MakeGateway, make_settings: MakeSettings
) -> None:
    settings = make_settings(quotas={"replays_per_hour": 2})
    one = await make_gateway(settings, start_workers=False)
    two = await make_gateway(settings, start_workers=False)  # another process on the same database
    await one.create_tenant("acme")
    await one.create_tenant("globex")
    hook = await one.create_hook()
    other = await one.create_hook(tenant="globex")
    missing = await replay(one, "hk_does_not_exist")
    assert missing.status == 404  # a refused replay is not counted

    assert (await replay(one, hook["id"])).status == 202
    assert (await replay(two, hook["id"])).status == 202
    assert (await replay(one, hook["id"])).status == 429
    assert (await replay(two, hook["id"])).status == 429
    globex = await two.client.post(
        f"/api/v2/hooks/{other['id']}/replay", json={"since": SINCE}, headers=two.auth("globex")
    )
    assert globex.status == 202  # per tenant


def test_the_openapi_document_describes_quotas_and_replay_answers() -> None:
    doc = document()
    schemas = doc["components"]["schemas"]
    quotas = schemas["TenantUpdate"]["properties"]["quotas"]
    assert set(quotas["properties"]) == {"hooksPerPoint", "hooks", "replaysPerHour"}
    assert quotas["additionalProperties"] is False
    assert "quotas" in schemas["Tenant"]["required"] and "quotas" in schemas["TenantCreate"]["properties"]
    assert "skipped" in schemas["ReplayResult"]["required"]
    create = doc["paths"]["/api/v2/hooks"]["post"]
    assert "403" in create["responses"] and "hooksPerPoint" in create["description"]
    replay_op = doc["paths"]["/api/v2/hooks/{id}/replay"]["post"]
    assert "429" in replay_op["responses"] and "replaysPerHour" in replay_op["description"]
