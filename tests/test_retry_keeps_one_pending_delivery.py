"""A manual retry never makes a second pending delivery of one event to one hook: when a
replay has already enqueued the event again, retrying the older delivery is a `409` that
names the pending one, and the receiver gets the event once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from conftest import Gateway, Receiver

from gateway.settings import Settings

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeSettings = Callable[..., Settings]
MakeReceiver = Callable[..., Awaitable[Receiver]]
PUR = "post-user-registration"
EVENT = {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}}


async def failing(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
    return web.Response(status=500)


async def pending_of(gw: Gateway, hook_id: str) -> list[dict[str, Any]]:
    resp = await gw.client.get(
        f"/api/v2/deliveries?hookId={hook_id}&status=pending&per_page=100", headers=gw.auth()
    )
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def test_retrying_a_delivery_whose_event_was_replayed_is_409_and_adds_nothing(
    make_gateway: MakeGateway, make_settings: MakeSettings, make_receiver: MakeReceiver
) -> None:
    gw = await make_gateway(make_settings(delivery={"retry_schedule": ["50ms"]}))
    await gw.create_tenant("acme")
    rx = await make_receiver(failing)
    hook = await gw.create_hook(url=rx.url(), enabled=True)
    resp = await gw.forward(PUR, EVENT)
    original = (await resp.json())["deliveries"][0]["deliveryId"]
    await gw.wait_delivery(original, status="failed")
    patched = await gw.client.patch(f"/api/v2/hooks/{hook['id']}", json={"enabled": False}, headers=gw.auth())
    assert patched.status == 200  # what is enqueued now stays pending (parked)
    replay = await gw.client.post(
        f"/api/v2/hooks/{hook['id']}/replay", json={"since": "2000-01-01T00:00:00Z"}, headers=gw.auth()
    )
    assert replay.status == 202, await replay.text()
    (replayed,) = (await replay.json())["deliveries"]

    retried = await gw.client.post(f"/api/v2/deliveries/{original}/retry", headers=gw.auth())

    assert retried.status == 409, await retried.text()
    body = await retried.json()
    assert body["statusCode"] == 409 and replayed in body["message"]
    assert [d["id"] for d in await pending_of(gw, hook["id"])] == [replayed]
    assert (await gw.delivery(original))["status"] == "failed"


async def test_retrying_the_pending_delivery_itself_still_works(
    make_gateway: MakeGateway, make_settings: MakeSettings, make_receiver: MakeReceiver
) -> None:
    gw = await make_gateway(make_settings(delivery={"retry_schedule": ["50ms"]}))
    await gw.create_tenant("acme")
    rx = await make_receiver(failing)
    hook = await gw.create_hook(url=rx.url(), enabled=True)
    resp = await gw.forward(PUR, EVENT)
    original = (await resp.json())["deliveries"][0]["deliveryId"]
    await gw.wait_delivery(original, status="failed")
    patched = await gw.client.patch(f"/api/v2/hooks/{hook['id']}", json={"enabled": False}, headers=gw.auth())
    assert patched.status == 200

    for _ in range(2):  # the second retry finds the delivery pending already: still one
        retried = await gw.client.post(f"/api/v2/deliveries/{original}/retry", headers=gw.auth())
        assert retried.status == 202, await retried.text()
    assert [d["id"] for d in await pending_of(gw, hook["id"])] == [original]
