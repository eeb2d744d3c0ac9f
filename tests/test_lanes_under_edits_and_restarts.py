"""Delivery lanes under unlucky timing: an edit while deliveries are in flight, a second
instance on the same database whose cached view is behind, a clean restart. No delivery may
be sent twice at once, pass its hook's `maxConcurrency`, skip a receiver's `Retry-After`, or
be left pending with nothing that will ever make it due."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from gateway.store.models import Hook, Tenant
from gateway.store.sqlite import SqliteStore

T0 = 1_700_000_000.0
PUR = "post-user-registration"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(f"sqlite:///{tmp_path / 'lanes.db'}")
    await s.open()
    await s.create_tenant(Tenant(id="acme", name="acme", created_at=T0, updated_at=T0))
    yield s
    await s.close()


async def add_hook(store: SqliteStore, hook_id: str, *, cap: int = 100) -> None:
    await store.create_hook(
        Hook(
            id=hook_id, tenant_id="acme", name=hook_id.replace("_", "-"), trigger_id=PUR,
            url="https://receiver.example.com/", enabled=True, order=0, timeout_ms=1000,
            failure_policy="fail", max_concurrency=cap, rate_limit_per_second=None, format="auth0",
            disabled_reason=None, created_at=T0, updated_at=T0,
        ),
        "whsec_dGVzdHRlc3R0ZXN0dGVzdHRlc3R0ZXN0dGVzdHRlc3Q=",
    )


async def queue(store: SqliteStore, hook_id: str, n: int) -> list[str]:
    ids = []
    for i in range(n):
        did = f"dlv_{hook_id}_{i}"
        await store.ingest(
            tenant_id="acme", trigger_id=PUR, event_id=f"evt_{hook_id}_{i}", body=b"{}",
            deliveries=[(did, hook_id)], kind="async", now=T0,
        )
        ids.append(did)
    return ids


async def test_disabling_and_enabling_a_hook_leaves_its_delivery_in_flight_leased(store: SqliteStore) -> None:
    await add_hook(store, "hk_1", cap=1)
    await queue(store, "hk_1", 1)
    (held,) = await store.claim_due(now=T0, limit=10, lease_s=60, owner="instance-a")

    await store.update_hook("acme", "hk_1", {"enabled": False}, T0 + 1)
    await store.update_hook("acme", "hk_1", {"enabled": True}, T0 + 2)

    # Instance A is still sending it: instance B must not send the same delivery at once.
    assert await store.claim_due(now=T0 + 3, limit=10, lease_s=60, owner="instance-b") == []


# -- the whole gateway --------------------------------------------------------------------------


def event(user_id: str) -> dict[str, Any]:
    return {"user": {"id": user_id}, "context": {"connection": {"id": "con_1", "name": "db"}}}


async def deliveries_of(resp: Any) -> list[str]:
    assert resp.status == 202, await resp.text()
    return [d["deliveryId"] for d in (await resp.json())["deliveries"]]


async def test_disabling_and_enabling_a_hook_keeps_its_max_concurrency(make_gateway, make_settings,
                                                                     make_receiver) -> None:
    release = asyncio.Event()

    async def fail_then_hang(request: web.Request, received: Any, state: dict[str, Any]) -> Any:
        state["n"] = state.get("n", 0) + 1
        if state["n"] <= 3:
            return web.json_response({}, status=503)
        await release.wait()
        return web.json_response({})

    gw = await make_gateway(make_settings(delivery={"retry_schedule": ["1h"]}))
    await gw.create_tenant("acme")
    rx = await make_receiver(fail_then_hang)
    hook = await gw.create_hook(url=rx.url(), enabled=True, maxConcurrency=2, timeoutMs=30_000)
    for i in range(3):  # these fail once and wait for their retry
        (did,) = await deliveries_of(await gw.forward(PUR, event(f"early{i}")))
        await gw.wait_delivery(did, attempts=1)
    for i in range(5):
        await deliveries_of(await gw.forward(PUR, event(f"u{i}")))
    await rx.wait_for(5)  # two of them hang

    for enabled in (False, True):  # enabling makes every parked delivery due again
        resp = await gw.client.patch(f"/api/v2/hooks/{hook['id']}", json={"enabled": enabled},
                                     headers=gw.auth())
        assert resp.status == 200
    await asyncio.sleep(0.5)
    try:
        assert rx.state["max_active"] == 2  # the two still hanging count against maxConcurrency
    finally:
        release.set()


async def test_an_edit_does_not_cut_short_a_receivers_retry_after(make_gateway, make_settings,
                                                                 make_receiver) -> None:
    gw = await make_gateway(make_settings())
    await gw.create_tenant("acme")

    async def busy(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({}, status=429, headers={"Retry-After": "60"})

    rx = await make_receiver(busy)
    hook = await gw.create_hook(url=rx.url(), enabled=True, maxConcurrency=1)
    for i in range(3):
        await deliveries_of(await gw.forward(PUR, event(f"u{i}")))
    await rx.wait_for(2)  # the second 429 in a row holds the whole hook

    for i in range(5):  # a rename, say: nothing about the receiver changed
        resp = await gw.client.patch(f"/api/v2/hooks/{hook['id']}", json={"name": f"renamed-{i}"},
                                     headers=gw.auth())
        assert resp.status == 200
        await asyncio.sleep(0.1)

    assert len(rx.requests) == 2  # the receiver asked for 60 s of quiet


async def test_a_new_url_is_not_held_by_the_old_receivers_retry_after(make_gateway, make_settings,
                                                                    make_receiver) -> None:
    gw = await make_gateway(make_settings())
    await gw.create_tenant("acme")

    async def busy(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({}, status=429, headers={"Retry-After": "3600"})

    old = await make_receiver(busy)
    new = await make_receiver()
    hook = await gw.create_hook(url=old.url(), enabled=True, maxConcurrency=1)
    (throttled,) = await deliveries_of(await gw.forward(PUR, event("u1")))
    await gw.wait_delivery(throttled, attempts=1)
    (again,) = await deliveries_of(await gw.forward(PUR, event("u2")))
    await gw.wait_delivery(again, attempts=1)  # a second 429 in a row: the hook waits an hour
    (queued,) = await deliveries_of(await gw.forward(PUR, event("u3")))

    resp = await gw.client.patch(f"/api/v2/hooks/{hook['id']}", json={"url": new.url()}, headers=gw.auth())
    assert resp.status == 200
    await gw.wait_delivery(queued, status="succeeded", timeout=5)
    resp = await gw.client.post(f"/api/v2/deliveries/{throttled}/retry", headers=gw.auth())
    assert resp.status in (200, 202), await resp.text()
    await gw.wait_delivery(throttled, status="succeeded", timeout=5)
    assert len(old.requests) == 2


async def test_a_second_instance_with_an_older_view_neither_parks_nor_cancels_deliveries(
    make_gateway, make_settings, make_receiver
) -> None:
    # One instance takes events in and serves the API, another delivers, on one database file;
    # the second one's cached view of the tenant is older than the edits made on the first.
    api = await make_gateway(make_settings(server={"role": "api"}))
    worker = await make_gateway(make_settings(server={"role": "worker"}))
    await api.create_tenant("acme")
    rx = await make_receiver()
    await api.create_hook(name="first", url=rx.url(), enabled=True)
    later = await api.create_hook(name="later", url=rx.url(), enabled=False)
    (seen,) = await deliveries_of(await api.forward(PUR, event("u0")))
    await api.wait_delivery(seen, status="succeeded", timeout=5)  # the worker's view is loaded now
    assert worker.engine.delivered == 1

    resp = await api.client.patch(f"/api/v2/hooks/{later['id']}", json={"enabled": True}, headers=api.auth())
    assert resp.status == 200
    added = await api.create_hook(name="added", url=rx.url(), enabled=True)
    ids = await deliveries_of(await api.forward(PUR, event("u1")))
    assert len(ids) == 3

    hooks = set()
    for did in ids:  # to the hook enabled and to the hook added since the view was loaded too
        hooks.add((await api.wait_delivery(did, status="succeeded", timeout=5))["hookId"])
    assert {later["id"], added["id"]} <= hooks


async def test_a_clean_restart_does_not_hold_a_hook_that_was_at_its_cap(make_gateway, make_settings,
                                                                      make_receiver) -> None:
    release = asyncio.Event()

    async def slow_first(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        if not state.get("released"):
            await release.wait()
            state["released"] = True
        return web.json_response({})

    first = await make_gateway(make_settings())  # the default lease: 5 minutes
    await first.create_tenant("acme")
    rx = await make_receiver(slow_first)
    await first.create_hook(url=rx.url(), enabled=True, maxConcurrency=1)
    ids = []
    for i in range(3):
        ids += await deliveries_of(await first.forward(PUR, event(f"u{i}")))
    await rx.wait_for(1)

    # Shut down while the one delivery in flight finishes within the shutdown timeout.
    stopping = asyncio.create_task(first.engine.stop(timeout_s=10))
    await asyncio.sleep(0.05)
    release.set()
    await stopping
    assert (await first.delivery(ids[0]))["status"] == "succeeded"

    second = await make_gateway(make_settings())  # the restarted gateway, on the same file
    for did in ids[1:]:
        await second.wait_delivery(did, status="succeeded", timeout=5)
