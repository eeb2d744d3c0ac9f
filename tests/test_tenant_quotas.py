"""Quotas per tenant on hooks: `[quotas]` settings, per-tenant overrides set by operators, and a
403 naming the quota once a tenant has as many hooks as it may, even under concurrent creates."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from auth0.management import Auth0
from auth0.management.errors import ForbiddenError
from conftest import Gateway

from gateway.app import create_app
from gateway.auth import SCOPE_ADMIN, SCOPE_CREATE, mint
from gateway.errors import ConfigError
from gateway.settings import Settings, load

MakeGateway = Callable[..., Awaitable[Gateway]]
MakeSettings = Callable[..., Settings]
PUR, PCP = "post-user-registration", "post-change-password"


async def post_hook(gw: Gateway, name: str, trigger: str = PUR, tenant: str = "acme") -> Any:
    body = {"name": name, "triggerId": trigger, "url": "http://127.0.0.1:9/"}
    return await gw.client.post("/api/v2/hooks", json=body, headers=gw.auth(tenant))


async def refused(resp: Any) -> str:
    assert resp.status == 403, await resp.text()
    body = await resp.json()
    assert set(body) == {"statusCode", "error", "message"}
    assert (body["statusCode"], body["error"]) == (403, "Forbidden")
    return str(body["message"])


def operator(gw: Gateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {gw.operator_token()}"}


# -- settings -----------------------------------------------------------------------------------


def test_quota_settings_have_defaults_and_environment_overrides(tmp_path: Path) -> None:
    path = tmp_path / "g.toml"
    path.write_text('[auth]\nhs256_secret = "x"\n[quotas]\nhooks_per_tenant = 7\n')

    defaults = load(path, environ={})
    environ = {"GATEWAY_QUOTAS_HOOKS_PER_POINT": "3", "GATEWAY_QUOTAS_REPLAYS_PER_HOUR": "5"}
    overridden = load(path, environ=environ)

    assert (defaults.quotas.hooks_per_point, defaults.quotas.hooks_per_tenant) == (10, 7)
    assert defaults.quotas.replays_per_hour == 20
    assert (overridden.quotas.hooks_per_point, overridden.quotas.replays_per_hour) == (3, 5)


@pytest.mark.parametrize("key", ["hooks_per_point", "hooks_per_tenant", "replays_per_hour"])
def test_a_quota_setting_below_one_stops_start_up(tmp_path: Path, key: str) -> None:
    path = tmp_path / "g.toml"
    path.write_text(f'[auth]\nhs256_secret = "x"\n[quotas]\n{key} = 0\n')
    with pytest.raises(ConfigError, match=rf"\[quotas\] {key} must be at least 1"):
        load(path, environ={})


def test_the_example_config_documents_the_quota_defaults() -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.toml"
    text = example.read_text()
    assert "[quotas]" in text
    s = load(example, environ={})
    assert s.quotas == Settings().quotas


# -- hooks per point and in all ---------------------------------------------------------------------


async def test_the_default_quota_of_hooks_per_point_refuses_the_eleventh(gateway: Gateway) -> None:
    for i in range(10):
        assert (await post_hook(gateway, f"h{i}")).status == 201

    message = await refused(await post_hook(gateway, "h10"))

    assert "hooksPerPoint" in message and "10" in message and PUR in message
    assert (await post_hook(gateway, "other", PCP)).status == 201  # another point has room
    listed = await gateway.client.get(f"/api/v2/hooks?triggerId={PUR}", headers=gateway.auth())
    assert len(await listed.json()) == 10


async def test_the_quota_of_hooks_in_all_comes_from_settings(
    make_gateway: MakeGateway, make_settings: MakeSettings
) -> None:
    gw = await make_gateway(make_settings(quotas={"hooks_per_tenant": 3}))
    await gw.create_tenant("acme")
    await gw.create_tenant("globex")
    for name, trigger in (("a", PUR), ("b", PCP), ("c", PUR)):
        assert (await post_hook(gw, name, trigger)).status == 201

    message = await refused(await post_hook(gw, "d", PCP))

    assert "'hooks' is 3" in message
    assert (await post_hook(gw, "d", PCP, tenant="globex")).status == 201  # per tenant


async def test_a_tenant_override_raises_or_lowers_its_quotas_only(
    make_gateway: MakeGateway, make_settings: MakeSettings
) -> None:
    gw = await make_gateway(make_settings(quotas={"hooks_per_point": 2}))
    await gw.create_tenant("acme", quotas={"hooksPerPoint": 1})
    await gw.create_tenant("globex")
    assert (await post_hook(gw, "one")).status == 201
    assert "'hooksPerPoint' is 1" in await refused(await post_hook(gw, "two"))
    for name in ("one", "two"):
        assert (await post_hook(gw, name, tenant="globex")).status == 201
    assert "'hooksPerPoint' is 2" in await refused(await post_hook(gw, "three", tenant="globex"))

    patched = await gw.client.patch(
        "/api/v2/tenants/acme", json={"quotas": {"hooksPerPoint": 3}}, headers=operator(gw)
    )
    assert patched.status == 200

    assert (await post_hook(gw, "two")).status == 201
    assert (await post_hook(gw, "three")).status == 201
    assert "'hooksPerPoint' is 3" in await refused(await post_hook(gw, "four"))


async def test_deleting_a_hook_makes_room_under_the_quota(gateway: Gateway) -> None:
    resp = await gateway.client.patch(
        "/api/v2/tenants/acme", json={"quotas": {"hooks": 1}}, headers=operator(gateway)
    )
    assert resp.status == 200
    first = await (await post_hook(gateway, "first")).json()
    await refused(await post_hook(gateway, "second"))

    deleted = await gateway.client.delete(f"/api/v2/hooks/{first['id']}", headers=gateway.auth())
    assert deleted.status == 204

    assert (await post_hook(gateway, "second")).status == 201


async def test_concurrent_creates_at_the_edge_cannot_pass_the_quota(gateway: Gateway) -> None:
    resp = await gateway.client.patch(
        "/api/v2/tenants/acme", json={"quotas": {"hooksPerPoint": 3}}, headers=operator(gateway)
    )
    assert resp.status == 200
    assert (await post_hook(gateway, "existing")).status == 201  # quota - 2 left

    answers = await asyncio.gather(*(post_hook(gateway, f"racer{i}") for i in range(8)))

    statuses = sorted(r.status for r in answers)
    assert statuses == [201, 201] + [403] * 6
    listed = await gateway.client.get("/api/v2/hooks", headers=gateway.auth())
    assert len(await listed.json()) == 3


# -- the tenants API ------------------------------------------------------------------------------


async def test_operators_set_show_and_clear_a_tenants_quotas(make_gateway: MakeGateway) -> None:
    gw = await make_gateway()
    created = await gw.create_tenant("acme", quotas={"hooksPerPoint": 4, "hooks": 40, "replaysPerHour": 400})
    assert created["quotas"] == {"hooksPerPoint": 4, "hooks": 40, "replaysPerHour": 400}

    got = await (await gw.client.get("/api/v2/tenants/acme", headers=operator(gw))).json()
    assert got["quotas"] == {"hooksPerPoint": 4, "hooks": 40, "replaysPerHour": 400}

    patched = await gw.client.patch(
        "/api/v2/tenants/acme", json={"quotas": {"hooks": 5, "replaysPerHour": None}}, headers=operator(gw)
    )
    assert (await patched.json())["quotas"] == {"hooks": 5}  # replaces the object; null = the setting
    listed = await (await gw.client.get("/api/v2/tenants", headers=operator(gw))).json()
    assert listed[0]["quotas"] == {"hooks": 5}

    other = await gw.create_tenant("globex")
    assert other["quotas"] == {}


@pytest.mark.parametrize(
    "quotas",
    [
        5,
        [1],
        "hooks",
        {"hooksPerTenant": 5},
        {"hooks": 0},
        {"hooks": -1},
        {"hooksPerPoint": 10_001},
        {"replaysPerHour": 10**30},
        {"hooks": "5"},
        {"hooks": True},
        {"hooks": 1.5},
        {"hooks": {"n": 1}},
    ],
)
async def test_bad_quotas_are_a_400_on_create_and_update(make_gateway: MakeGateway, quotas: Any) -> None:
    gw = await make_gateway()
    await gw.create_tenant("acme")

    created = await gw.client.post(
        "/api/v2/tenants", json={"id": "globex", "quotas": quotas}, headers=operator(gw)
    )
    patched = await gw.client.patch("/api/v2/tenants/acme", json={"quotas": quotas}, headers=operator(gw))

    for resp in (created, patched):
        assert resp.status == 400, await resp.text()
        body = await resp.json()
        assert set(body) == {"statusCode", "error", "message"} and body["statusCode"] == 400
    got = await (await gw.client.get("/api/v2/tenants/acme", headers=operator(gw))).json()
    assert got["quotas"] == {}


async def test_an_unknown_quota_key_is_refused_without_echo_and_changes_nothing(gateway: Gateway) -> None:
    url = "/api/v2/tenants/acme"
    first = await gateway.client.patch(url, json={"quotas": {"hooks": 5}}, headers=operator(gateway))
    assert first.status == 200

    resp = await gateway.client.patch(
        url, json={"quotas": {"hooks": 6, "<script>evil": 1}}, headers=operator(gateway)
    )

    assert resp.status == 400
    assert "evil" not in await resp.text()
    got = await (await gateway.client.get(url, headers=operator(gateway))).json()
    assert got["quotas"] == {"hooks": 5}


async def test_a_tenant_token_cannot_change_its_own_quotas(gateway: Gateway) -> None:
    own = mint(gateway.settings, tenant="acme", scopes=(SCOPE_ADMIN, SCOPE_CREATE), ttl_s=60)
    resp = await gateway.client.patch(
        "/api/v2/tenants/acme", json={"quotas": {"hooks": 10_000}}, headers={"Authorization": f"Bearer {own}"}
    )
    assert resp.status == 403
    got = await (await gateway.client.get("/api/v2/tenants/acme", headers=operator(gateway))).json()
    assert got["quotas"] == {}


# -- Auth0's SDK sees a refusal it does not retry ----------------------------------------------------


@pytest.fixture
async def live_base_url(make_settings: MakeSettings) -> AsyncIterator[tuple[str, Settings]]:
    settings = make_settings()
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v2"
    async with httpx.AsyncClient() as client:
        admin = mint(settings, tenant=None, scopes=(SCOPE_ADMIN,), ttl_s=60)
        resp = await client.post(
            f"{base}/tenants",
            json={"id": "acme", "quotas": {"hooks": 1}},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert resp.status_code == 201, resp.text
    try:
        yield base, settings
    finally:
        await runner.cleanup()


async def test_the_auth0_sdk_gets_a_forbidden_error_and_does_not_retry(
    live_base_url: tuple[str, Settings],
) -> None:
    base, settings = live_base_url
    token = mint(settings, tenant="acme", scopes=(SCOPE_CREATE,), ttl_s=60)
    sent: list[str] = []

    def run() -> ForbiddenError:
        def count(request: httpx.Request) -> None:
            sent.append(request.method)

        with httpx.Client(timeout=10, event_hooks={"request": [count]}) as http:
            client = Auth0(base_url=base, token=token, httpx_client=http)  # the SDK's default retries
            for name in ("first", "second"):
                try:
                    client.hooks.create(
                        name=name,
                        script=...,  # type: ignore[arg-type]  # the SDK's omit marker
                        trigger_id=PUR,
                        request_options={"additional_body_parameters": {"url": "https://hooks.example.com/"}},
                    )
                except ForbiddenError as exc:
                    return exc
        raise AssertionError("the second hook was created past the quota")

    error = await asyncio.to_thread(run)

    assert error.status_code == 403
    assert "'hooks' is 1" in error.body["message"]
    assert sent == ["POST", "POST"]  # a 409 or 429 would have been sent again by the SDK
