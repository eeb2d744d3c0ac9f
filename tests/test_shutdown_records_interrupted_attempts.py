"""A request cut off by a shutdown is never sent again silently: the receiver may have read
it (and acted on it), so the interrupted attempt is recorded before the delivery is given
back, and the send after the restart is a second recorded attempt. No try of the schedule is
used up by the interruption."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from conftest import Gateway, Receiver

from gateway.settings import Settings

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeSettings = Callable[..., Settings]
MakeReceiver = Callable[..., Awaitable[Receiver]]
EVENT = {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}}


async def test_a_request_cut_off_by_a_shutdown_is_a_recorded_attempt(
    make_gateway: MakeGateway, make_settings: MakeSettings, make_receiver: MakeReceiver
) -> None:
    release = asyncio.Event()

    async def stuck_once(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        state["n"] = state.get("n", 0) + 1
        if state["n"] == 1:
            await release.wait()  # read the request, then hold it past the shutdown timeout
        return web.json_response({})

    settings = make_settings(server={"shutdown_timeout": "100ms"}, delivery={"lease": "5m"})
    first = await make_gateway(settings)
    await first.create_tenant("acme")
    rx = await make_receiver(stuck_once)
    await first.create_hook(url=rx.url(), enabled=True, timeoutMs=30_000)
    resp = await first.forward("post-user-registration", EVENT)
    assert resp.status == 202, await resp.text()
    delivery_id = (await resp.json())["deliveries"][0]["deliveryId"]
    await rx.wait_for(1)

    await first.engine.stop(0.1)  # the shutdown: the attempt does not finish in time
    release.set()
    second = await make_gateway(settings)  # the restart, on the same database
    done = await second.wait_delivery(delivery_id, status="succeeded")

    assert len(rx.requests) == 2  # the receiver got the event twice...
    assert len(done["attempts"]) == 2  # ... and both sends are recorded
    interrupted, answered = done["attempts"]
    assert interrupted["statusCode"] is None and "shut" in interrupted["error"]
    assert answered["statusCode"] == 200
    assert done["attemptCount"] == 1  # the interruption used no try of the schedule
