"""What a receiver gets: Standard Webhooks signatures that the `standardwebhooks` library
verifies on the bytes and headers actually received, secrets as headers, and both formats."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

PUR = "post-user-registration"
EVENT = {
    "user": {"id": "u1", "email": "a@example.com", "user_metadata": {"plan": "pro"}},
    "context": {"connection": {"id": "con_1", "name": "db"}},
}


async def _deliver_one(gateway, rx, **hook_fields):
    hook = await gateway.create_hook(url=rx.url(), enabled=True, **hook_fields)
    resp = await gateway.forward(PUR, EVENT)
    assert resp.status == 202, await resp.text()
    delivery_id = (await resp.json())["deliveries"][0]["deliveryId"]
    return hook, delivery_id


async def test_the_signature_verifies_with_the_standardwebhooks_library(gateway, make_receiver) -> None:
    rx = await make_receiver()
    hook, delivery_id = await _deliver_one(gateway, rx)
    secret = await gateway.signing_secret(hook["id"])

    (received,) = await rx.wait_for(1)

    assert Webhook(secret).verify(received.body, received.headers) == EVENT
    assert received.headers["webhook-id"] == delivery_id
    assert received.headers["Content-Type"] == "application/json"
    tampered = received.body.replace(b"pro", b"free")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, received.headers)


async def test_during_a_rotation_each_valid_secret_signs(gateway, make_receiver) -> None:
    rx = await make_receiver()
    hook = await gateway.create_hook(url=rx.url(), enabled=True)
    old = await gateway.signing_secret(hook["id"])
    rotated = await gateway.client.post(
        f"/api/v2/hooks/{hook['id']}/signing-secret/rotate", headers=gateway.auth()
    )
    assert rotated.status == 200, await rotated.text()
    new = (await rotated.json())["secret"]
    assert new != old

    assert (await gateway.forward(PUR, EVENT)).status == 202
    (received,) = await rx.wait_for(1)

    signatures = received.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2
    for secret in (old, new):  # a receiver holding either secret accepts the request
        Webhook(secret).verify(received.body, received.headers)
    verified = 0  # and each signature alone is one secret's
    for sig in signatures:
        for secret in (old, new):
            try:
                Webhook(secret).verify(received.body, {**received.headers, "webhook-signature": sig})
            except WebhookVerificationError:
                continue
            verified += 1
    assert verified == 2


async def test_retries_keep_the_webhook_id_and_get_a_fresh_timestamp(
    make_gateway, make_settings, make_receiver
) -> None:
    async def fail_first(request: web.Request, received, state) -> web.StreamResponse:
        state["n"] = state.get("n", 0) + 1
        return web.Response(status=500) if state["n"] == 1 else web.json_response({})

    gw = await make_gateway(make_settings(delivery={"retry_schedule": ["1s"]}))
    await gw.create_tenant("acme")
    rx = await make_receiver(fail_first)
    hook, delivery_id = await _deliver_one(gw, rx)
    secret = await gw.signing_secret(hook["id"])

    first, second = await rx.wait_for(2)

    assert first.headers["webhook-id"] == second.headers["webhook-id"] == delivery_id
    assert int(second.headers["webhook-timestamp"]) > int(first.headers["webhook-timestamp"])
    for received in (first, second):
        Webhook(secret).verify(received.body, received.headers)


async def test_auth0_extension_secret_is_a_bearer_token_and_other_secrets_are_headers(
    gateway, make_receiver
) -> None:
    rx = await make_receiver()
    hook = await gateway.create_hook(url=rx.url(), enabled=True)
    await gateway.add_secrets(hook["id"], {"auth0-extension-secret": "s3cr3t", "X-Api-Key": "k-123"})

    assert (await gateway.forward(PUR, EVENT)).status == 202
    (received,) = await rx.wait_for(1)

    assert received.headers["Authorization"] == "Bearer s3cr3t"
    assert received.headers["X-Api-Key"] == "k-123"
    assert "auth0-extension-secret" not in {k.lower() for k in received.headers}


async def test_standard_format_wraps_the_event_in_type_timestamp_data(gateway, make_receiver) -> None:
    rx = await make_receiver()
    hook, _ = await _deliver_one(gateway, rx, format="standard")
    secret = await gateway.signing_secret(hook["id"])

    (received,) = await rx.wait_for(1)

    body = Webhook(secret).verify(received.body, received.headers)
    assert set(body) == {"type", "timestamp", "data"}
    assert body["type"] == PUR
    assert body["data"] == EVENT
    assert datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).tzinfo is not None


async def test_auth0_format_sends_the_forwarded_bytes_unchanged(gateway, make_receiver) -> None:
    rx = await make_receiver()
    hook = await gateway.create_hook(url=rx.url(), enabled=True, format="auth0")
    raw = json.dumps(EVENT, indent=3, ensure_ascii=True).encode() + b"\n"
    resp = await gateway.client.post(
        f"/v1/tenants/acme/triggers/{PUR}",
        data=raw,
        headers={**gateway.auth("acme"), "Content-Type": "application/json"},
    )
    assert resp.status == 202

    (received,) = await rx.wait_for(1)

    assert received.body == raw
    Webhook(await gateway.signing_secret(hook["id"])).verify(received.body, received.headers)
