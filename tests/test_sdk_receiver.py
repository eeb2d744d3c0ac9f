"""The receiver helper against real deliveries: the gateway signs and sends, the helper
verifies and parses, and its answers reach the auth server through the gateway. Tampered,
stale and foreign requests are refused. The aiohttp, Starlette and Flask adapters each run
in a real server on loopback (uvicorn and werkzeug for the last two)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import Gateway, Received, Receiver
from sdk_live import root_url

from gateway.auth import SCOPE_FORWARD
from gateway.client import (
    AsyncAuthServerClient,
    CredentialsExchangeEvent,
    CredentialsExchangeResult,
    Denied,
    Envelope,
    EventInvalid,
    PostChangePasswordEvent,
    PostUserRegistrationEvent,
    PreUserRegistrationEvent,
    PreUserRegistrationResult,
    SendPhoneMessageEvent,
    SignatureInvalid,
    answers,
)
from gateway.client import Receiver as WebhookReceiver

# The SDK's behaviour does not depend on the gateway's database: one backend is enough (the
# gateway's own paths run on both in their own tests).
pytestmark = pytest.mark.sqlite_only

ROOT = Path(__file__).resolve().parent.parent
CE = {
    "audience": "https://api.example.com",
    "client": {"id": "c1", "name": "App", "metadata": {"tier": "gold"}},
    "scope": ["read"],
    "context": {"ip": "203.0.113.7"},
}
SIGNUP = {
    "user": {
        "tenant": "acme",
        "email": "jane@example.com",
        "emailVerified": False,
        "user_metadata": {"lang": "fr"},
        "app_metadata": {},
    },
    "context": {"connection": {"id": "con_1", "name": "db", "tenant": "acme"}},
}
PHONE = {
    "recipient": "+15555550123",
    "text": "Your code is 123456",
    "context": {
        "message_type": "sms",
        "action": "enrollment",
        "language": "en",
        "code": "123456",
        "ip": "203.0.113.7",
        "user_agent": "test",
        "user": {"user_id": "u1"},
    },
}
CREATED = {
    "user": {"id": "u1", "email": "jane@example.com", "username": "jane"},
    "context": {"connection": {"id": "con_1"}},
}
PASSWORD = {
    "user": {"id": "u1", "email": "jane@example.com", "last_password_reset": "2026-01-15T09:30:00.000Z"},
    "context": {"connection": {"id": "con_1"}},
}

POINTS = {
    "credentials-exchange": (CredentialsExchangeEvent, CE),
    "pre-user-registration": (PreUserRegistrationEvent, SIGNUP),
    "send-phone-message": (SendPhoneMessageEvent, PHONE),
    "post-user-registration": (PostUserRegistrationEvent, CREATED),
    "post-change-password": (PostChangePasswordEvent, PASSWORD),
}
BLOCKING = {"credentials-exchange", "pre-user-registration", "send-phone-message"}


def forward_headers(gw: Gateway) -> dict[str, str]:
    return {"Authorization": f"Bearer {gw.token('acme', (SCOPE_FORWARD,))}"}


async def captured(
    gw: Gateway,
    make_receiver: Callable[..., Awaitable[Receiver]],
    trigger: str,
    body: dict[str, Any],
    **hook: Any,
) -> tuple[Received, str]:
    """One real delivery of `body` at `trigger`, as the receiver got it, and the hook's secret."""
    receiver = await make_receiver()
    created = await gw.create_hook(name="h", triggerId=trigger, url=receiver.url(), enabled=True, **hook)
    resp = await gw.forward(trigger, body)
    assert resp.status in (200, 202), await resp.text()
    [request] = await receiver.wait_for(1)
    return request, await gw.signing_secret(created["id"])


@pytest.mark.parametrize("trigger", list(POINTS))
async def test_a_real_delivery_of_each_point_verifies_and_parses(
    gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]], trigger: str
) -> None:
    event_type, body = POINTS[trigger]
    request, secret = await captured(gateway, make_receiver, trigger, body)

    event = WebhookReceiver(event_type, secret).verify(request.body, request.headers)

    assert type(event) is event_type
    assert event.body == body and event.trigger == trigger
    assert event.webhook_id == request.headers["webhook-id"]
    assert event.timestamp == int(request.headers["webhook-timestamp"])
    if isinstance(event, CredentialsExchangeEvent):
        assert (event.audience, event.scope, event.client.id, event.client.metadata) == (
            "https://api.example.com",
            ["read"],
            "c1",
            {"tier": "gold"},
        )
    elif isinstance(event, PreUserRegistrationEvent):
        assert (event.user.email, event.user.email_verified, event.user.user_metadata) == (
            "jane@example.com",
            False,
            {"lang": "fr"},
        )
        assert event.context["connection"]["id"] == "con_1"
    elif isinstance(event, SendPhoneMessageEvent):
        assert (event.recipient, event.code, event.message_type, event.action) == (
            "+15555550123",
            "123456",
            "sms",
            "enrollment",
        )
    elif isinstance(event, PostUserRegistrationEvent):
        assert (event.user.id, event.user.username) == ("u1", "jane")
    else:
        assert event.user.last_password_reset == "2026-01-15T09:30:00.000Z"


async def test_a_tampered_or_foreign_request_is_refused(
    gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]]
) -> None:
    request, secret = await captured(gateway, make_receiver, "post-user-registration", CREATED)
    receiver = WebhookReceiver(PostUserRegistrationEvent, secret)
    other = await gateway.create_hook(name="other", triggerId="post-change-password")
    headers = request.headers

    tampered_body = request.body.replace(b'"u1"', b'"u2"')
    forged = dict(headers, **{"webhook-signature": "v1," + "A" * 44})
    missing = {k: v for k, v in headers.items() if k.lower() != "webhook-signature"}
    shifted = dict(headers, **{"webhook-timestamp": str(int(headers["webhook-timestamp"]) + 1)})

    for body, hdrs in [
        (tampered_body, headers),
        (request.body, forged),
        (request.body, missing),
        (request.body, shifted),
    ]:
        with pytest.raises(SignatureInvalid):
            receiver.verify(body, hdrs)
    with pytest.raises(SignatureInvalid):
        WebhookReceiver(PostUserRegistrationEvent, await gateway.signing_secret(other["id"])).verify(
            request.body, headers
        )
    assert receiver.verify(request.body, headers).user.id == "u1"  # the real one still passes


async def test_a_stale_or_future_request_is_refused(
    gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]]
) -> None:
    request, secret = await captured(gateway, make_receiver, "post-user-registration", CREATED)
    sent = int(request.headers["webhook-timestamp"])

    def at(now: float) -> WebhookReceiver[PostUserRegistrationEvent]:
        return WebhookReceiver(PostUserRegistrationEvent, secret, clock=lambda: now, tolerance_s=300)

    assert at(sent + 300).verify(request.body, request.headers).user.id == "u1"
    for now in (sent + 301, sent - 301, sent + 86_400):
        with pytest.raises(SignatureInvalid, match="too (old|new)"):
            at(now).verify(request.body, request.headers)


async def test_during_a_rotation_both_the_old_and_the_new_secret_verify(
    gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]]
) -> None:
    receiver = await make_receiver()
    hook = await gateway.create_hook(triggerId="post-user-registration", url=receiver.url(), enabled=True)
    old = await gateway.signing_secret(hook["id"])
    resp = await gateway.client.post(
        f"/api/v2/hooks/{hook['id']}/signing-secret/rotate", headers=gateway.auth()
    )
    new = (await resp.json())["secret"]
    await gateway.forward("post-user-registration", CREATED)
    [request] = await receiver.wait_for(1)

    assert len(request.headers["webhook-signature"].split()) == 2
    for secrets in (old, new, [old, new]):
        assert WebhookReceiver(PostUserRegistrationEvent, secrets).verify(request.body, request.headers)


async def test_the_standard_format_is_unwrapped_and_another_points_event_refused(
    gateway: Gateway, make_receiver: Callable[..., Awaitable[Receiver]]
) -> None:
    request, secret = await captured(
        gateway, make_receiver, "post-change-password", PASSWORD, format="standard"
    )
    assert set(json.loads(request.body)) == {"type", "timestamp", "data"}

    event = WebhookReceiver(PostChangePasswordEvent, secret).verify(request.body, request.headers)

    assert event.body == PASSWORD
    with pytest.raises(EventInvalid):
        WebhookReceiver(PostUserRegistrationEvent, secret).verify(request.body, request.headers)


# --- the framework adapters, each in a real server ---------------------------------------------


async def new_hook(gw: Gateway, trigger: str) -> tuple[str, str]:
    """A hook of `trigger` (its receiver not yet running): its id and signing secret."""
    hook = await gw.create_hook(name=trigger, triggerId=trigger, url="http://127.0.0.1:9/")
    return hook["id"], await gw.signing_secret(hook["id"])


async def point(gw: Gateway, hook_id: str, url: str) -> None:
    """Send the hook's deliveries to `url` from now on."""
    resp = await gw.client.patch(
        f"/api/v2/hooks/{hook_id}", json={"url": url, "enabled": True}, headers=gw.auth()
    )
    assert resp.status == 200, await resp.text()


async def invoke(gw: Gateway, trigger: str, body: dict[str, Any]) -> Any:
    async with AsyncAuthServerClient(root_url(gw), gw.token("acme", (SCOPE_FORWARD,))) as sdk:
        return await sdk.invoke("acme", trigger, body)  # type: ignore[call-overload]


async def test_the_aiohttp_adapter_answers_through_the_gateway_and_refuses_forgeries(
    gateway: Gateway, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    hook_id, secret = await new_hook(gateway, "credentials-exchange")

    async def grant(event: CredentialsExchangeEvent) -> Envelope:
        return answers.grant([*event.scope, "read:reports"], {"https://example.com/client": event.client.id})

    app = web.Application()
    app.router.add_post("/ce", WebhookReceiver(CredentialsExchangeEvent, secret).aiohttp(grant))
    server = await aiohttp_server(app, host="127.0.0.1")
    await point(gateway, hook_id, str(server.make_url("/ce")))

    result = await invoke(gateway, "credentials-exchange", CE)

    assert result == CredentialsExchangeResult(
        scope=["read", "read:reports"], claims={"https://example.com/client": "c1"}
    )
    async with httpx.AsyncClient() as http:
        forged = await http.post(
            str(server.make_url("/ce")),
            content=json.dumps(CE),
            headers={
                "webhook-id": "msg_1",
                "webhook-timestamp": str(int(time.time())),
                "webhook-signature": "v1,AAAA",
            },
        )
        large = await http.post(str(server.make_url("/ce")), content=b"x" * 1_048_577)
    assert forged.status_code == 401
    assert forged.json() == {
        "statusCode": 401,
        "error": "Unauthorized",
        "message": "webhook signature refused: no matching signature found",
    }
    assert large.status_code == 413


@asynccontextmanager
async def uvicorn_serving(app: Any) -> AsyncIterator[str]:
    uvicorn = pytest.importorskip("uvicorn")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):  # bounded: 5 s
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()


async def test_the_starlette_adapter_denies_a_signup_with_the_users_message(gateway: Gateway) -> None:
    pytest.importorskip("starlette")
    from starlette.applications import Starlette

    hook_id, secret = await new_hook(gateway, "pre-user-registration")

    async def screen(event: PreUserRegistrationEvent) -> Envelope:
        if (event.user.email or "").endswith("@blocked.example"):
            return answers.deny("Signups from this domain are closed.", message=f"blocked {event.user.email}")
        return answers.add_metadata(app_metadata={"screened": True})

    app = Starlette()
    app.add_route(
        "/signup", WebhookReceiver(PreUserRegistrationEvent, secret).starlette(screen), methods=["POST"]
    )
    async with uvicorn_serving(app) as base:
        await point(gateway, hook_id, f"{base}/signup")

        allowed = await invoke(gateway, "pre-user-registration", SIGNUP)
        blocked = {**SIGNUP, "user": {**SIGNUP["user"], "email": "eve@blocked.example"}}
        with pytest.raises(Denied) as raised:
            await invoke(gateway, "pre-user-registration", blocked)
        async with httpx.AsyncClient() as http:
            forged = await http.post(f"{base}/signup", json=SIGNUP)

    assert allowed == PreUserRegistrationResult(app_metadata={"screened": True})
    assert raised.value.friendly_message == "Signups from this domain are closed."
    assert raised.value.message == "blocked eve@blocked.example"
    assert forged.status_code == 401 and forged.json()["statusCode"] == 401


@contextmanager
def werkzeug_serving(app: Any) -> Iterator[str]:
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=10)


async def test_the_flask_adapter_sends_a_phone_message_and_answers_success(gateway: Gateway) -> None:
    flask = pytest.importorskip("flask")
    sent: list[tuple[str, str]] = []
    hook_id, secret = await new_hook(gateway, "send-phone-message")

    def send(event: SendPhoneMessageEvent) -> Envelope:
        sent.append((event.recipient, event.text))
        return answers.success({"sid": "SM1"})

    app = flask.Flask("phone")
    app.add_url_rule(
        "/phone", view_func=WebhookReceiver(SendPhoneMessageEvent, secret).flask(send), methods=["POST"]
    )

    with werkzeug_serving(app) as base:
        await point(gateway, hook_id, f"{base}/phone")
        result = await invoke(gateway, "send-phone-message", PHONE)
        async with httpx.AsyncClient() as http:
            forged = await http.post(f"{base}/phone", json=PHONE)

    assert result.data == {"sid": "SM1"}
    assert sent == [("+15555550123", "Your code is 123456")]
    assert forged.status_code == 401 and forged.json()["error"] == "Unauthorized"


# --- the SDK installs light ----------------------------------------------------------------------

HEAVY = [
    "aiohttp",
    "asyncpg",
    "jwt",
    "cryptography",
    "httptools",
    "prometheus_client",
    "jinja2",
    "aiohttp_jinja2",
    "yarl",
    "multidict",
    "uvloop",
    "flask",
    "starlette",
    "gateway.app",
    "gateway.store",
    "gateway.delivery",
    "gateway.transport",
    "gateway.settings",
    "gateway.auth",
]

LIGHT_CHECK = """
import sys, importlib.abc
HEAVY = {heavy!r}
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == h or name.startswith(h + ".") for h in HEAVY):
            raise ImportError("refused: " + name)
        return None
sys.meta_path.insert(0, Refuse())
import gateway.client as sdk
from gateway.signing import headers
body = b'{{"user":{{"id":"u1"}},"context":{{"connection":{{}}}}}}'
secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
event = sdk.Receiver(sdk.PostUserRegistrationEvent, secret, clock=lambda: 1700000000).verify(
    body, headers("msg_1", 1700000000, body, [secret]))
sdk.AuthServerClient("http://127.0.0.1:9", "t").close()
sdk.ManagementClient("http://127.0.0.1:9", "t").close()
print(event.user.id)
"""


def test_the_sdk_imports_and_verifies_without_the_servers_modules() -> None:
    result = subprocess.run(  # noqa: S603 - our own interpreter on our own snippet
        [sys.executable, "-c", LIGHT_CHECK.format(heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "u1"
