"""`/api/v2/hooks`: every row of SPEC's Management API table for the hook resource."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import Gateway, Received, Receiver

MakeReceiver = Callable[..., Awaitable[Receiver]]
URL = "http://127.0.0.1:9/hook"
HOOK_KEYS = {
    "id",
    "name",
    "triggerId",
    "url",
    "enabled",
    "order",
    "timeoutMs",
    "failurePolicy",
    "maxConcurrency",
    "rateLimitPerSecond",
    "format",
    "createdAt",
    "updatedAt",
}


async def post_hook(gw: Gateway, body: dict[str, Any], tenant: str = "acme") -> tuple[int, Any]:
    resp = await gw.client.post("/api/v2/hooks", json=body, headers=gw.auth(tenant))
    return resp.status, await resp.json()


async def patch_hook(gw: Gateway, hook_id: str, body: Any, tenant: str = "acme") -> tuple[int, Any]:
    resp = await gw.client.patch(f"/api/v2/hooks/{hook_id}", json=body, headers=gw.auth(tenant))
    return resp.status, await resp.json()


async def get_json(gw: Gateway, path: str, tenant: str = "acme") -> tuple[int, Any]:
    resp = await gw.client.get(path, headers=gw.auth(tenant))
    return resp.status, await resp.json()


def assert_error(body: Any, status: int, *needles: str) -> None:
    assert set(body) == {"statusCode", "error", "message"}
    assert body["statusCode"] == status
    for needle in needles:
        assert needle in body["message"]


# -- create -------------------------------------------------------------------------------


async def test_create_answers_201_with_the_documented_defaults(gateway: Gateway) -> None:
    status, hook = await post_hook(
        gateway, {"name": "my hook", "triggerId": "post-user-registration", "url": URL}
    )
    assert status == 201
    assert HOOK_KEYS <= set(hook)
    assert hook["id"].startswith("hk_")
    assert hook["name"] == "my hook"
    assert hook["triggerId"] == "post-user-registration"
    assert hook["url"] == URL
    assert hook["enabled"] is False
    assert hook["order"] == 0
    assert hook["format"] == "auth0"
    assert hook["failurePolicy"] == "fail"
    assert hook["rateLimitPerSecond"] is None
    assert hook["maxConcurrency"] == 10
    assert hook["createdAt"] == hook["updatedAt"]
    assert hook["createdAt"].endswith("Z")


async def test_create_keeps_every_gateway_field_given(gateway: Gateway) -> None:
    fields = {
        "enabled": True,
        "order": 5,
        "timeoutMs": 2500,
        "failurePolicy": "skip",
        "maxConcurrency": 3,
        "rateLimitPerSecond": 2.5,
        "format": "standard",
    }
    status, hook = await post_hook(
        gateway, {"name": "full", "triggerId": "credentials-exchange", "url": URL, **fields}
    )
    assert status == 201, hook
    assert {k: hook[k] for k in fields} == fields
    _, again = await get_json(gateway, f"/api/v2/hooks/{hook['id']}")
    assert {k: again[k] for k in fields} == fields


@pytest.mark.parametrize("name", ["-lead", "trail-", "under_score", "dot.ted", "", " space", "x" * 129, "é"])
async def test_create_refuses_a_name_outside_the_pattern(gateway: Gateway, name: str) -> None:
    status, body = await post_hook(gateway, {"name": name, "triggerId": "post-user-registration", "url": URL})
    assert status == 400
    assert_error(body, 400, "'name'")


@pytest.mark.parametrize("name", ["a", "My Hook-2", "A1 b2-c3"])
async def test_create_accepts_names_matching_the_pattern(gateway: Gateway, name: str) -> None:
    status, body = await post_hook(gateway, {"name": name, "triggerId": "post-user-registration", "url": URL})
    assert status == 201, body


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"triggerId": "post-user-registration", "url": URL}, "'name'"),
        ({"name": "n", "url": URL}, "'triggerId'"),
        ({"name": "n", "triggerId": "post-user-registration"}, "'url'"),
        ({"name": "n", "triggerId": "post-login", "url": URL}, "'triggerId'"),
        ({"name": "n", "triggerId": "post-user-registration", "url": URL, "colour": "red"}, "'colour'"),
        (
            {"name": "n", "triggerId": "post-user-registration", "url": URL, "script": "module.exports=1"},
            "'script'",
        ),
        ({"name": "n", "triggerId": "post-user-registration", "url": URL, "enabled": "yes"}, "'enabled'"),
        ({"name": "n", "triggerId": "post-user-registration", "url": URL, "order": 1.5}, "'order'"),
        ({"name": "n", "triggerId": "post-user-registration", "url": URL, "timeoutMs": 10}, "'timeoutMs'"),
        ({"name": "n", "triggerId": "post-user-registration", "url": URL, "format": "xml"}, "'format'"),
        (
            {"name": "n", "triggerId": "post-user-registration", "url": URL, "maxConcurrency": 0},
            "'maxConcurrency'",
        ),
        (
            {"name": "n", "triggerId": "post-user-registration", "url": URL, "failurePolicy": "skip"},
            "blocking",
        ),
        ({"name": 5, "triggerId": "post-user-registration", "url": URL}, "'name'"),
        ({"name": "n", "triggerId": "post-user-registration", "url": ["x"]}, "'url'"),
    ],
)
async def test_create_refuses_bad_fields_with_400_naming_the_field(
    gateway: Gateway, body: dict[str, Any], needle: str
) -> None:
    status, answer = await post_hook(gateway, body)
    assert status == 400
    assert_error(answer, 400, needle)


async def test_create_refuses_a_name_already_used_by_the_tenant(gateway: Gateway) -> None:
    await gateway.create_hook(name="dup")
    status, body = await post_hook(gateway, {"name": "dup", "triggerId": "post-change-password", "url": URL})
    assert status == 409
    assert_error(body, 409, "dup")


async def test_another_tenant_may_reuse_a_hook_name(gateway: Gateway) -> None:
    await gateway.create_tenant("globex")
    await gateway.create_hook(name="shared")
    hook = await gateway.create_hook(tenant="globex", name="shared")
    assert hook["name"] == "shared"


@pytest.mark.parametrize(
    "url",
    [
        "https://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://[::ffff:10.0.0.1]/",
        "https://100.64.0.1/",
        "https://0.0.0.0/",
        "https://user:pw@example.com/",
        "ftp://example.com/",
        "not a url",
    ],
)
async def test_a_plainly_refused_url_is_400_at_create_and_update(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Any], url: str
) -> None:
    gw = await make_gateway(make_settings(egress={"allow_http": True, "allow_cidrs": []}))
    await gw.create_tenant("acme")
    status, body = await post_hook(gw, {"name": "n", "triggerId": "post-user-registration", "url": url})
    assert status == 400
    assert_error(body, 400, "url")
    good = await gw.create_hook(name="good", url="https://hooks.example.com/x")
    status, body = await patch_hook(gw, good["id"], {"url": url})
    assert status == 400
    assert_error(body, 400, "url")
    _, unchanged = await get_json(gw, f"/api/v2/hooks/{good['id']}")
    assert unchanged["url"] == "https://hooks.example.com/x"


async def test_plain_http_is_refused_unless_the_operator_allows_it(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Any]
) -> None:
    gw = await make_gateway(make_settings(egress={"allow_http": False}))
    await gw.create_tenant("acme")
    status, body = await post_hook(
        gw, {"name": "n", "triggerId": "post-user-registration", "url": "http://hooks.example.com/x"}
    )
    assert status == 400
    assert_error(body, 400, "https")
    hook = await gw.create_hook(name="tls", url="https://hooks.example.com/x")
    status, body = await patch_hook(gw, hook["id"], {"url": "http://hooks.example.com/x"})
    assert status == 400
    assert_error(body, 400, "https")


# -- one enabled send-phone-message hook --------------------------------------------------


async def test_only_one_send_phone_message_hook_can_be_enabled_at_create(gateway: Gateway) -> None:
    await gateway.create_hook(name="sms1", triggerId="send-phone-message", enabled=True)
    status, body = await post_hook(
        gateway, {"name": "sms2", "triggerId": "send-phone-message", "url": URL, "enabled": True}
    )
    assert status == 409
    assert_error(body, 409, "send-phone-message")
    # A disabled second one is fine.
    await gateway.create_hook(name="sms3", triggerId="send-phone-message", enabled=False)


async def test_only_one_send_phone_message_hook_can_be_enabled_at_patch(gateway: Gateway) -> None:
    first = await gateway.create_hook(name="sms1", triggerId="send-phone-message", enabled=True)
    second = await gateway.create_hook(name="sms2", triggerId="send-phone-message")
    status, body = await patch_hook(gateway, second["id"], {"enabled": True})
    assert status == 409
    assert_error(body, 409, "send-phone-message")
    # Once the first is disabled, the second can be enabled.
    status, _ = await patch_hook(gateway, first["id"], {"enabled": False})
    assert status == 200
    status, body = await patch_hook(gateway, second["id"], {"enabled": True})
    assert status == 200
    assert body["enabled"] is True


async def test_several_enabled_hooks_are_allowed_on_other_points(gateway: Gateway) -> None:
    for name in ("a", "b"):
        await gateway.create_hook(name=name, triggerId="credentials-exchange", enabled=True)
    _, hooks = await get_json(gateway, "/api/v2/hooks?enabled=true&triggerId=credentials-exchange")
    assert len(hooks) == 2


async def test_the_enabled_send_phone_message_hook_is_only_per_tenant(gateway: Gateway) -> None:
    await gateway.create_tenant("globex")
    await gateway.create_hook(name="sms", triggerId="send-phone-message", enabled=True)
    hook = await gateway.create_hook(
        tenant="globex", name="sms", triggerId="send-phone-message", enabled=True
    )
    assert hook["enabled"] is True


# -- get ----------------------------------------------------------------------------------


async def test_get_answers_the_hook_or_404(gateway: Gateway) -> None:
    hook = await gateway.create_hook(name="one")
    status, got = await get_json(gateway, f"/api/v2/hooks/{hook['id']}")
    assert status == 200
    assert got == hook
    status, body = await get_json(gateway, "/api/v2/hooks/hk_doesnotexist")
    assert status == 404
    assert_error(body, 404)


async def test_get_with_fields_keeps_or_drops_them(gateway: Gateway) -> None:
    hook = await gateway.create_hook(name="one")
    _, only = await get_json(gateway, f"/api/v2/hooks/{hook['id']}?fields=id,name")
    assert only == {"id": hook["id"], "name": "one"}
    _, without = await get_json(gateway, f"/api/v2/hooks/{hook['id']}?fields=url,order&include_fields=false")
    assert "url" not in without and "order" not in without
    assert without["id"] == hook["id"]
    status, body = await get_json(gateway, f"/api/v2/hooks/{hook['id']}?fields=nope")
    assert status == 400
    assert_error(body, 400, "nope")


# -- list ---------------------------------------------------------------------------------


async def _five_hooks(gw: Gateway) -> list[dict[str, Any]]:
    out = []
    for i in range(5):
        trigger = "post-user-registration" if i % 2 == 0 else "post-change-password"
        out.append(await gw.create_hook(name=f"h{i}", triggerId=trigger, enabled=i < 2))
    return out


async def test_list_answers_an_array_of_the_tenants_hooks(gateway: Gateway) -> None:
    created = await _five_hooks(gateway)
    status, hooks = await get_json(gateway, "/api/v2/hooks")
    assert status == 200
    assert isinstance(hooks, list)
    assert sorted(h["id"] for h in hooks) == sorted(h["id"] for h in created)


async def test_list_pages_are_zero_based(gateway: Gateway) -> None:
    await _five_hooks(gateway)
    seen = []
    for page in range(3):
        _, hooks = await get_json(gateway, f"/api/v2/hooks?page={page}&per_page=2")
        assert len(hooks) == (2 if page < 2 else 1)
        seen += [h["id"] for h in hooks]
    assert len(set(seen)) == 5
    _, beyond = await get_json(gateway, "/api/v2/hooks?page=3&per_page=2")
    assert beyond == []


async def test_list_include_totals_wraps_the_page(gateway: Gateway) -> None:
    await _five_hooks(gateway)
    status, body = await get_json(gateway, "/api/v2/hooks?page=1&per_page=2&include_totals=true")
    assert status == 200
    assert set(body) == {"start", "limit", "total", "hooks"}
    assert (body["start"], body["limit"], body["total"]) == (2, 2, 5)
    assert len(body["hooks"]) == 2


@pytest.mark.parametrize(
    "query",
    [
        "per_page=101",
        "per_page=0",
        "page=-1",
        "page=x",
        "include_totals=maybe",
        "enabled=perhaps",
        "triggerId=post-login",
    ],
)
async def test_list_refuses_bad_query_parameters(gateway: Gateway, query: str) -> None:
    status, body = await get_json(gateway, f"/api/v2/hooks?{query}")
    assert status == 400
    assert_error(body, 400)


async def test_list_filters_on_enabled_and_trigger(gateway: Gateway) -> None:
    created = await _five_hooks(gateway)
    _, enabled = await get_json(gateway, "/api/v2/hooks?enabled=true")
    assert sorted(h["name"] for h in enabled) == ["h0", "h1"]
    _, disabled = await get_json(gateway, "/api/v2/hooks?enabled=false")
    assert sorted(h["name"] for h in disabled) == ["h2", "h3", "h4"]
    _, pcp = await get_json(gateway, "/api/v2/hooks?triggerId=post-change-password")
    assert sorted(h["name"] for h in pcp) == ["h1", "h3"]
    _, both = await get_json(gateway, "/api/v2/hooks?triggerId=post-user-registration&enabled=true")
    assert [h["id"] for h in both] == [created[0]["id"]]


async def test_list_fields_and_include_fields_false(gateway: Gateway) -> None:
    await _five_hooks(gateway)
    _, hooks = await get_json(gateway, "/api/v2/hooks?fields=id,enabled")
    assert all(set(h) == {"id", "enabled"} for h in hooks)
    _, hooks = await get_json(gateway, "/api/v2/hooks?fields=url&include_fields=false&include_totals=true")
    assert hooks["total"] == 5
    assert all("url" not in h and "name" in h for h in hooks["hooks"])


# -- update -------------------------------------------------------------------------------


async def test_patch_changes_the_given_fields_and_answers_200(gateway: Gateway) -> None:
    hook = await gateway.create_hook(name="before", triggerId="credentials-exchange")
    status, after = await patch_hook(
        gateway,
        hook["id"],
        {
            "name": "after",
            "url": "http://127.0.0.1:9/new",
            "enabled": True,
            "order": -3,
            "timeoutMs": 900,
            "failurePolicy": "skip",
            "rateLimitPerSecond": None,
            "format": "standard",
            "maxConcurrency": 2,
            "triggerId": "credentials-exchange",  # unchanged: allowed
        },
    )
    assert status == 200, after
    assert (after["name"], after["url"], after["enabled"], after["order"]) == (
        "after",
        "http://127.0.0.1:9/new",
        True,
        -3,
    )
    assert (after["timeoutMs"], after["failurePolicy"], after["format"], after["maxConcurrency"]) == (
        900,
        "skip",
        "standard",
        2,
    )
    assert after["createdAt"] == hook["createdAt"]
    assert after["updatedAt"] >= hook["updatedAt"]
    _, got = await get_json(gateway, f"/api/v2/hooks/{hook['id']}")
    assert got == after


async def test_patch_cannot_change_the_trigger(gateway: Gateway) -> None:
    hook = await gateway.create_hook()
    status, body = await patch_hook(gateway, hook["id"], {"triggerId": "post-change-password"})
    assert status == 400
    assert_error(body, 400, "triggerId")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"colour": "red"}, "'colour'"),
        ({"secrets": {"a": "b"}}, "'secrets'"),
        ({"enabled": 1}, "'enabled'"),
        ({"name": None}, "'name'"),
        ({"order": "1"}, "'order'"),
        ({"url": 42}, "'url'"),
        ({"rateLimitPerSecond": "fast"}, "'rateLimitPerSecond'"),
        ({"name": "bad_name"}, "'name'"),
        ({"id": "hk_other"}, "'id'"),
    ],
)
async def test_patch_refuses_unknown_fields_and_wrong_types(
    gateway: Gateway, body: dict[str, Any], needle: str
) -> None:
    hook = await gateway.create_hook()
    status, answer = await patch_hook(gateway, hook["id"], body)
    assert status == 400
    assert_error(answer, 400, needle)
    _, unchanged = await get_json(gateway, f"/api/v2/hooks/{hook['id']}")
    assert unchanged == hook


async def test_patch_to_a_name_already_used_is_409(gateway: Gateway) -> None:
    await gateway.create_hook(name="taken")
    hook = await gateway.create_hook(name="mine")
    status, body = await patch_hook(gateway, hook["id"], {"name": "taken"})
    assert status == 409
    assert_error(body, 409, "taken")


async def test_patch_of_an_unknown_hook_is_404(gateway: Gateway) -> None:
    status, body = await patch_hook(gateway, "hk_nope", {"enabled": True})
    assert status == 404
    assert_error(body, 404)


# -- delete -------------------------------------------------------------------------------


async def test_delete_answers_204_then_the_hook_is_gone(gateway: Gateway) -> None:
    hook = await gateway.create_hook()
    resp = await gateway.client.delete(f"/api/v2/hooks/{hook['id']}", headers=gateway.auth())
    assert resp.status == 204
    assert await resp.read() == b""
    status, _ = await get_json(gateway, f"/api/v2/hooks/{hook['id']}")
    assert status == 404
    resp = await gateway.client.delete(f"/api/v2/hooks/{hook['id']}", headers=gateway.auth())
    assert resp.status == 404
    assert_error(await resp.json(), 404)
    _, hooks = await get_json(gateway, "/api/v2/hooks")
    assert hooks == []


async def test_delete_cancels_the_hooks_pending_deliveries(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    async def failing(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=503)

    rx = await make_receiver(failing)
    hook = await gateway.create_hook(url=rx.url(), enabled=True)
    sent = await gateway.forward(
        "post-user-registration",
        {"user": {"id": "u1"}, "context": {"connection": {"id": "con_1", "name": "db"}}},
    )
    delivery_id = (await sent.json())["deliveries"][0]["deliveryId"]
    pending = await gateway.wait_delivery(delivery_id, attempts=1)
    assert pending["status"] == "pending"  # a retry is scheduled
    resp = await gateway.client.delete(f"/api/v2/hooks/{hook['id']}", headers=gateway.auth())
    assert resp.status == 204
    cancelled = await gateway.delivery(delivery_id)
    assert cancelled["status"] == "cancelled"
    assert cancelled["nextAttemptAt"] is None


async def test_delete_frees_the_name(gateway: Gateway) -> None:
    hook = await gateway.create_hook(name="again")
    await gateway.client.delete(f"/api/v2/hooks/{hook['id']}", headers=gateway.auth())
    again = await gateway.create_hook(name="again")
    assert again["id"] != hook["id"]


# -- scopes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "needed"),
    [
        ("GET", "/api/v2/hooks", "read:hooks"),
        ("POST", "/api/v2/hooks", "create:hooks"),
        ("GET", "/api/v2/hooks/{id}", "read:hooks"),
        ("PATCH", "/api/v2/hooks/{id}", "update:hooks"),
        ("DELETE", "/api/v2/hooks/{id}", "delete:hooks"),
        ("GET", "/api/v2/hooks/{id}/secrets", "read:hooks"),
        ("POST", "/api/v2/hooks/{id}/secrets", "update:hooks"),
        ("PATCH", "/api/v2/hooks/{id}/secrets", "update:hooks"),
        ("DELETE", "/api/v2/hooks/{id}/secrets", "update:hooks"),
        ("GET", "/api/v2/hooks/{id}/signing-secret", "read:hooks"),
        ("POST", "/api/v2/hooks/{id}/signing-secret/rotate", "update:hooks"),
    ],
)
async def test_each_call_needs_its_scope(gateway: Gateway, method: str, path: str, needed: str) -> None:
    hook = await gateway.create_hook()
    all_scopes = ("read:hooks", "create:hooks", "update:hooks", "delete:hooks")
    others = tuple(s for s in all_scopes if s != needed)
    body: Any = ["X"] if method == "DELETE" and "secrets" in path else {"X-Key": "v"}
    if path == "/api/v2/hooks":
        body = {"name": "n2", "triggerId": "post-user-registration", "url": URL}
    resp = await gateway.client.request(
        method, path.format(id=hook["id"]), json=body, headers=gateway.auth("acme", others)
    )
    assert resp.status == 403
    assert_error(await resp.json(), 403, needed)
