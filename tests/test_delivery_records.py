"""What the Management API shows and does with deliveries: attempt records, listing with
filters, retry, replay, disabled and deleted hooks, and the retention purge."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import backends
from aiohttp import web

from gateway.auth import SCOPE_CREATE, SCOPE_DELETE, SCOPE_FORWARD, SCOPE_READ, SCOPE_UPDATE, mint

PUR = "post-user-registration"
SCOPES = (SCOPE_READ, SCOPE_CREATE, SCOPE_UPDATE, SCOPE_DELETE, SCOPE_FORWARD)


def event(user_id: str = "u1") -> dict[str, Any]:
    return {"user": {"id": user_id}, "context": {"connection": {"id": "con_1", "name": "db"}}}


async def first_delivery(resp: Any) -> str:
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["deliveries"][0]["deliveryId"])


class Gate:
    """A responder that holds each request until the test lets it answer."""

    def __init__(self, status: int = 500) -> None:
        self.status = status
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        self.arrived.set()
        await self.release.wait()
        return web.json_response({}, status=self.status)


async def test_an_attempt_records_status_duration_body_and_rate_limit_headers(gateway, make_receiver) -> None:
    big = "x" * 10_000

    async def respond(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        headers = {"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "42", "X-RateLimit-Reset": "30"}
        return web.json_response({"status": "success", "data": {"note": big}}, status=201, headers=headers)

    rx = await make_receiver(respond)
    await gateway.create_hook(url=rx.url(), enabled=True)
    before = time.time()
    delivery_id = await first_delivery(await gateway.forward(PUR, event()))

    d = await gateway.wait_delivery(delivery_id, status="succeeded")

    (a,) = d["attempts"]
    assert a["number"] == 1
    assert a["statusCode"] == 201
    assert a["error"] is None
    assert a["durationMs"] > 0
    assert len(a["responseBody"].encode()) == 4096  # the first 4 KiB of a 10 KB answer
    assert a["responseBody"].startswith('{"status": "success"')
    assert a["rateLimit"]["limit"] == 100
    assert a["rateLimit"]["remaining"] == 42
    assert before + 29 <= a["rateLimit"]["reset"] <= time.time() + 31  # "30" is seconds from now
    assert set(d) >= {
        "id",
        "eventId",
        "hookId",
        "triggerId",
        "kind",
        "status",
        "attemptCount",
        "nextAttemptAt",
        "lastError",
        "createdAt",
        "updatedAt",
    }
    assert d["kind"] == "async"
    assert d["triggerId"] == PUR


async def test_a_200_error_envelope_is_delivered_and_its_error_kept(gateway, make_receiver) -> None:
    async def respond(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        return web.json_response({"status": "error", "data": {"name": "Oops", "message": "no crm"}})

    rx = await make_receiver(respond)
    await gateway.create_hook(url=rx.url(), enabled=True)
    delivery_id = await first_delivery(await gateway.forward(PUR, event()))

    d = await gateway.wait_delivery(delivery_id, status="succeeded")

    assert "Oops" in d["attempts"][0]["error"]
    assert len(rx.requests) == 1


async def test_deliveries_list_filters_by_hook_status_and_time_and_pages(
    make_gateway, make_settings, make_receiver
) -> None:
    async def refuse(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=500)

    gw = await make_gateway(make_settings(delivery={"retry_schedule": ["50ms"]}))
    await gw.create_tenant("acme")
    ok, bad = await make_receiver(), await make_receiver(refuse)
    good_hook = await gw.create_hook(name="good", url=ok.url(), enabled=True)
    bad_hook = await gw.create_hook(name="bad", url=bad.url(), enabled=True)
    ids = []
    for i in range(3):
        body = await (await gw.forward(PUR, event(f"u{i}"))).json()
        ids += [d["deliveryId"] for d in body["deliveries"]]
    for delivery_id in ids:
        await gw.wait_delivery(delivery_id, status=None, attempts=1)
        d = await gw.delivery(delivery_id)
        if d["hookId"] == bad_hook["id"]:
            await gw.wait_delivery(delivery_id, status="failed")

    async def listing(query: str) -> Any:
        resp = await gw.client.get(f"/api/v2/deliveries?{query}", headers=gw.auth())
        assert resp.status == 200, await resp.text()
        return await resp.json()

    assert {d["hookId"] for d in await listing(f"hookId={good_hook['id']}")} == {good_hook["id"]}
    failed = await listing("status=failed")
    assert len(failed) == 3
    assert {d["hookId"] for d in failed} == {bad_hook["id"]}
    page = await listing("per_page=4&page=1&include_totals=true")
    assert page["total"] == 6
    assert page["start"] == 4
    assert len(page["deliveries"]) == 2
    assert await listing("from=2999-01-01T00:00:00Z") == []
    assert len(await listing("to=2999-01-01T00:00:00Z")) == 6
    bad_status = await gw.client.get("/api/v2/deliveries?status=lost", headers=gw.auth())
    assert bad_status.status == 400


async def test_another_tenants_delivery_is_404(gateway, make_receiver) -> None:
    rx = await make_receiver()
    await gateway.create_hook(url=rx.url(), enabled=True)
    delivery_id = await first_delivery(await gateway.forward(PUR, event()))
    await gateway.create_tenant("globex")
    resp = await gateway.client.get(f"/api/v2/deliveries/{delivery_id}", headers=gateway.auth("globex"))
    assert resp.status == 404
    listed = await gateway.client.get("/api/v2/deliveries", headers=gateway.auth("globex"))
    assert await listed.json() == []


async def test_retry_sends_a_failed_delivery_again(make_gateway, make_settings, make_receiver) -> None:
    async def down_then_up(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=200 if state.get("up") else 500)

    gw = await make_gateway(make_settings(delivery={"retry_schedule": ["50ms"]}))
    await gw.create_tenant("acme")
    rx = await make_receiver(down_then_up)
    await gw.create_hook(url=rx.url(), enabled=True)
    delivery_id = await first_delivery(await gw.forward(PUR, event()))
    await gw.wait_delivery(delivery_id, status="failed")
    rx.state["up"] = True

    resp = await gw.client.post(f"/api/v2/deliveries/{delivery_id}/retry", headers=gw.auth())

    assert resp.status == 202
    assert (await resp.json())["status"] == "pending"
    d = await gw.wait_delivery(delivery_id, status="succeeded")
    assert [a["number"] for a in d["attempts"]] == [1, 2, 3]
    assert [a["statusCode"] for a in d["attempts"]] == [500, 500, 200]


async def test_replay_redelivers_failed_events_once(make_gateway, make_settings, make_receiver) -> None:
    async def down_then_up(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=200 if state.get("up") else 500)

    gw = await make_gateway(make_settings(delivery={"retry_schedule": ["50ms"]}))
    await gw.create_tenant("acme")
    rx = await make_receiver(down_then_up)
    hook = await gw.create_hook(url=rx.url(), enabled=True)
    ids = [await first_delivery(await gw.forward(PUR, event(f"u{i}"))) for i in range(3)]
    for delivery_id in ids:
        await gw.wait_delivery(delivery_id, status="failed")
    rx.state["up"] = True
    url = f"/api/v2/hooks/{hook['id']}/replay"

    resp = await gw.client.post(
        url, json={"since": "2000-01-01T00:00:00Z", "status": ["failed"]}, headers=gw.auth()
    )

    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["count"] == 3
    for delivery_id in body["deliveries"]:
        await gw.wait_delivery(delivery_id, status="succeeded")
    assert sorted(r.json()["user"]["id"] for r in rx.requests[-3:]) == ["u0", "u1", "u2"]
    # Their latest delivery succeeded: replaying failed ones again finds nothing.
    again = await gw.client.post(
        url, json={"since": "2000-01-01T00:00:00Z", "status": "failed"}, headers=gw.auth()
    )
    assert (await again.json())["count"] == 0


async def test_replay_validates_its_body(gateway) -> None:
    hook = await gateway.create_hook(enabled=False)
    url = f"/api/v2/hooks/{hook['id']}/replay"
    for body in (
        {},
        {"since": "yesterday"},
        {"since": "2000-01-01T00:00:00Z", "status": ["lost"]},
        {"since": "2000-01-01T00:00:00Z", "extra": 1},
    ):
        resp = await gateway.client.post(url, json=body, headers=gateway.auth())
        assert resp.status == 400, body
    missing = await gateway.client.post(
        "/api/v2/hooks/hk_nope/replay", json={"since": "2000-01-01T00:00:00Z"}, headers=gateway.auth()
    )
    assert missing.status == 404


async def test_a_disabled_hooks_deliveries_wait_and_resume_when_enabled(
    make_gateway, make_settings, make_receiver
) -> None:
    gw = await make_gateway(make_settings(delivery={"retry_schedule": ["100ms"]}))
    await gw.create_tenant("acme")
    gate = Gate(status=500)
    rx = await make_receiver(gate)
    hook = await gw.create_hook(url=rx.url(), enabled=True)
    delivery_id = await first_delivery(await gw.forward(PUR, event()))
    await asyncio.wait_for(gate.arrived.wait(), 10)

    patched = await gw.client.patch(f"/api/v2/hooks/{hook['id']}", json={"enabled": False}, headers=gw.auth())
    assert patched.status == 200
    gate.release.set()  # the first attempt fails; its retry would be due 100 ms later
    await gw.wait_delivery(delivery_id, attempts=1)
    await asyncio.sleep(0.4)

    d = await gw.delivery(delivery_id)
    assert d["status"] == "pending"
    assert d["nextAttemptAt"] is None
    assert len(rx.requests) == 1

    gate.status = 200
    await gw.client.patch(f"/api/v2/hooks/{hook['id']}", json={"enabled": True}, headers=gw.auth())
    d = await gw.wait_delivery(delivery_id, status="succeeded")
    assert [a["statusCode"] for a in d["attempts"]] == [500, 200]


async def test_a_deleted_hooks_pending_deliveries_are_cancelled(
    make_gateway, make_settings, make_receiver
) -> None:
    gw = await make_gateway(make_settings(delivery={"retry_schedule": ["100ms"]}))
    await gw.create_tenant("acme")
    gate = Gate(status=500)
    rx = await make_receiver(gate)
    hook = await gw.create_hook(url=rx.url(), enabled=True, maxConcurrency=1)
    in_flight = await first_delivery(await gw.forward(PUR, event("u1")))
    queued = await first_delivery(await gw.forward(PUR, event("u2")))
    await asyncio.wait_for(gate.arrived.wait(), 10)

    deleted = await gw.client.delete(f"/api/v2/hooks/{hook['id']}", headers=gw.auth())
    assert deleted.status == 204
    gate.release.set()
    await gw.wait_delivery(in_flight, attempts=1)
    await asyncio.sleep(0.3)  # past the retry the failure would have scheduled

    for delivery_id in (in_flight, queued):
        d = await gw.delivery(delivery_id)
        assert d["status"] == "cancelled"
        assert d["lastError"] == "hook deleted"
    assert len(rx.requests) == 1
    retry = await gw.client.post(f"/api/v2/deliveries/{queued}/retry", headers=gw.auth())
    assert retry.status == 409


class Clock:
    """A wall clock that a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def test_finished_deliveries_and_their_events_are_purged_after_the_retention(
    make_gateway, make_settings, make_receiver
) -> None:
    async def gone(request: web.Request, received: Any, state: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=410)

    clock = Clock()
    settings = make_settings(delivery={"retention": "30d", "purge_interval": "50ms"})
    gw = await make_gateway(settings, clock=clock)
    await gw.create_tenant("acme")
    token = mint(settings, tenant="acme", scopes=SCOPES, ttl_s=60 * 86400)
    auth = {"Authorization": f"Bearer {token}"}
    rx, rx_gone = await make_receiver(), await make_receiver(gone)
    await gw.create_hook(name="live", url=rx.url(), enabled=True)
    await gw.create_hook(name="gone", url=rx_gone.url(), enabled=True)
    old = await (await gw.forward(PUR, event("old-user"))).json()
    old_done, old_parked = (d["deliveryId"] for d in old["deliveries"])
    await gw.wait_delivery(old_done, status="succeeded")
    await gw.wait_delivery(old_parked, attempts=1)  # 410: the hook is disabled, the delivery waits

    clock.offset = 20 * 86400
    resp = await gw.client.post(f"/v1/tenants/acme/triggers/{PUR}", json=event("new-user"), headers=auth)
    recent = await first_delivery(resp)
    clock.offset = 31 * 86400  # the first event is past the 30-day retention, the second is not

    async def status_of(delivery_id: str) -> int:
        return (await gw.client.get(f"/api/v2/deliveries/{delivery_id}", headers=auth)).status

    loop = asyncio.get_running_loop()
    end = loop.time() + 10
    while await status_of(old_done) != 404:
        assert loop.time() < end, "the purge did not run"
        await asyncio.sleep(0.02)
    assert await status_of(recent) == 200
    assert await status_of(old_parked) == 200  # pending deliveries are kept, however old
    attempts = {d for (d,) in backends.db_rows(settings.database.url, "SELECT delivery_id FROM attempts")}
    events = [body for (body,) in backends.db_rows(settings.database.url, "SELECT body FROM events")]
    assert old_done not in attempts
    assert old_parked in attempts
    assert len(events) == 2  # the old event stays while a delivery of it is pending
