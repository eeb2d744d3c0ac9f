"""Auto-disable (issue 14, Svix's rule): a hook whose attempts have all failed for `[delivery]
disable_after` (5 days) is disabled, with a reason and a `hook.disabled` event; one success
resets the clock, and so does enabling the hook again. Days pass on the app's injected clock."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web
from ops_events_endpoint import events_of, operator_settings

from gateway.auth import SCOPE_CREATE, SCOPE_DELETE, SCOPE_FORWARD, SCOPE_READ, SCOPE_UPDATE, mint
from gateway.signing import new_signing_secret

PUR = "post-user-registration"
DAY = 86400.0
SCOPES = (SCOPE_READ, SCOPE_CREATE, SCOPE_UPDATE, SCOPE_DELETE, SCOPE_FORWARD)
# Retries an hour apart and a long maximum age: each step of a test is the one new event's attempt.
SLOW = {"retry_schedule": ["1h"] * 3, "max_age": "30d", "poll_interval": "50ms", "jitter": 0.0}


class Clock:
    """A wall clock that a test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Scene:
    """The gateway on a moved clock, its tenant's hook at `rx`, the operator's events at `ops_rx`."""

    def __init__(self, gw: Any, clock: Clock, rx: Any, ops_rx: Any, secret: str, token: str) -> None:
        self.gw, self.clock, self.rx, self.ops_rx, self.secret = gw, clock, rx, ops_rx, secret
        self.auth = {"Authorization": f"Bearer {token}"}

    async def forward_at(self, day: float) -> str:
        """Move to `day` and send one new event; its delivery's id. (Retries of earlier events,
        an hour apart, come due on the moved clock too: their attempts fail alike.)"""
        self.clock.offset = day * DAY
        event = {"user": {"id": f"u{day}"}, "context": {"connection": {"id": "c", "name": "db"}}}
        resp = await self.gw.client.post(f"/v1/tenants/acme/triggers/{PUR}", json=event, headers=self.auth)
        assert resp.status == 202, await resp.text()
        return str((await resp.json())["deliveries"][0]["deliveryId"])

    async def attempt_at(self, day: float) -> dict[str, Any]:
        """`forward_at`, and the delivery once its attempt is recorded (the auto-disable check
        comes before the record, so it is done by then)."""
        delivery_id = await self.forward_at(day)
        loop = asyncio.get_running_loop()
        end = loop.time() + 20
        while True:  # the conftest helper's token would have expired on the moved clock
            resp = await self.gw.client.get(f"/api/v2/deliveries/{delivery_id}", headers=self.auth)
            d = await resp.json()
            if d["attempts"]:
                return d  # type: ignore[no-any-return]
            assert loop.time() < end, f"no attempt recorded: {d}"
            await asyncio.sleep(0.02)

    async def hook(self, hook_id: str) -> dict[str, Any]:
        resp = await self.gw.client.get(f"/api/v2/hooks/{hook_id}", headers=self.auth)
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


async def _scene(make_gateway, make_settings, make_receiver, responder) -> tuple[Scene, str]:
    ops_rx = await make_receiver()
    secret = new_signing_secret()
    clock = Clock()
    settings = make_settings(delivery={**SLOW, "disable_after": "5d"},
                             events=operator_settings(ops_rx.url("/ops"), secret))
    gw = await make_gateway(settings, clock=clock)
    await gw.create_tenant("acme")
    token = mint(settings, tenant="acme", scopes=SCOPES, ttl_s=60 * DAY)  # valid on the moved clock
    rx = await make_receiver(responder)
    resp = await gw.client.post("/api/v2/hooks", json={"name": "h", "triggerId": PUR, "url": rx.url(),
                                                       "enabled": True},
                                headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 201, await resp.text()
    hook_id = (await resp.json())["id"]
    return Scene(gw, clock, rx, ops_rx, secret, token), hook_id


async def _broken(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
    return web.json_response({}, status=500)


async def test_a_hook_whose_attempts_all_failed_for_disable_after_is_disabled(
    make_gateway, make_settings, make_receiver
) -> None:
    scene, hook_id = await _scene(make_gateway, make_settings, make_receiver, _broken)

    await scene.attempt_at(0)
    await scene.attempt_at(4.9)
    assert (await scene.hook(hook_id))["enabled"] is True  # failing for less than 5 days
    await scene.forward_at(5.1)

    # Sent under the moved clock: checked by the library at the request's own timestamp.
    (event,) = await events_of(scene.ops_rx, "hook.disabled", secret=scene.secret, any_time=True)
    hook = await scene.hook(hook_id)
    assert hook["enabled"] is False
    assert hook["disabledReason"].startswith("disabled automatically: every attempt failed since before ")
    assert event["data"] == {"tenant": "acme", "hookId": hook_id, "triggerId": PUR,
                             "reason": hook["disabledReason"]}


async def test_one_success_resets_the_clock(make_gateway, make_settings, make_receiver) -> None:
    async def down_but_on_day_3(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        return web.json_response({}, status=200 if state.get("up") else 500)

    scene, hook_id = await _scene(make_gateway, make_settings, make_receiver, down_but_on_day_3)

    await scene.attempt_at(0)
    scene.rx.state["up"] = True
    assert (await scene.attempt_at(3))["status"] == "succeeded"
    scene.rx.state["up"] = False
    await scene.attempt_at(5.1)  # failing again since day 5.1 only

    assert (await scene.hook(hook_id))["enabled"] is True
    await scene.attempt_at(10.0)
    assert (await scene.hook(hook_id))["enabled"] is True  # 4.9 days of failures
    await scene.forward_at(10.2)
    await events_of(scene.ops_rx, "hook.disabled", secret=scene.secret, any_time=True)
    assert (await scene.hook(hook_id))["enabled"] is False


async def test_enabling_the_hook_again_restarts_the_clock(make_gateway, make_settings, make_receiver) -> None:
    scene, hook_id = await _scene(make_gateway, make_settings, make_receiver, _broken)
    await scene.attempt_at(0)
    await scene.forward_at(5.1)
    await events_of(scene.ops_rx, "hook.disabled", secret=scene.secret, any_time=True)
    assert (await scene.hook(hook_id))["enabled"] is False

    enable = await scene.gw.client.patch(f"/api/v2/hooks/{hook_id}", json={"enabled": True},
                                         headers=scene.auth)
    assert enable.status == 200
    await scene.attempt_at(5.2)

    hook = await scene.hook(hook_id)
    assert hook["enabled"] is True and hook["disabledReason"] is None
