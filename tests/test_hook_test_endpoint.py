"""`POST /api/v2/hooks/{id}/test`: a sample event of the hook's point, sent now, answered with
the attempt (status, duration, the parsed answer, and what the auth server would get)."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import Gateway, Received, Receiver
from standardwebhooks.webhooks import Webhook

from gateway.auth import SCOPE_READ
from gateway.points import TRIGGER_IDS, sample_event

MakeReceiver = Callable[..., Awaitable[Receiver]]


def answering(body: Any, status: int = 200) -> Callable[..., Awaitable[web.StreamResponse]]:
    async def respond(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(body, status=status)

    return respond


async def run_test(gateway: Gateway, hook_id: str, body: Any = None, tenant: str = "acme") -> Any:
    kwargs = {} if body is None else {"json": body}
    return await gateway.client.post(f"/api/v2/hooks/{hook_id}/test", headers=gateway.auth(tenant), **kwargs)


async def run_ok(gateway: Gateway, hook_id: str, body: Any = None) -> dict[str, Any]:
    resp = await run_test(gateway, hook_id, body)
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize("trigger", TRIGGER_IDS)
async def test_a_sample_event_of_the_point_is_sent_signed(
    gateway: Gateway, make_receiver: MakeReceiver, trigger: str
) -> None:
    receiver = await make_receiver(answering({"status": "success", "data": {}}))
    hook = await gateway.create_hook(
        name="h", triggerId=trigger, url=receiver.url()
    )  # disabled: still testable
    await gateway.add_secrets(hook["id"], {"auth0-extension-secret": "s3"})
    result = await run_ok(gateway, hook["id"])
    (got,) = receiver.requests
    assert got.json() == sample_event(trigger) == result["request"]
    assert got.headers["Authorization"] == "Bearer s3"
    secret = await gateway.signing_secret(hook["id"])
    Webhook(secret).verify(got.body, {k.lower(): v for k, v in got.headers.items()})
    assert result["hookId"] == hook["id"]
    assert result["triggerId"] == trigger
    assert result["statusCode"] == 200
    assert result["error"] is None
    assert result["durationMs"] >= 0
    assert result["answer"] == {"status": "success", "data": {}}


async def test_the_answer_and_what_the_auth_server_would_get(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    data = {"scope": ["read:items"], "https://example.com/a": 1, "plain": "dropped"}
    receiver = await make_receiver(answering({"status": "success", "data": data}))
    hook = await gateway.create_hook(name="h", triggerId="credentials-exchange", url=receiver.url())
    result = await run_ok(gateway, hook["id"])
    assert result["answer"] == {"status": "success", "data": data}
    assert result["result"] == {
        "status": "success",
        "data": {"scope": ["read:items"], "https://example.com/a": 1},
    }
    assert "plain" in result["responseBody"]


async def test_a_deny_is_shown_without_its_stack(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    deny = {
        "status": "error",
        "data": {
            "name": "PreUserRegistrationError",
            "message": "no",
            "friendlyMessage": "Closed.",
            "stack": "at x",
        },
    }
    receiver = await make_receiver(answering(deny))
    hook = await gateway.create_hook(name="h", triggerId="pre-user-registration", url=receiver.url())
    result = await run_ok(gateway, hook["id"])
    expected = {
        "status": "error",
        "data": {"name": "PreUserRegistrationError", "message": "no", "friendlyMessage": "Closed."},
    }
    assert result["answer"] == expected
    assert result["result"] == expected


async def test_a_malformed_answer_is_reported(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    receiver = await make_receiver(
        answering({"status": "success", "data": {"user": {"app_metadata": {"email": 1}}}})
    )
    hook = await gateway.create_hook(name="meta", triggerId="pre-user-registration", url=receiver.url())
    result = await run_ok(gateway, hook["id"])
    assert result["statusCode"] == 200
    assert result["error"] is None
    assert result["answer"]["status"] == "success"
    assert result["result"]["data"]["name"] == "ServerError"
    assert "email" in result["result"]["data"]["message"]


async def test_a_failed_attempt_is_reported_with_its_status(
    gateway: Gateway, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver(answering({"oops": True}, status=503))
    hook = await gateway.create_hook(name="down", triggerId="credentials-exchange", url=receiver.url())
    result = await run_ok(gateway, hook["id"])
    assert result["statusCode"] == 503
    assert "503" in result["error"]
    assert result["answer"] is None
    assert result["result"]["data"]["name"] == "ServerError"
    assert len(receiver.requests) == 1  # sent once, not retried


async def test_a_dead_receiver_is_reported(gateway: Gateway) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/"
    hook = await gateway.create_hook(name="dead", triggerId="post-user-registration", url=url)
    result = await run_ok(gateway, hook["id"])
    assert result["statusCode"] is None
    assert "connection failed" in result["error"]
    assert result["answer"] is None
    assert result["result"] is None  # not a blocking point


async def test_a_custom_event_is_validated_and_sent(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    receiver = await make_receiver(answering({"status": "success", "data": {"message_id": "m"}}))
    hook = await gateway.create_hook(name="sms", triggerId="send-phone-message", url=receiver.url())
    event = sample_event("send-phone-message")
    event["recipient"] = "+15550000000"
    result = await run_ok(gateway, hook["id"], {"event": event})
    assert receiver.requests[0].json()["recipient"] == "+15550000000"
    assert result["result"] == {"status": "success", "data": {"message_id": "m"}}
    del event["context"]["code"]
    resp = await run_test(gateway, hook["id"], {"event": event})
    assert resp.status == 400
    assert "context.code" in (await resp.json())["message"]
    resp = await run_test(gateway, hook["id"], {"events": {}})
    assert resp.status == 400
    assert len(receiver.requests) == 1


async def test_another_tenants_hook_is_not_found(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    receiver = await make_receiver()
    hook = await gateway.create_hook(name="h", triggerId="credentials-exchange", url=receiver.url())
    await gateway.create_tenant("other")
    assert (await run_test(gateway, hook["id"], tenant="other")).status == 404
    assert (await run_test(gateway, "hk_missing")).status == 404
    assert receiver.requests == []


async def test_testing_a_hook_needs_update_scope(gateway: Gateway, make_receiver: MakeReceiver) -> None:
    receiver = await make_receiver()
    hook = await gateway.create_hook(name="h", triggerId="credentials-exchange", url=receiver.url())
    resp = await gateway.client.post(
        f"/api/v2/hooks/{hook['id']}/test", headers=gateway.auth("acme", (SCOPE_READ,))
    )
    assert resp.status == 403
    assert receiver.requests == []
