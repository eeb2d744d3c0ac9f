"""Network policy, end to end on loopback: the egress guard at delivery time (async, blocking
and the test runner), redirects, the injected resolver, outbound source address, response
limits, and who may call the gateway (ingest allowlist, trusted proxies, tenant allowlist).

Loopback is the only network these tests touch. To see the guard refuse a destination, the
gateway is started with loopback *not* in `[egress] allow_cidrs`, and a real receiver on
127.0.0.1 shows that nothing reached it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import Gateway, Received, Receiver
from fakes import FakeResolver

from gateway import points
from gateway.egress import MAX_STORED_BODY_BYTES, MAX_SYNC_BODY_BYTES
from gateway.settings import Settings

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeReceiver = Callable[..., Awaitable[Receiver]]
MakeSettings = Callable[..., Settings]

LOOPBACK_REFUSED = "destination refused: 127.0.0.1 (127.0.0.0/8)"
NO_LOOPBACK = {"allow_cidrs": []}  # allow_http stays true: only the address is refused
ASYNC_POINT = points.POST_USER_REGISTRATION
BLOCKING_POINT = points.CREDENTIALS_EXCHANGE


async def gateway_with(make_gateway: MakeGateway, settings: Settings, **seams: Any) -> Gateway:
    gw = await make_gateway(settings, **seams)
    await gw.create_tenant("acme")
    return gw


async def point_hook_at_literal(gw: Gateway, hook_id: str, url: str) -> None:
    """Store a URL the API would refuse (a literal refused address), as an older config might."""
    await gw.svc.store.update_hook("acme", hook_id, {"url": url}, gw.svc.clock())
    gw.svc.registry.invalidate("acme")


async def forward_async(gw: Gateway) -> str:
    resp = await gw.forward(ASYNC_POINT, points.sample_event(ASYNC_POINT))
    assert resp.status == 202, await resp.text()
    (delivery,) = (await resp.json())["deliveries"]
    return str(delivery["deliveryId"])


async def sync_deliveries(gw: Gateway, hook_id: str) -> list[dict[str, Any]]:
    """The records of blocking invocations of a hook, with their attempts."""
    await gw.invoker.drain()
    resp = await gw.client.get(f"/api/v2/deliveries?hookId={hook_id}", headers=gw.auth())
    assert resp.status == 200, await resp.text()
    return [await gw.delivery(d["id"]) for d in await resp.json()]


# --- the egress guard at delivery time ----------------------------------------------------


async def test_async_delivery_to_refused_loopback_literal_never_reaches_the_receiver(
    make_gateway: MakeGateway, make_settings: MakeSettings, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver()
    gw = await gateway_with(make_gateway, make_settings(egress=NO_LOOPBACK))
    hook = await gw.create_hook(url=receiver.url().replace("127.0.0.1", "localhost"), enabled=True)
    await point_hook_at_literal(gw, hook["id"], receiver.url())

    delivery = await gw.wait_delivery(await forward_async(gw), attempts=1)

    assert receiver.requests == []
    (attempt,) = delivery["attempts"]
    assert LOOPBACK_REFUSED in attempt["error"]
    assert attempt["statusCode"] is None
    assert delivery["status"] == "pending"  # a failed attempt: the retry schedule goes on
    assert LOOPBACK_REFUSED in delivery["lastError"]


async def test_async_delivery_to_localhost_is_refused_after_resolving_it(
    make_gateway: MakeGateway, make_settings: MakeSettings, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver()
    gw = await gateway_with(make_gateway, make_settings(egress=NO_LOOPBACK))
    # A hostname passes the static check at creation; the guard refuses what it resolves to.
    hook = await gw.create_hook(url=receiver.url().replace("127.0.0.1", "localhost"), enabled=True)

    delivery = await gw.wait_delivery(await forward_async(gw), attempts=1)

    assert receiver.requests == []
    error = delivery["attempts"][0]["error"]
    assert error in (LOOPBACK_REFUSED, "destination refused: ::1 (::1/128)"), error
    assert delivery["hookId"] == hook["id"]


async def test_blocking_point_to_refused_loopback_answers_server_error_naming_the_hook(
    make_gateway: MakeGateway, make_settings: MakeSettings, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver()
    gw = await gateway_with(make_gateway, make_settings(egress=NO_LOOPBACK))
    hook = await gw.create_hook(
        name="scopes",
        triggerId=BLOCKING_POINT,
        enabled=True,
        url=receiver.url().replace("127.0.0.1", "localhost"),
    )
    await point_hook_at_literal(gw, hook["id"], receiver.url())

    resp = await gw.forward(BLOCKING_POINT, points.sample_event(BLOCKING_POINT))

    assert resp.status == 200
    answer = await resp.json()
    assert answer["status"] == "error"
    assert answer["data"]["name"] == "ServerError"
    assert "'scopes'" in answer["data"]["message"]
    assert LOOPBACK_REFUSED in answer["data"]["message"]
    assert receiver.requests == []
    (record,) = await sync_deliveries(gw, hook["id"])
    assert record["kind"] == "sync" and record["status"] == "failed"
    assert [LOOPBACK_REFUSED in a["error"] for a in record["attempts"]] == [True]  # not retried


async def test_test_runner_to_refused_loopback_reports_the_refusal(
    make_gateway: MakeGateway, make_settings: MakeSettings, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver()
    gw = await gateway_with(make_gateway, make_settings(egress=NO_LOOPBACK))
    hook = await gw.create_hook(url=receiver.url().replace("127.0.0.1", "localhost"))
    await point_hook_at_literal(gw, hook["id"], receiver.url())

    resp = await gw.client.post(f"/api/v2/hooks/{hook['id']}/test", headers=gw.auth())

    assert resp.status == 200, await resp.text()
    result = await resp.json()
    assert LOOPBACK_REFUSED in result["error"]
    assert result["statusCode"] is None and result["answer"] is None
    assert receiver.requests == []


async def test_api_refuses_a_literal_refused_address_at_creation(
    make_gateway: MakeGateway, make_settings: MakeSettings, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver()
    gw = await gateway_with(make_gateway, make_settings(egress=NO_LOOPBACK))
    body = {"name": "hook", "triggerId": ASYNC_POINT, "url": receiver.url()}

    resp = await gw.client.post("/api/v2/hooks", json=body, headers=gw.auth())

    assert resp.status == 400
    assert LOOPBACK_REFUSED in (await resp.json())["message"]


async def test_redirect_is_recorded_and_not_followed(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    second = await make_receiver()

    async def redirect(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": second.url("/elsewhere")})

    first = await make_receiver(redirect)
    await gateway.create_hook(url=first.url(), enabled=True)

    delivery = await gateway.wait_delivery(await forward_async(gateway), attempts=1)

    assert len(first.requests) == 1
    assert second.requests == []
    attempt = delivery["attempts"][0]
    assert attempt["statusCode"] == 302
    assert "302" in attempt["error"] and "redirects are not followed" in attempt["error"]


async def test_injected_resolver_answer_is_checked_before_any_connect(
    make_gateway: MakeGateway, make_settings: MakeSettings, netguard_attempts: list[tuple[str, int]]
) -> None:
    resolver = FakeResolver({"metadata.example": ["169.254.169.254"]})
    gw = await gateway_with(make_gateway, make_settings(egress=NO_LOOPBACK), resolver=resolver)
    await gw.create_hook(url="https://metadata.example/latest/meta-data", enabled=True)

    delivery = await gw.wait_delivery(await forward_async(gw), attempts=1)

    assert "destination refused: 169.254.169.254 (169.254.0.0/16)" in delivery["attempts"][0]["error"]
    assert resolver.asked == ["metadata.example"]
    assert netguard_attempts == []  # no connection was even tried


async def test_injected_resolver_directs_an_allowed_name_to_the_checked_address(
    make_gateway: MakeGateway, make_settings: MakeSettings, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver()
    resolver = FakeResolver({"hooks.example": ["127.0.0.1"]})
    gw = await gateway_with(make_gateway, make_settings(), resolver=resolver)
    port = receiver.server.port
    await gw.create_hook(url=f"http://hooks.example:{port}/hook", enabled=True)

    delivery = await gw.wait_delivery(await forward_async(gw), status="succeeded")

    (request,) = receiver.requests
    assert request.headers["Host"] == f"hooks.example:{port}"
    assert delivery["attempts"][0]["statusCode"] == 200


@pytest.mark.parametrize(
    "source",
    [
        "127.0.0.1",
        pytest.param(
            "127.0.0.2",
            marks=pytest.mark.skipif(sys.platform != "linux", reason="only Linux routes all of 127/8"),
        ),
    ],
)
async def test_outbound_connections_use_the_configured_source_address(
    make_gateway: MakeGateway, make_settings: MakeSettings, make_receiver: MakeReceiver, source: str
) -> None:
    receiver = await make_receiver()
    gw = await gateway_with(make_gateway, make_settings(egress={"source_address": source}))
    await gw.create_hook(url=receiver.url(), enabled=True)
    await gw.create_hook(name="blocking", triggerId=BLOCKING_POINT, url=receiver.url(), enabled=True)

    await gw.wait_delivery(await forward_async(gw), status="succeeded")
    resp = await gw.forward(BLOCKING_POINT, points.sample_event(BLOCKING_POINT))

    assert (await resp.json())["status"] == "success"
    assert [r.remote for r in receiver.requests] == [source, source]


# --- response limits and timeouts ---------------------------------------------------------


async def test_blocking_answer_over_256_kib_fails_the_attempt_and_stores_4_kib(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    big = b'{"status":"success","data":{"scope":["x"],"pad":"' + b"a" * MAX_SYNC_BODY_BYTES + b'"}}'

    async def huge(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        return web.Response(body=big, content_type="application/json")

    receiver = await make_receiver(huge)
    hook = await gateway.create_hook(name="big", triggerId=BLOCKING_POINT, url=receiver.url(), enabled=True)

    resp = await gateway.forward(BLOCKING_POINT, points.sample_event(BLOCKING_POINT))

    answer = await resp.json()
    assert answer["status"] == "error" and answer["data"]["name"] == "ServerError"
    assert f"answer larger than {MAX_SYNC_BODY_BYTES} bytes" in answer["data"]["message"]
    (record,) = await sync_deliveries(gateway, hook["id"])
    (attempt,) = record["attempts"]
    assert attempt["statusCode"] == 200
    assert attempt["responseBody"] == big[:MAX_STORED_BODY_BYTES].decode()


async def test_blocking_answer_just_under_the_cap_is_used(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    # "pad" is not a namespaced claim: dropped from the answer, but it counts towards the cap.
    prefix, suffix = b'{"status":"success","data":{"scope":["x"],"pad":"', b'"}}'
    body = prefix + b"a" * (MAX_SYNC_BODY_BYTES - len(prefix) - len(suffix)) + suffix
    assert len(body) == MAX_SYNC_BODY_BYTES

    async def at_cap(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    receiver = await make_receiver(at_cap)
    await gateway.create_hook(name="big", triggerId=BLOCKING_POINT, url=receiver.url(), enabled=True)

    resp = await gateway.forward(BLOCKING_POINT, points.sample_event(BLOCKING_POINT))

    answer = await resp.json()
    assert answer["status"] == "success", answer
    assert answer["data"] == {"scope": ["x"]}


async def test_async_answer_longer_than_4_kib_is_delivered_and_stored_truncated(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    page = b'{"status":"success","data":{"log":"' + b"x" * (3 * MAX_STORED_BODY_BYTES) + b'"}}'

    async def chatty(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        return web.Response(body=page, content_type="application/json")

    receiver = await make_receiver(chatty)
    await gateway.create_hook(url=receiver.url(), enabled=True)

    delivery = await gateway.wait_delivery(await forward_async(gateway), attempts=1)

    assert delivery["status"] == "succeeded", delivery
    (attempt,) = delivery["attempts"]
    assert attempt["error"] is None
    assert attempt["responseBody"] == page[:MAX_STORED_BODY_BYTES].decode()


async def test_an_answer_header_over_the_cap_fails_the_attempt(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    async def huge_header(request: web.Request, received: Received, state: dict[str, Any]) -> web.Response:
        return web.json_response({"status": "success", "data": {}}, headers={"X-Padding": "p" * 20_000})

    receiver = await make_receiver(huge_header)
    await gateway.create_hook(url=receiver.url(), enabled=True)

    delivery = await gateway.wait_delivery(await forward_async(gateway), attempts=1)

    assert delivery["status"] == "pending"  # failed once, retried by the schedule
    (attempt,) = delivery["attempts"]
    assert attempt["statusCode"] is None
    assert attempt["error"].startswith("connection failed")
    assert "8190" in attempt["error"]


async def test_receiver_slower_than_the_hook_timeout_fails_the_attempt(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    release = asyncio.Event()

    async def hang(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        await asyncio.wait_for(release.wait(), timeout=10)
        return web.json_response({})

    receiver = await make_receiver(hang)
    hook = await gateway.create_hook(
        name="slow",
        triggerId=BLOCKING_POINT,
        url=receiver.url(),
        enabled=True,
        timeoutMs=100,
        failurePolicy="skip",
    )
    try:
        resp = await gateway.forward(BLOCKING_POINT, points.sample_event(BLOCKING_POINT))
        answer = await resp.json()
    finally:
        release.set()
    assert answer["status"] == "success"  # the hook was skipped after its timeout
    (record,) = await sync_deliveries(gateway, hook["id"])
    assert [a["error"] for a in record["attempts"]] == ["timed out after 0.1s"]
    assert len(receiver.requests) == 1


async def test_connect_timeout_is_applied_before_the_hook_timeout(
    make_gateway: MakeGateway, make_settings: MakeSettings, unaccepted_port: int
) -> None:
    gw = await gateway_with(make_gateway, make_settings(egress={"connect_timeout": "200ms"}))
    hook = await gw.create_hook(
        name="unreachable",
        triggerId=BLOCKING_POINT,
        timeoutMs=10_000,
        url=f"http://127.0.0.1:{unaccepted_port}/hook",
    )
    await gw.client.patch(f"/api/v2/hooks/{hook['id']}", json={"enabled": True}, headers=gw.auth())

    resp = await gw.forward(BLOCKING_POINT, points.sample_event(BLOCKING_POINT))

    answer = await resp.json()
    assert answer["data"]["name"] == "ServerError"
    assert "timed out connecting after 0.2s" in answer["data"]["message"]


# --- who may call the gateway -------------------------------------------------------------

BEHIND_PROXY = {"allowed_cidrs": ["10.9.9.0/24"], "trusted_proxies": ["127.0.0.1/32"]}


async def forward_from(gw: Gateway, forwarded_for: str | None) -> aiohttp.ClientResponse:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    return await gw.forward(ASYNC_POINT, points.sample_event(ASYNC_POINT), headers=headers)


@pytest.mark.parametrize(
    ("forwarded_for", "status"),
    [
        ("10.9.9.7", 202),
        ("203.0.113.5", 403),
        ("10.9.9.7, 203.0.113.5", 403),  # a spoofed left entry: the right-most untrusted counts
        ("203.0.113.5, 10.9.9.7", 202),  # the client's claim is left of what the proxy saw
        ("10.9.9.7, 127.0.0.1", 202),  # a chain of trusted proxies is walked through
        (None, 403),  # the proxy itself is not an allowed caller
        ("not-an-address", 403),
    ],
)
async def test_ingest_behind_a_trusted_proxy_checks_the_forwarded_address(
    make_gateway: MakeGateway, make_settings: MakeSettings, forwarded_for: str | None, status: int
) -> None:
    gw = await gateway_with(make_gateway, make_settings(ingest=BEHIND_PROXY))

    resp = await forward_from(gw, forwarded_for)

    assert resp.status == status, await resp.text()
    if status == 403:
        body = await resp.json()
        assert body["statusCode"] == 403 and body["error"] == "Forbidden"
        assert "not allowed" in body["message"]


async def test_ingest_ignores_forwarded_for_without_trusted_proxies(
    make_gateway: MakeGateway, make_settings: MakeSettings
) -> None:
    allowed_only_remote = await gateway_with(
        make_gateway, make_settings(ingest={"allowed_cidrs": ["10.9.9.0/24"]})
    )
    assert (await forward_from(allowed_only_remote, "10.9.9.7")).status == 403


async def test_ingest_from_an_allowed_socket_ignores_a_forwarded_for_claim(
    make_gateway: MakeGateway, make_settings: MakeSettings
) -> None:
    gw = await gateway_with(make_gateway, make_settings())  # allowed: 127.0.0.1/32, ::1/128

    assert (await forward_from(gw, "203.0.113.5")).status == 202


async def test_ingest_403_comes_before_authentication(
    make_gateway: MakeGateway, make_settings: MakeSettings
) -> None:
    gw = await gateway_with(make_gateway, make_settings(ingest=BEHIND_PROXY))
    url = f"/v1/tenants/acme/triggers/{ASYNC_POINT}"

    refused = await gw.client.post(url, json={}, headers={"X-Forwarded-For": "203.0.113.5"})
    unauthenticated = await gw.client.post(url, json={}, headers={"X-Forwarded-For": "10.9.9.7"})

    assert refused.status == 403
    assert unauthenticated.status == 401


async def set_tenant_cidrs(gw: Gateway, tenant: str, cidrs: list[str]) -> None:
    resp = await gw.client.patch(
        f"/api/v2/tenants/{tenant}",
        json={"allowedCidrs": cidrs},
        headers={"Authorization": f"Bearer {gw.operator_token()}"},
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["allowedCidrs"] == cidrs


async def list_hooks_from(
    gw: Gateway, forwarded_for: str | None, tenant: str = "acme"
) -> aiohttp.ClientResponse:
    headers = gw.auth(tenant)
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    return await gw.client.get("/api/v2/hooks", headers=headers)


async def test_tenant_allowlist_restricts_its_management_api(
    make_gateway: MakeGateway, make_settings: MakeSettings
) -> None:
    gw = await gateway_with(make_gateway, make_settings(ingest=BEHIND_PROXY))
    await gw.create_tenant("globex")
    assert (await list_hooks_from(gw, "203.0.113.5")).status == 200  # no allowlist yet

    await set_tenant_cidrs(gw, "acme", ["10.9.9.0/24"])

    refused = await list_hooks_from(gw, "203.0.113.5")
    assert refused.status == 403
    body = await refused.json()
    assert body["error"] == "Forbidden" and "acme" in body["message"]
    assert "X-RateLimit-Limit" in refused.headers
    assert (await list_hooks_from(gw, None)).status == 403  # the proxy's own address is not allowed
    assert (await list_hooks_from(gw, "10.9.9.7, 203.0.113.5")).status == 403
    assert (await list_hooks_from(gw, "10.9.9.7")).status == 200
    assert (
        await list_hooks_from(gw, "203.0.113.5", tenant="globex")
    ).status == 200  # other tenants unaffected


async def test_tenant_allowlist_cleared_opens_the_api_again(
    make_gateway: MakeGateway, make_settings: MakeSettings
) -> None:
    gw = await gateway_with(make_gateway, make_settings(ingest=BEHIND_PROXY))
    await set_tenant_cidrs(gw, "acme", ["10.9.9.0/24"])
    assert (await list_hooks_from(gw, "203.0.113.5")).status == 403

    await set_tenant_cidrs(gw, "acme", [])

    assert (await list_hooks_from(gw, "203.0.113.5")).status == 200


async def test_tenant_allowlist_does_not_restrict_ingest(
    make_gateway: MakeGateway, make_settings: MakeSettings
) -> None:
    # Ingest is the auth server's API, guarded by [ingest] allowed_cidrs, not the tenant's list.
    gw = await gateway_with(make_gateway, make_settings(ingest=BEHIND_PROXY))
    await set_tenant_cidrs(gw, "acme", ["192.0.2.0/24"])

    resp = await gw.forward(
        ASYNC_POINT, points.sample_event(ASYNC_POINT), headers={"X-Forwarded-For": "10.9.9.7"}
    )

    assert resp.status == 202


async def test_invalid_tenant_cidr_is_400(gateway: Gateway) -> None:
    resp = await gateway.client.patch(
        "/api/v2/tenants/acme",
        json={"allowedCidrs": ["10.9.9.0/33"]},
        headers={"Authorization": f"Bearer {gateway.operator_token()}"},
    )
    assert resp.status == 400
    assert "allowedCidrs" in (await resp.json())["message"]
