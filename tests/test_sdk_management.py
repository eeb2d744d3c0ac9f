"""The tenants' SDK calls (hooks, secrets, signing secrets, deliveries, retry, replay) against a
running gateway, through the sync client (in a thread) and the async one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import Gateway, Received, Receiver
from sdk_live import root_url

from gateway.auth import SCOPE_FORWARD
from gateway.client import AsyncManagementClient, AuthServerClient, Conflict, ManagementClient, NotFound
from gateway.settings import Settings

# The SDK's behaviour does not depend on the gateway's database: one backend is enough (the
# gateway's own paths run on both in their own tests).
pytestmark = pytest.mark.sqlite_only

CREATED = {"user": {"id": "u1", "email": "jane@example.com"}, "context": {"connection": {"id": "con_1"}}}


async def in_mode(mode: str, gw: Gateway, steps: Callable[[Any], Any]) -> Any:
    """Run `steps(client)` with the sync client in a thread, or awaited with the async one
    (`steps` then returns a coroutine)."""
    if mode == "async":
        async with AsyncManagementClient(root_url(gw), gw.token()) as sdk:
            return await steps(sdk)

    def run() -> Any:
        with ManagementClient(root_url(gw), gw.token()) as sdk:
            return steps(sdk)

    return await asyncio.to_thread(run)


async def maybe(value: Any) -> Any:
    return await value if asyncio.iscoroutine(value) else value


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_hooks_are_created_listed_updated_tested_and_deleted(
    gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]], mode: str
) -> None:
    receiver = await make_receiver()

    async def asteps(sdk: AsyncManagementClient) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["created"] = await sdk.create_hook(
            name="welcome",
            trigger_id="post-user-registration",
            url=receiver.url(),
            enabled=True,
            rate_limit_per_second=5.0,
        )
        hook_id = out["created"].id
        try:
            await sdk.create_hook(name="welcome", trigger_id="post-user-registration", url=receiver.url())
        except Conflict as exc:
            out["conflict"] = exc
        out["got"] = await sdk.get_hook(hook_id)
        out["page"] = await sdk.list_hooks(trigger_id="post-user-registration")
        out["none"] = await sdk.list_hooks(trigger_id="credentials-exchange")
        out["updated"] = await sdk.update_hook(hook_id, name="welcome mail", rate_limit_per_second=None)
        out["tested"] = await sdk.test_hook(hook_id)
        await sdk.delete_hook(hook_id)
        try:
            await sdk.get_hook(hook_id)
        except NotFound as exc:
            out["gone"] = exc
        return out

    def ssteps(sdk: ManagementClient) -> dict[str, Any]:
        out: dict[str, Any] = {}
        out["created"] = sdk.create_hook(
            name="welcome",
            trigger_id="post-user-registration",
            url=receiver.url(),
            enabled=True,
            rate_limit_per_second=5.0,
        )
        hook_id = out["created"].id
        try:
            sdk.create_hook(name="welcome", trigger_id="post-user-registration", url=receiver.url())
        except Conflict as exc:
            out["conflict"] = exc
        out["got"] = sdk.get_hook(hook_id)
        out["page"] = sdk.list_hooks(trigger_id="post-user-registration")
        out["none"] = sdk.list_hooks(trigger_id="credentials-exchange")
        out["updated"] = sdk.update_hook(hook_id, name="welcome mail", rate_limit_per_second=None)
        out["tested"] = sdk.test_hook(hook_id)
        sdk.delete_hook(hook_id)
        try:
            sdk.get_hook(hook_id)
        except NotFound as exc:
            out["gone"] = exc
        return out

    out = await in_mode(mode, gateway, asteps if mode == "async" else ssteps)

    created = out["created"]
    assert created.id.startswith("hk_") and created.name == "welcome" and created.enabled
    assert created.trigger_id == "post-user-registration" and created.rate_limit_per_second == 5.0
    assert created.created_at.tzinfo is not None
    assert out["conflict"].status == 409
    assert out["got"] == created
    assert [h.id for h in out["page"].items] == [created.id] and out["page"].total == 1
    assert out["none"].items == [] and out["none"].total == 0
    updated = out["updated"]
    assert (updated.name, updated.rate_limit_per_second, updated.enabled) == ("welcome mail", None, True)
    assert out["tested"]["statusCode"] == 200 and out["tested"]["hookId"] == created.id
    assert receiver.requests[0].json()["user"]["id"]  # the sample event reached the receiver
    assert out["gone"].status == 404


async def test_secrets_are_added_listed_updated_and_deleted_by_name(gateway: Gateway) -> None:
    hook = await gateway.create_hook()

    def steps(sdk: ManagementClient) -> dict[str, Any]:
        out: dict[str, Any] = {"added": sdk.add_secrets(hook["id"], {"API_KEY": "k1", "X-Env": "prod"})}
        try:
            sdk.add_secrets(hook["id"], {"API_KEY": "k2"})
        except Conflict as exc:
            out["conflict"] = exc
        out["updated"] = sdk.update_secrets(hook["id"], {"API_KEY": "k2"})
        sdk.delete_secrets(hook["id"], ["X-Env"])
        out["left"] = sdk.list_secrets(hook["id"])
        return out

    out = await in_mode("sync", gateway, steps)

    assert out["added"] == ["API_KEY", "X-Env"]
    assert out["conflict"].status == 409
    assert out["updated"] == ["API_KEY"]
    assert out["left"] == ["API_KEY"]


async def test_the_signing_secret_is_read_and_rotated(gateway: Gateway) -> None:
    hook = await gateway.create_hook()
    async with AsyncManagementClient(root_url(gateway), gateway.token()) as sdk:
        before = await sdk.get_signing_secret(hook["id"])
        after = await sdk.rotate_signing_secret(hook["id"], grace_period_s=3600)

    assert after.secret == await gateway.signing_secret(hook["id"])  # the current one
    assert after.secret.startswith("whsec_") and after.secret != before.secret
    assert len(after.previous) == 1 and after.previous[0].expires_at > after.created_at
    assert before.secret not in repr(before)


@pytest.fixture
async def flaky_gateway(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Settings]
) -> Gateway:
    """A gateway that gives up on a delivery after two quick attempts."""
    gw = await make_gateway(make_settings(delivery={"retry_schedule": ["100ms"]}))
    await gw.create_tenant("acme")
    return gw


async def test_deliveries_are_listed_with_attempts_retried_and_replayed(
    flaky_gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]]
) -> None:
    gw = flaky_gateway
    healthy = {"ok": False}

    async def respond(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        if healthy["ok"]:
            return web.json_response({"status": "success", "data": {}})
        return web.Response(status=503, text="down")

    receiver = await make_receiver(respond)
    hook = await gw.create_hook(triggerId="post-user-registration", url=receiver.url(), enabled=True)
    since = time.time() - 1

    def emit() -> str:
        with AuthServerClient(root_url(gw), gw.token("acme", (SCOPE_FORWARD,))) as sdk:
            return sdk.emit("acme", "post-user-registration", CREATED).deliveries[0].delivery_id

    delivery_id = await asyncio.to_thread(emit)
    await gw.wait_delivery(delivery_id, status="failed")

    async with AsyncManagementClient(root_url(gw), gw.token()) as sdk:
        failed = await sdk.list_deliveries(hook_id=hook["id"], status="failed", since=since)
        detail = await sdk.get_delivery(delivery_id)
        healthy["ok"] = True
        retried = await sdk.retry_delivery(delivery_id)
        await gw.wait_delivery(delivery_id, status="succeeded")
        replayed = await sdk.replay(hook["id"], since=since, statuses=["succeeded"])
        # The replayed delivery may still be pending (skipped), or already delivered (replayed again).
        again = await sdk.replay(hook["id"], since=since, statuses=["succeeded"])
        listed = await sdk.list_deliveries(hook_id=hook["id"])

    assert [d.id for d in failed.items] == [delivery_id] and failed.total == 1
    assert detail.status == "failed" and detail.attempt_count == 2
    assert detail.attempts is not None and [a.status_code for a in detail.attempts] == [503, 503]
    assert detail.attempts[0].response_body == "down"
    assert retried.id == delivery_id and retried.status == "pending"
    assert replayed.count == 1 and len(replayed.delivery_ids) == 1 and replayed.delivery_ids[0] != delivery_id
    assert again.count + again.skipped == 1
    assert listed.total == 2 + again.count and {d.event_id for d in listed.items} == {detail.event_id}
