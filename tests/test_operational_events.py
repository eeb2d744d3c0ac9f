"""Operational events (issue 14): each type arrives at a real loopback endpoint, the operator's
from `[events]` and a tenant's own from `PUT /api/v2/operational-events`, as `{type, timestamp,
data}` signed with Standard Webhooks (verified with the `standardwebhooks` library), durably."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from ops_events_endpoint import events_of, operator_settings, verified

from gateway.errors import ConfigError
from gateway.signing import new_signing_secret

PUR = "post-user-registration"
EVENT = {"user": {"id": "u1", "email": "a@example.com"}, "context": {"connection": {"id": "c", "name": "db"}}}
FAST = {"retry_schedule": ["50ms"] * 5, "poll_interval": "50ms", "jitter": 0.0}


async def _setup(make_gateway, make_settings, make_receiver, responder, *, events=None, ops_responder=None):
    ops_rx = await make_receiver(ops_responder) if ops_responder else await make_receiver()
    secret = new_signing_secret()
    events = operator_settings(ops_rx.url("/ops"), secret, **(events or {}))
    settings = make_settings(delivery=FAST, events=events)
    gw = await make_gateway(settings)
    await gw.create_tenant("acme")
    rx = await make_receiver(responder)
    hook = await gw.create_hook(url=rx.url(), enabled=True)
    await gw.add_secrets(hook["id"], {"auth0-extension-secret": "hook-secret-value-1"})
    return gw, rx, ops_rx, secret, hook


async def _forward(gw: Any) -> tuple[str, str]:
    resp = await gw.forward(PUR, EVENT)
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    return body["eventId"], body["deliveries"][0]["deliveryId"]


def _no_secret_in(event: dict[str, Any], *values: str) -> None:
    text = json.dumps(event)
    for value in values:
        assert value not in text


async def test_a_failing_delivery_is_reported_failing_then_exhausted(
    make_gateway, make_settings, make_receiver
) -> None:
    async def broken(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        return web.json_response({"error": "down"}, status=500)

    gw, rx, ops_rx, secret, hook = await _setup(make_gateway, make_settings, make_receiver, broken)
    event_id, delivery_id = await _forward(gw)

    (failing,) = await events_of(ops_rx, "delivery.failing", secret=secret)
    (exhausted,) = await events_of(ops_rx, "delivery.exhausted", secret=secret)

    ids = {"tenant": "acme", "hookId": hook["id"], "deliveryId": delivery_id, "eventId": event_id,
           "triggerId": PUR}
    assert failing["data"] == {**ids, "attemptCount": 4, "lastError": "receiver answered HTTP 500",
                               "nextAttemptAt": failing["data"]["nextAttemptAt"]}
    assert failing["data"]["nextAttemptAt"] is not None
    assert exhausted["data"] == {**ids, "attemptCount": 6, "lastError": "receiver answered HTTP 500"}
    assert exhausted["timestamp"].endswith("Z")
    await gw.wait_delivery(delivery_id, status="failed")  # the event is stored before the outcome
    for e in (failing, exhausted):
        _no_secret_in(e, "hook-secret-value-1", rx.url(), secret)
    # The failing report came once, after the fourth attempt: not again for the fifth or sixth.
    assert len(await events_of(ops_rx, "delivery.failing", secret=secret)) == 1


async def test_a_delivery_reported_failing_that_then_succeeds_is_reported_recovered(
    make_gateway, make_settings, make_receiver
) -> None:
    async def flaky(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        state["n"] = state.get("n", 0) + 1
        if state["n"] <= 4:
            return web.json_response({}, status=503)
        return web.json_response({"status": "success", "data": {}})

    gw, rx, ops_rx, secret, hook = await _setup(make_gateway, make_settings, make_receiver, flaky)
    _, delivery_id = await _forward(gw)

    (recovered,) = await events_of(ops_rx, "delivery.recovered", secret=secret)

    assert recovered["data"]["deliveryId"] == delivery_id
    assert recovered["data"]["attemptCount"] == 5
    kinds = sorted(json.loads(r.body)["type"] for r in ops_rx.requests)
    assert kinds == ["delivery.failing", "delivery.recovered"]  # each once
    await gw.wait_delivery(delivery_id, status="succeeded")


async def test_a_delivery_that_succeeds_before_it_was_reported_failing_is_not_reported(
    make_gateway, make_settings, make_receiver
) -> None:
    async def flaky(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        state["n"] = state.get("n", 0) + 1
        return web.json_response({}, status=503 if state["n"] <= 2 else 200)

    gw, _rx, ops_rx, secret, _hook = await _setup(
        make_gateway, make_settings, make_receiver, flaky, events={"failing_after": 3}
    )
    _, delivery_id = await _forward(gw)
    await gw.wait_delivery(delivery_id, status="succeeded")
    # Then a hook answering 410: its `hook.disabled` is stored after anything the first made.
    gone = await make_receiver(_gone)
    await gw.create_hook(name="gone", url=gone.url(), enabled=True)
    await _forward(gw)
    await events_of(ops_rx, "hook.disabled", secret=secret)

    assert [json.loads(r.body)["type"] for r in ops_rx.requests] == ["hook.disabled"]


async def _gone(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
    return web.Response(status=410)


async def test_a_410_disables_the_hook_as_before_and_reports_hook_disabled(
    make_gateway, make_settings, make_receiver
) -> None:
    gw, _rx, ops_rx, secret, hook = await _setup(make_gateway, make_settings, make_receiver, _gone)
    _, delivery_id = await _forward(gw)

    (disabled,) = await events_of(ops_rx, "hook.disabled", secret=secret)

    after = await (await gw.client.get(f"/api/v2/hooks/{hook['id']}", headers=gw.auth())).json()
    assert after["enabled"] is False
    assert after["disabledReason"].startswith("receiver answered 410 Gone")
    assert disabled["data"] == {"tenant": "acme", "hookId": hook["id"], "triggerId": PUR,
                                "reason": after["disabledReason"]}
    d = await gw.wait_delivery(delivery_id, attempts=1)
    assert (d["status"], d["nextAttemptAt"]) == ("pending", None)  # parked until enabled, as before


async def test_a_rate_limited_destination_is_reported_paused_then_resumed(
    make_gateway, make_settings, make_receiver
) -> None:
    async def slow_down(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        return web.json_response({"status": "success", "data": {}},
                                 headers={"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0",
                                          "X-RateLimit-Reset": "1"})

    gw, rx, ops_rx, secret, hook = await _setup(make_gateway, make_settings, make_receiver, slow_down)
    _, delivery_id = await _forward(gw)

    (paused,) = await events_of(ops_rx, "destination.paused", secret=secret)
    (resumed,) = await events_of(ops_rx, "destination.resumed", secret=secret)

    destination = f"http://127.0.0.1:{rx.server.port}"
    assert paused["data"]["destination"] == destination
    assert paused["data"]["hookId"] == hook["id"]
    assert paused["data"]["until"].endswith("Z")
    assert resumed["data"] == {"tenant": "acme", "destination": destination}
    await gw.wait_delivery(delivery_id, status="succeeded")
    _no_secret_in(paused, rx.url(), "hook-secret-value-1")


async def test_a_tenant_endpoint_gets_its_tenants_events_signed_with_its_own_secret(
    make_gateway, make_settings, make_receiver
) -> None:
    gw, _rx, ops_rx, operator_secret, hook = await _setup(make_gateway, make_settings, make_receiver, _gone)
    await gw.create_tenant("globex")
    tenant_rx = await make_receiver()
    missing = await gw.client.get("/api/v2/operational-events", headers=gw.auth())
    assert missing.status == 404
    put = await gw.client.put("/api/v2/operational-events", json={"url": tenant_rx.url("/events")},
                              headers=gw.auth())
    assert put.status == 201, await put.text()
    assert (await put.json())["url"] == tenant_rx.url("/events")
    shown = await (await gw.client.get("/api/v2/operational-events", headers=gw.auth())).json()
    assert shown["enabled"] is True and "delivery.failing" in shown["types"]
    tenant_secret = (await (await gw.client.get("/api/v2/operational-events/signing-secret",
                                                headers=gw.auth())).json())["secret"]
    assert tenant_secret.startswith("whsec_") and tenant_secret != operator_secret
    globex_rx = await make_receiver(_gone)
    globex_hook = await gw.create_hook(tenant="globex", url=globex_rx.url(), enabled=True)

    assert (await gw.forward(PUR, EVENT, tenant="globex")).status == 202
    (globex_disabled,) = await events_of(ops_rx, "hook.disabled", secret=operator_secret)
    await _forward(gw)

    (to_tenant,) = await events_of(tenant_rx, "hook.disabled", secret=tenant_secret)
    to_operator = await events_of(ops_rx, "hook.disabled", secret=operator_secret, count=2)
    assert globex_disabled["data"]["hookId"] == globex_hook["id"]
    assert to_tenant["data"]["hookId"] == hook["id"] and to_tenant["data"]["tenant"] == "acme"
    assert to_tenant["data"] == to_operator[1]["data"]
    assert len(tenant_rx.requests) == 1  # globex's event went to the operator only
    (request,) = tenant_rx.requests
    assert verified(tenant_secret, request.body, request.headers) == to_tenant


async def test_a_tenant_endpoint_passes_the_egress_rules_and_takes_only_a_url(
    make_gateway, make_settings
) -> None:
    gw = await make_gateway(make_settings())
    await gw.create_tenant("acme")

    for body in ({"url": "http://169.254.169.254/latest"}, {"url": "ftp://example.com/"}, {},
                 {"url": "https://example.com/", "extra": 1}, {"url": 5}):
        resp = await gw.client.put("/api/v2/operational-events", json=body, headers=gw.auth())
        assert resp.status == 400, body
        assert set(await resp.json()) == {"statusCode", "error", "message"}
    assert (await gw.client.delete("/api/v2/operational-events", headers=gw.auth())).status == 404
    assert (await gw.client.get("/api/v2/operational-events/signing-secret", headers=gw.auth())).status == 404


async def test_an_event_the_endpoint_did_not_take_is_sent_again_and_makes_no_event_itself(
    make_gateway, make_settings, make_receiver
) -> None:
    async def refuses_first(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        state["n"] = state.get("n", 0) + 1
        return web.json_response({}, status=500 if state["n"] == 1 else 200)

    gw, _rx, ops_rx, secret, hook = await _setup(
        make_gateway, make_settings, make_receiver, _gone, events={"failing_after": 1},
        ops_responder=refuses_first,
    )
    await _forward(gw)

    await ops_rx.wait_for(2)
    first, second = ops_rx.requests[:2]
    assert first.headers["webhook-id"] == second.headers["webhook-id"]  # one delivery, attempted twice
    assert verified(secret, second.body, second.headers)["type"] == "hook.disabled"
    # The events endpoint's failure (an attempt that failed, with failing_after = 1) made no
    # `delivery.failing` of its own: every event is about the tenant's hook.
    await events_of(ops_rx, "hook.disabled", secret=secret, count=2)
    assert all(json.loads(r.body)["data"]["hookId"] == hook["id"] for r in ops_rx.requests)


async def test_deleting_a_tenant_removes_its_endpoint(make_gateway, make_settings, make_receiver) -> None:
    gw = await make_gateway(make_settings())
    await gw.create_tenant("acme")
    tenant_rx = await make_receiver()
    put = await gw.client.put("/api/v2/operational-events", json={"url": tenant_rx.url()}, headers=gw.auth())
    assert put.status == 201
    ops_auth = {"Authorization": f"Bearer {gw.token('_ops')}"}  # the gateway's own tenant
    assert [h["id"] for h in await (await gw.client.get("/api/v2/hooks", headers=ops_auth)).json()] == [
        "ops-tenant-acme"]

    deleted = await gw.client.delete("/api/v2/tenants/acme",
                                     headers={"Authorization": f"Bearer {gw.operator_token()}"})

    assert deleted.status == 204
    assert await (await gw.client.get("/api/v2/hooks", headers=ops_auth)).json() == []


def test_an_operator_url_needs_a_whsec_secret(make_settings) -> None:
    with pytest.raises(ConfigError, match="operator_secret"):
        make_settings(events={"operator_url": "https://ops.example.com/"})
    with pytest.raises(ConfigError, match="operator_secret"):
        make_settings(events={"operator_url": "https://ops.example.com/", "operator_secret": "hunter2"})
    with pytest.raises(ConfigError, match="failing_after"):
        make_settings(events={"failing_after": 0})
    assert make_settings().events.failing_after == 4
    assert make_settings().delivery.disable_after == 5 * 86400
