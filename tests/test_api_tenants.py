"""`/api/v2/tenants` for operators, and tenant isolation: what is not yours is 404."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import Gateway, Receiver

from gateway.auth import SCOPE_ADMIN

MakeReceiver = Callable[..., Awaitable[Receiver]]


def operator(gw: Gateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {gw.operator_token()}"}


async def tenants_call(
    gw: Gateway, method: str, path: str = "", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    resp = await gw.client.request(
        method, f"/api/v2/tenants{path}", headers=headers or operator(gw), **kwargs
    )
    return resp.status, (await resp.json() if resp.status != 204 else None)


# -- operators manage tenants -------------------------------------------------------------


async def test_operator_creates_a_tenant(make_gateway: Callable[..., Awaitable[Gateway]]) -> None:
    gw = await make_gateway()
    status, tenant = await tenants_call(gw, "POST", body={"id": "acme", "name": "Acme"})
    assert status == 201
    assert tenant["id"] == "acme" and tenant["name"] == "Acme"
    assert tenant["allowedCidrs"] == []
    assert tenant["createdAt"].endswith("Z")


async def test_a_tenant_name_defaults_to_its_id(make_gateway: Callable[..., Awaitable[Gateway]]) -> None:
    gw = await make_gateway()
    _, tenant = await tenants_call(gw, "POST", body={"id": "initech"})
    assert tenant["name"] == "initech"


async def test_a_duplicate_tenant_id_is_409(gateway: Gateway) -> None:
    status, body = await tenants_call(gateway, "POST", body={"id": "acme"})
    assert status == 409
    assert body["statusCode"] == 409 and "acme" in body["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"id": "Acme"},
        {"id": "-acme"},
        {"id": "a" * 64},
        {"id": "ac_me"},
        {"id": ""},
        {"id": 7},
        {"name": "no id"},
        {"id": "ok", "colour": "red"},
        {"id": "ok", "allowedCidrs": ["nope"]},
        {"id": "ok", "allowedCidrs": "10.0.0.0/8"},
        {"id": "ok", "deadlines": {"post-user-registration": 100}},
        {"id": "ok", "deadlines": {"credentials-exchange": 10}},
        {"id": "ok", "maxInFlight": 0},
    ],
)
async def test_a_bad_tenant_body_is_400(make_gateway: Callable[..., Awaitable[Gateway]], body: Any) -> None:
    gw = await make_gateway()
    status, answer = await tenants_call(gw, "POST", body=body)
    assert status == 400
    assert answer["statusCode"] == 400
    _, listed = await tenants_call(gw, "GET")
    assert listed == []


async def test_ids_up_to_63_characters_are_accepted(make_gateway: Callable[..., Awaitable[Gateway]]) -> None:
    gw = await make_gateway()
    for tenant_id in ("a", "0-x", "a" * 63):
        status, _ = await tenants_call(gw, "POST", body={"id": tenant_id})
        assert status == 201


async def test_operator_gets_lists_updates_and_deletes_tenants(gateway: Gateway) -> None:
    await gateway.create_tenant("globex", name="Globex")
    status, got = await tenants_call(gateway, "GET", "/globex")
    assert status == 200 and got["name"] == "Globex"
    status, listed = await tenants_call(gateway, "GET")
    assert status == 200 and sorted(t["id"] for t in listed) == ["acme", "globex"]
    _, page = await tenants_call(gateway, "GET", "?per_page=1&page=1&include_totals=true")
    assert (page["start"], page["limit"], page["total"], len(page["tenants"])) == (1, 1, 2, 1)
    status, updated = await tenants_call(
        gateway,
        "PATCH",
        "/globex",
        {
            "name": "Globex Corp",
            "allowedCidrs": ["127.0.0.0/8"],
            "deadlines": {"credentials-exchange": 5000},
            "maxInFlight": 10,
        },
    )
    assert status == 200
    assert updated["name"] == "Globex Corp"
    assert updated["allowedCidrs"] == ["127.0.0.0/8"]
    assert updated["deadlines"] == {"credentials-exchange": 5000}
    assert updated["maxInFlight"] == 10
    status, body = await tenants_call(gateway, "PATCH", "/globex", {"id": "other"})
    assert status == 400
    status, _ = await tenants_call(gateway, "DELETE", "/globex")
    assert status == 204
    status, body = await tenants_call(gateway, "GET", "/globex")
    assert status == 404 and body["statusCode"] == 404
    for method, body in (("PATCH", {"name": "x"}), ("DELETE", None)):
        status, _ = await tenants_call(gateway, method, "/globex", body)
        assert status == 404


async def test_deleting_a_tenant_deletes_its_hooks_and_refuses_its_tokens(gateway: Gateway) -> None:
    hook = await gateway.create_hook()
    status, _ = await tenants_call(gateway, "DELETE", "/acme")
    assert status == 204
    resp = await gateway.client.get(f"/api/v2/hooks/{hook['id']}", headers=gateway.auth())
    assert resp.status == 401
    await gateway.create_tenant("acme")
    resp = await gateway.client.get("/api/v2/hooks", headers=gateway.auth())
    assert await resp.json() == []


async def test_a_tenant_created_again_with_the_same_id_sees_none_of_the_old_deliveries(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    rx = await make_receiver()
    await gateway.create_hook(url=rx.url(), enabled=True)
    event = {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}}
    sent = await gateway.forward("post-user-registration", event)
    delivery_id = (await sent.json())["deliveries"][0]["deliveryId"]
    await gateway.wait_delivery(delivery_id, status="succeeded")
    status, _ = await tenants_call(gateway, "DELETE", "/acme")
    assert status == 204
    await gateway.create_tenant("acme")
    resp = await gateway.client.get("/api/v2/deliveries", headers=gateway.auth())
    assert await resp.json() == []
    resp = await gateway.client.get(f"/api/v2/deliveries/{delivery_id}", headers=gateway.auth())
    assert resp.status == 404


async def test_a_tenant_allowlist_restricts_its_management_api(gateway: Gateway) -> None:
    status, _ = await tenants_call(gateway, "PATCH", "/acme", {"allowedCidrs": ["192.0.2.0/24"]})
    assert status == 200
    resp = await gateway.client.get("/api/v2/hooks", headers=gateway.auth())
    assert resp.status == 403
    await tenants_call(gateway, "PATCH", "/acme", {"allowedCidrs": ["127.0.0.1/32", "::1/128"]})
    resp = await gateway.client.get("/api/v2/hooks", headers=gateway.auth())
    assert resp.status == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "", {"id": "new"}),
        ("GET", "", None),
        ("GET", "/acme", None),
        ("PATCH", "/acme", {"name": "x"}),
        ("DELETE", "/acme", None),
    ],
)
async def test_tenant_tokens_cannot_manage_tenants(
    gateway: Gateway, method: str, path: str, body: Any
) -> None:
    # Even with the admin scope: a token bound to a tenant is not an operator's.
    for scopes in ((SCOPE_ADMIN,), ("read:hooks", "create:hooks", "update:hooks", "delete:hooks")):
        status, answer = await tenants_call(gateway, method, path, body, headers=gateway.auth("acme", scopes))
        assert status == 403
        assert answer["statusCode"] == 403
    status, got = await tenants_call(gateway, "GET", "/acme")
    assert status == 200 and got["name"] == "acme"


async def test_operator_tokens_cannot_manage_hooks(gateway: Gateway) -> None:
    resp = await gateway.client.get("/api/v2/hooks", headers=operator(gateway))
    assert resp.status == 403
    resp = await gateway.client.get("/api/v2/hooks", headers=gateway.auth(None))
    assert resp.status == 403


# -- tenant isolation ---------------------------------------------------------------------


async def test_tenant_b_gets_404_for_every_object_of_tenant_a(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    await gateway.create_tenant("globex")
    rx = await make_receiver()
    hook = await gateway.create_hook(name="private", url=rx.url(), enabled=True)
    await gateway.add_secrets(hook["id"], {"X-Api-Key": "acme-only"})
    sent = await gateway.forward(
        "post-user-registration",
        {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
    )
    delivery_id = (await sent.json())["deliveries"][0]["deliveryId"]
    await gateway.wait_delivery(delivery_id, status="succeeded")
    hid = hook["id"]
    calls: list[tuple[str, str, Any]] = [
        ("GET", f"/api/v2/hooks/{hid}", None),
        ("PATCH", f"/api/v2/hooks/{hid}", {"enabled": False}),
        ("GET", f"/api/v2/hooks/{hid}/secrets", None),
        ("POST", f"/api/v2/hooks/{hid}/secrets", {"X-Other": "v"}),
        ("PATCH", f"/api/v2/hooks/{hid}/secrets", {"X-Api-Key": "stolen"}),
        ("DELETE", f"/api/v2/hooks/{hid}/secrets", ["X-Api-Key"]),
        ("GET", f"/api/v2/hooks/{hid}/signing-secret", None),
        ("POST", f"/api/v2/hooks/{hid}/signing-secret/rotate", None),
        ("POST", f"/api/v2/hooks/{hid}/test", None),
        ("POST", f"/api/v2/hooks/{hid}/replay", {"since": 0, "status": ["succeeded"]}),
        ("GET", f"/api/v2/deliveries/{delivery_id}", None),
        ("POST", f"/api/v2/deliveries/{delivery_id}/retry", None),
        ("DELETE", f"/api/v2/hooks/{hid}", None),
    ]
    for method, path, body in calls:
        kwargs: dict[str, Any] = {} if body is None else {"json": body}
        resp = await gateway.client.request(method, path, headers=gateway.auth("globex"), **kwargs)
        assert resp.status == 404, (method, path, await resp.text())
        answer = await resp.json()
        assert answer["statusCode"] == 404
        assert "acme-only" not in await resp.text()
    for path in (
        "/api/v2/hooks",
        "/api/v2/deliveries",
        f"/api/v2/deliveries?hookId={hid}",
        "/api/v2/hooks?include_totals=true",
    ):
        resp = await gateway.client.get(path, headers=gateway.auth("globex"))
        body = await resp.json()
        assert body in ([], {"start": 0, "limit": 50, "total": 0, "hooks": []}), path
    # Tenant A's objects are untouched.
    after = await gateway.delivery(delivery_id)
    assert after["status"] == "succeeded" and len(after["attempts"]) == 1
    resp = await gateway.client.get(f"/api/v2/hooks/{hid}", headers=gateway.auth())
    assert (await resp.json())["enabled"] is True
    resp = await gateway.client.get(f"/api/v2/hooks/{hid}/secrets", headers=gateway.auth())
    assert await resp.json() == {"X-Api-Key": "_VALUE_NOT_SHOWN_"}
    resp = await gateway.client.get(f"/api/v2/hooks/{hid}/signing-secret", headers=gateway.auth())
    assert (await resp.json())["previous"] == []
    assert len(rx.requests) == 1


async def test_an_ingest_token_of_one_tenant_cannot_forward_for_another(gateway: Gateway) -> None:
    await gateway.create_tenant("globex")
    resp = await gateway.client.post(
        "/v1/tenants/acme/triggers/post-user-registration",
        json={"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
        headers=gateway.auth("globex", ("forward:events",)),
    )
    assert resp.status == 403
