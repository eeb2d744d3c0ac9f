"""The auth server's SDK calls (`invoke`, `emit`) against a running gateway and real receivers
on loopback, through the sync client (in a thread) and the async one."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import Gateway, Received, Receiver
from sdk_live import root_url

from gateway.auth import SCOPE_FORWARD
from gateway.client import (
    AsyncAuthServerClient,
    AuthServerClient,
    BadRequest,
    CredentialsExchangeResult,
    DeadlineExceeded,
    Denied,
    Forbidden,
    HookError,
    HookFailed,
    InvalidScope,
    NotFound,
    PreUserRegistrationResult,
    SendPhoneMessageResult,
    TransportError,
    Unauthorized,
)

# The SDK's behaviour does not depend on the gateway's database: one backend is enough (the
# gateway's own paths run on both in their own tests).
pytestmark = pytest.mark.sqlite_only

CE = {"audience": "https://api.example.com", "client": {"id": "c1", "name": "App"}, "scope": ["read"]}
SIGNUP = {
    "user": {"tenant": "acme", "email": "jane@example.com", "user_metadata": {}, "app_metadata": {}},
    "context": {
        "connection": {"id": "con_1", "name": "db", "tenant": "acme"},
        "request": {"ip": "203.0.113.7"},
    },
}
PHONE = {
    "recipient": "+15555550123",
    "text": "Your code is 123456",
    "context": {
        "message_type": "sms",
        "action": "second-factor-authentication",
        "language": "en",
        "code": "123456",
        "ip": "203.0.113.7",
        "user_agent": "test",
        "user": {"user_id": "u1"},
    },
}
CREATED = {"user": {"id": "u1", "email": "jane@example.com"}, "context": {"connection": {"id": "con_1"}}}

MODES = ["sync", "async"]


def forwarder(gw: Gateway) -> str:
    return gw.token("acme", (SCOPE_FORWARD,))


async def invoke(
    mode: str,
    gw: Gateway,
    trigger: str,
    body: dict[str, Any],
    *,
    token: str | None = None,
    base: str | None = None,
    **kwargs: Any,
) -> Any:
    """`invoke` through the sync client (in a thread, the gateway runs on this loop) or the async one."""
    base, token = base or root_url(gw), token or forwarder(gw)
    if mode == "async":
        async with AsyncAuthServerClient(base, token) as sdk:
            return await sdk.invoke("acme", trigger, body, **kwargs)  # type: ignore[call-overload]

    def run() -> Any:
        with AuthServerClient(base, token) as sdk:
            return sdk.invoke("acme", trigger, body, **kwargs)  # type: ignore[call-overload]

    return await asyncio.to_thread(run)


def answering(envelope: dict[str, Any]) -> Callable[..., Awaitable[web.StreamResponse]]:
    async def respond(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(envelope)

    return respond


async def hook_for(
    gw: Gateway, make_receiver: Callable[..., Awaitable[Receiver]], trigger: str, envelope: dict[str, Any]
) -> Receiver:
    receiver = await make_receiver(answering(envelope))
    await gw.create_hook(name=trigger, triggerId=trigger, url=receiver.url(), enabled=True)
    return receiver


@pytest.mark.parametrize("mode", MODES)
async def test_credentials_exchange_returns_the_scope_and_the_namespaced_claims(
    gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]], mode: str
) -> None:
    receiver = await hook_for(
        gateway,
        make_receiver,
        "credentials-exchange",
        {
            "status": "success",
            "data": {
                "scope": ["read", "read:reports"],
                "https://example.com/plan": "gold",
                "plan": "not namespaced",
            },
        },
    )

    result = await invoke(mode, gateway, "credentials-exchange", CE)

    assert result == CredentialsExchangeResult(
        scope=["read", "read:reports"], claims={"https://example.com/plan": "gold"}
    )
    assert result.token_claims() == {"scope": "read read:reports", "https://example.com/plan": "gold"}
    assert receiver.requests[0].json() == CE


@pytest.mark.parametrize("mode", MODES)
async def test_pre_user_registration_returns_the_metadata(
    gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]], mode: str
) -> None:
    await hook_for(
        gateway,
        make_receiver,
        "pre-user-registration",
        {
            "status": "success",
            "data": {
                "user": {"user_metadata": {"plan": "trial"}, "app_metadata": {"tier": 2}},
            },
        },
    )

    result = await invoke(mode, gateway, "pre-user-registration", SIGNUP)

    assert result == PreUserRegistrationResult(user_metadata={"plan": "trial"}, app_metadata={"tier": 2})


@pytest.mark.parametrize("mode", MODES)
async def test_a_denied_signup_raises_denied_with_the_users_message(
    gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]], mode: str
) -> None:
    await hook_for(
        gateway,
        make_receiver,
        "pre-user-registration",
        {
            "status": "error",
            "data": {
                "name": "PreUserRegistrationError",
                "message": "domain blocked",
                "friendlyMessage": "Signups from this domain are closed.",
            },
        },
    )

    with pytest.raises(Denied) as raised:
        await invoke(mode, gateway, "pre-user-registration", SIGNUP)

    assert raised.value.name == "PreUserRegistrationError"
    assert raised.value.message == "domain blocked"
    assert raised.value.friendly_message == "Signups from this domain are closed."
    assert raised.value.trigger == "pre-user-registration"


async def test_a_refused_scope_raises_invalid_scope_for_the_oauth2_answer(
    gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]]
) -> None:
    await hook_for(
        gateway,
        make_receiver,
        "credentials-exchange",
        {"status": "error", "data": {"name": "InvalidScopeError", "message": "write is not for you"}},
    )

    with pytest.raises(InvalidScope) as raised:
        await invoke("async", gateway, "credentials-exchange", CE)

    assert (raised.value.oauth_error, raised.value.message) == ("invalid_scope", "write is not for you")


async def test_a_failing_hook_raises_hook_failed(
    gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]]
) -> None:
    async def broken(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        return web.Response(status=500, text="boom")

    receiver = await make_receiver(broken)
    await gateway.create_hook(name="ce", triggerId="credentials-exchange", url=receiver.url(), enabled=True)

    with pytest.raises(HookFailed) as raised:
        await invoke("sync", gateway, "credentials-exchange", CE)

    assert raised.value.name == "ServerError" and raised.value.oauth_error == "server_error"
    assert "'ce'" in raised.value.message


@pytest.mark.parametrize("mode", MODES)
async def test_send_phone_message_returns_success_or_the_error(
    gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]], mode: str
) -> None:
    with pytest.raises(HookError) as raised:  # no hook: the gateway answers an error
        await invoke(mode, gateway, "send-phone-message", PHONE)
    assert (raised.value.name, raised.value.message) == ("SendPhoneMessageError", "no hook configured")

    await hook_for(
        gateway, make_receiver, "send-phone-message", {"status": "success", "data": {"sid": "SM1"}}
    )

    assert await invoke(mode, gateway, "send-phone-message", PHONE) == SendPhoneMessageResult(
        data={"sid": "SM1"}
    )


async def test_with_no_hook_credentials_exchange_keeps_the_requested_scope(gateway: Gateway) -> None:
    assert await invoke("async", gateway, "credentials-exchange", CE) == CredentialsExchangeResult(
        scope=["read"]
    )


@pytest.mark.parametrize("mode", MODES)
async def test_the_call_ends_at_its_deadline(
    gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]], mode: str
) -> None:
    release = asyncio.Event()

    async def slow(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        try:
            await asyncio.wait_for(release.wait(), timeout=10)
        except TimeoutError:
            pass
        return web.json_response({"status": "success", "data": {"scope": []}})

    receiver = await make_receiver(slow)
    await gateway.create_hook(name="ce", triggerId="credentials-exchange", url=receiver.url(), enabled=True)
    try:
        with pytest.raises(DeadlineExceeded):
            await invoke(mode, gateway, "credentials-exchange", CE, deadline_s=0.5)
        assert len(receiver.requests) == 1  # the hook was being called when the caller gave up
    finally:
        release.set()


@pytest.mark.parametrize("mode", MODES)
async def test_emit_returns_the_stored_event_and_an_idempotency_key_makes_a_repeat_the_same(
    gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]], mode: str
) -> None:
    receiver = await make_receiver()
    hook = await gateway.create_hook(triggerId="post-user-registration", url=receiver.url(), enabled=True)

    async def emit(key: str | None) -> Any:
        if mode == "async":
            async with AsyncAuthServerClient(root_url(gateway), forwarder(gateway)) as sdk:
                return await sdk.emit("acme", "post-user-registration", CREATED, idempotency_key=key)

        def run() -> Any:
            with AuthServerClient(root_url(gateway), forwarder(gateway)) as sdk:
                return sdk.emit("acme", "post-user-registration", CREATED, idempotency_key=key)

        return await asyncio.to_thread(run)

    first = await emit("signup-u1")
    again = await emit("signup-u1")
    other = await emit(None)

    assert first.event_id.startswith("evt_") and not first.replayed
    assert [d.hook_id for d in first.deliveries] == [hook["id"]]
    assert (again.event_id, again.deliveries, again.replayed) == (first.event_id, first.deliveries, True)
    assert other.event_id != first.event_id
    delivered = await gateway.wait_delivery(first.deliveries[0].delivery_id, status="succeeded")
    assert delivered["eventId"] == first.event_id
    await receiver.wait_for(2)
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 2  # one per event, not per call


async def test_the_gateways_refusals_are_typed(gateway: Gateway) -> None:
    with pytest.raises(Unauthorized):
        await invoke("async", gateway, "credentials-exchange", CE, token="not-a-token")
    with pytest.raises(Forbidden):  # a token of another tenant
        await invoke(
            "async", gateway, "credentials-exchange", CE, token=gateway.token("other", (SCOPE_FORWARD,))
        )
    with pytest.raises(BadRequest) as raised:
        await invoke("sync", gateway, "credentials-exchange", {"client": {"id": "c1"}, "scope": []})
    assert raised.value.status == 400 and "audience" in raised.value.message

    async with AsyncAuthServerClient(root_url(gateway), gateway.token(None, (SCOPE_FORWARD,))) as sdk:
        with pytest.raises(NotFound):
            await sdk.invoke("nobody", "credentials-exchange", CE)
        with pytest.raises(ValueError):
            await sdk.invoke("acme", "post-user-registration", CREATED)  # type: ignore[call-overload]


async def test_an_unreachable_gateway_is_a_transport_error(gateway: Gateway) -> None:
    with socket.socket() as s:  # a port that nothing listens on once this socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(TransportError):
        await invoke("async", gateway, "credentials-exchange", CE, base=f"http://127.0.0.1:{port}")


async def test_a_token_function_is_asked_for_every_request(gateway: Gateway) -> None:
    asked: list[int] = []

    def token() -> str:
        asked.append(1)
        return forwarder(gateway)

    async with AsyncAuthServerClient(root_url(gateway), token) as sdk:
        for _ in range(3):
            await sdk.invoke("acme", "credentials-exchange", CE)

    assert len(asked) == 3
