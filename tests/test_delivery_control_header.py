"""Receiver delivery control (issue 14, as Svix's receivers have it): a real loopback receiver
answers `webhook-delivery: abort` (stop retrying this delivery) or `disable` (disable the hook,
with a reason and a `hook.disabled` event); the value's case does not matter, anything else is
ignored."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from ops_events_endpoint import events_of, operator_settings

from gateway.signing import new_signing_secret

PUR = "post-user-registration"
EVENT = {"user": {"id": "u1"}, "context": {"connection": {"id": "c", "name": "db"}}}
FAST = {"retry_schedule": ["50ms"] * 5, "poll_interval": "50ms", "jitter": 0.0}
ABORTED = "receiver asked to stop retrying (webhook-delivery: abort)"


def answering(status: int, value: str | None) -> Any:
    async def respond(request: web.Request, received: Any, state: Any) -> web.StreamResponse:
        headers = {} if value is None else {"Webhook-Delivery": value}
        return web.json_response({"status": "success", "data": {}} if status < 300 else {}, status=status,
                                 headers=headers)

    return respond


async def _setup(make_gateway, make_settings, make_receiver, responder):
    ops_rx = await make_receiver()
    secret = new_signing_secret()
    events = operator_settings(ops_rx.url("/ops"), secret)
    gw = await make_gateway(make_settings(delivery=FAST, events=events))
    await gw.create_tenant("acme")
    rx = await make_receiver(responder)
    hook = await gw.create_hook(url=rx.url(), enabled=True)
    return gw, rx, ops_rx, secret, hook


async def _forward(gw: Any) -> str:
    resp = await gw.forward(PUR, EVENT)
    assert resp.status == 202, await resp.text()
    return str((await resp.json())["deliveries"][0]["deliveryId"])


async def _hook(gw: Any, hook_id: str) -> dict[str, Any]:
    return await (await gw.client.get(f"/api/v2/hooks/{hook_id}", headers=gw.auth())).json()  # type: ignore[no-any-return]


async def test_abort_stops_retrying_the_delivery(make_gateway, make_settings, make_receiver) -> None:
    gw, rx, ops_rx, secret, hook = await _setup(make_gateway, make_settings, make_receiver,
                                                answering(500, " ABORT "))
    delivery_id = await _forward(gw)

    d = await gw.wait_delivery(delivery_id, status="failed")

    assert d["lastError"] == ABORTED
    assert d["attemptCount"] == 1 and len(d["attempts"]) == 1  # the schedule had five retries left
    assert d["attempts"][0]["statusCode"] == 500
    assert len(rx.requests) == 1
    assert (await _hook(gw, hook["id"]))["enabled"] is True  # only this delivery stops
    # An abort is the receiver's call, not an exhausted delivery: no event was stored for it (an
    # event about an attempt is stored before its outcome), as the gateway's own tenant shows.
    ops_auth = {"Authorization": f"Bearer {gw.token('_ops')}"}
    stored = await (await gw.client.get("/api/v2/deliveries", headers=ops_auth)).json()
    assert [d["triggerId"] for d in stored] == []


async def test_abort_on_a_success_changes_nothing(make_gateway, make_settings, make_receiver) -> None:
    gw, _rx, _ops, _secret, _hook_ = await _setup(make_gateway, make_settings, make_receiver,
                                                  answering(200, "abort"))
    d = await gw.wait_delivery(await _forward(gw), status="succeeded")
    assert d["lastError"] is None


async def test_disable_disables_the_hook_and_reports_it(make_gateway, make_settings, make_receiver) -> None:
    gw, rx, ops_rx, secret, hook = await _setup(make_gateway, make_settings, make_receiver,
                                                answering(200, "Disable"))
    first = await _forward(gw)

    (event,) = await events_of(ops_rx, "hook.disabled", secret=secret)
    await gw.wait_delivery(first, status="succeeded")  # the answer itself was a success
    after = await _hook(gw, hook["id"])
    assert after["enabled"] is False
    assert after["disabledReason"].startswith(
        "receiver asked to disable the hook (webhook-delivery: disable) at ")
    assert event["data"] == {"tenant": "acme", "hookId": hook["id"], "triggerId": PUR,
                             "reason": after["disabledReason"]}
    # A disabled hook gets no more events.
    resp = await gw.forward(PUR, EVENT)
    assert resp.status == 202 and (await resp.json())["deliveries"] == []
    assert len(rx.requests) == 1


async def test_disable_on_a_failed_answer_parks_the_delivery(
    make_gateway, make_settings, make_receiver
) -> None:
    gw, rx, ops_rx, secret, hook = await _setup(make_gateway, make_settings, make_receiver,
                                                answering(503, "disable"))
    delivery_id = await _forward(gw)

    await events_of(ops_rx, "hook.disabled", secret=secret)
    d = await gw.wait_delivery(delivery_id, attempts=1)
    assert (d["status"], d["nextAttemptAt"]) == ("pending", None)
    assert d["lastError"] == "receiver answered HTTP 503; hook disabled"
    assert (await _hook(gw, hook["id"]))["enabled"] is False
    assert len(rx.requests) == 1


async def test_any_other_value_is_ignored(make_gateway, make_settings, make_receiver) -> None:
    gw, rx, ops_rx, _secret, hook = await _setup(make_gateway, make_settings, make_receiver,
                                                 answering(500, "abort, disable"))
    delivery_id = await _forward(gw)

    d = await gw.wait_delivery(delivery_id, attempts=3)  # retried by the schedule as any failure

    assert d["lastError"] == "receiver answered HTTP 500"
    assert (await _hook(gw, hook["id"]))["enabled"] is True
