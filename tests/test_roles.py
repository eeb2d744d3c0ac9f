"""`[server] role`: an `api` instance takes events in and serves the Management API but delivers
nothing; a `worker` instance delivers and serves no API; `all` does both."""

from __future__ import annotations

import asyncio
from typing import Any

PUR = "post-user-registration"
EVENT = {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}}


async def test_a_worker_instance_serves_no_api_but_its_health(make_gateway, make_settings) -> None:
    gw = await make_gateway(make_settings(server={"role": "worker"}))

    for path in ("/api/v2/hooks", "/api/v2/tenants", "/v1/tenants/acme/triggers/post-user-registration"):
        resp = await gw.client.get(path, headers=gw.auth())
        assert resp.status == 404, path
        body: dict[str, Any] = await resp.json()
        assert body["statusCode"] == 404
    for path in ("/healthz", "/readyz"):
        assert (await gw.client.get(path)).status == 200


async def test_an_api_instance_stores_events_and_a_worker_instance_delivers_them(
    make_gateway, make_settings, make_receiver
) -> None:
    settings = make_settings(server={"role": "api"})
    api = await make_gateway(settings)
    await api.create_tenant("acme")
    rx = await make_receiver()
    await api.create_hook(url=rx.url(), enabled=True)
    resp = await api.forward(PUR, EVENT)
    assert resp.status == 202
    delivery_id = (await resp.json())["deliveries"][0]["deliveryId"]
    await asyncio.sleep(0.5)
    assert rx.requests == []  # nobody delivers on an api instance
    assert (await api.delivery(delivery_id))["status"] == "pending"

    worker = await make_gateway(settings.replace(server={"role": "worker"}))
    await rx.wait_for(1, timeout=10)
    await api.wait_delivery(delivery_id, status="succeeded")
    assert (await worker.client.get("/healthz")).status == 200


def test_an_unknown_role_stops_start_up(make_settings) -> None:
    import pytest

    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="role"):
        make_settings(server={"role": "everything"})
