"""Better Auth, with the plugin of integrations/better-auth, forwards its signups and password
changes to the gateway: a real Better Auth server (its example server, memory adapter), a
gateway process and loopback receivers; users sign up through Better Auth's own endpoint."""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from conftest import Received, Receiver
from node_integrations import (
    INTEGRATIONS,
    GatewayProcess,
    NodeServer,
    deliveries_of,
    envelope,
    error_envelope,
    gateway_process,
    hook,
    node_server,
    require_integrations,
)
from standardwebhooks import Webhook

SCRIPT = INTEGRATIONS / "better-auth" / "example-server.mjs"
PASSWORD = "correct-horse-battery-staple"

MakeReceiver = Callable[..., Awaitable[Receiver]]
_emails = itertools.count(1)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    require_integrations("better-auth")
    with gateway_process(tmp_path_factory.mktemp("gateway")) as gw:
        yield gw


@pytest.fixture(scope="module")
def server(gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeServer]:
    log = tmp_path_factory.mktemp("better-auth") / "server.log"
    with node_server(SCRIPT, gateway.gateway_env(), log) as auth_server:
        yield auth_server


def new_email(domain: str = "example.com") -> str:
    return f"user{next(_emails)}@{domain}"


def browser(server: NodeServer) -> httpx.AsyncClient:
    """A client that keeps Better Auth's session cookie and sends the Origin a browser would."""
    return httpx.AsyncClient(base_url=server.url, headers={"Origin": server.url})


async def sign_up(http: httpx.AsyncClient, email: str) -> httpx.Response:
    body = {"name": "Jane Doe", "email": email, "password": PASSWORD}
    return await http.post("/api/auth/sign-up/email", json=body)


async def stored_users(server: NodeServer, email: str) -> list[dict[str, Any]]:
    """The users with this email in the server's memory adapter."""
    async with httpx.AsyncClient() as http:
        users = (await http.get(f"{server.url}/example/users")).json()["users"]
    return [u for u in users if u["email"] == email]


def answering(body: dict[str, Any]) -> Callable[..., Awaitable[web.StreamResponse]]:
    async def respond(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(body)

    return respond


def verified(received: Received, signing_secret: str) -> dict[str, Any]:
    """The delivery's body, its Standard Webhooks signature checked by the standardwebhooks library."""
    headers = {k.lower(): v for k, v in received.headers.items()}
    return Webhook(signing_secret).verify(received.body, headers)  # type: ignore[no-any-return]


async def test_signup_stores_the_metadata_the_receiver_added(
    gateway: GatewayProcess, server: NodeServer, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver(answering(envelope({
        "user": {"user_metadata": {"plan": "trial"}, "app_metadata": {"tier": "gold"}},
    })))
    email = new_email()
    async with hook(gateway, "pre-user-registration", receiver.url()), browser(server) as http:
        response = await sign_up(http, email)
        assert response.status_code == 200, response.text
        session = await http.get("/api/auth/get-session")

    # Read back through Better Auth's own API, and from its database.
    assert session.status_code == 200, session.text
    user = session.json()["user"]
    assert user["email"] == email
    assert user["userMetadata"] == {"plan": "trial"}
    assert user["appMetadata"] == {"tier": "gold"}
    [stored] = await stored_users(server, email)
    assert stored["userMetadata"] == {"plan": "trial"}
    assert stored["appMetadata"] == {"tier": "gold"}
    # The receiver got Auth0's pre-user-registration event.
    event = receiver.requests[0].json()
    assert event["user"]["email"] == email
    assert event["user"]["tenant"] == "acme"
    assert event["context"]["connection"]["name"] == "email-password"


async def test_a_signup_cannot_set_app_metadata_itself(
    gateway: GatewayProcess, server: NodeServer
) -> None:
    email = new_email()
    async with browser(server) as http:
        response = await http.post("/api/auth/sign-up/email", json={
            "name": "Mallory", "email": email, "password": PASSWORD, "appMetadata": {"role": "admin"}})

    assert response.status_code == 400, response.text
    assert await stored_users(server, email) == []


async def test_a_denied_signup_answers_the_friendly_message_and_stores_no_user(
    gateway: GatewayProcess, server: NodeServer, make_receiver: MakeReceiver
) -> None:
    friendly = "Sign-ups from example.org are closed. Ask your administrator for an invitation."
    receiver = await make_receiver(answering(error_envelope(
        "PreUserRegistrationError", "blocked domain example.org", friendly)))
    welcome = await make_receiver()
    email = new_email("example.org")
    async with (
        hook(gateway, "pre-user-registration", receiver.url()),
        hook(gateway, "post-user-registration", welcome.url()) as post_hook,
        browser(server) as http,
    ):
        response = await sign_up(http, email)
        deliveries = await deliveries_of(gateway, post_hook["id"])

    assert response.status_code == 400, response.text
    assert response.json()["message"] == friendly
    assert "blocked domain" not in response.text  # the log message stays with the tenant
    assert await stored_users(server, email) == []
    assert deliveries == []  # no post-user-registration event for a user that does not exist


async def test_post_user_registration_reaches_a_second_receiver_signed(
    gateway: GatewayProcess, server: NodeServer, make_receiver: MakeReceiver
) -> None:
    metadata = await make_receiver(answering(envelope({"user": {"app_metadata": {"tier": "gold"}}})))
    welcome = await make_receiver()
    email = new_email()
    async with (
        hook(gateway, "pre-user-registration", metadata.url()),
        hook(gateway, "post-user-registration", welcome.url()) as post_hook,
        browser(server) as http,
    ):
        response = await sign_up(http, email)
        assert response.status_code == 200, response.text
        [received] = await welcome.wait_for(1)
        assert len(await deliveries_of(gateway, post_hook["id"])) == 1  # one event, stored before the answer

    event = verified(received, post_hook["signingSecret"])
    [stored] = await stored_users(server, email)
    assert event["user"]["id"] == stored["id"] == response.json()["user"]["id"]
    assert event["user"]["email"] == email
    assert event["user"]["app_metadata"] == {"tier": "gold"}
    assert event["context"]["connection"]["tenant"] == "acme"


async def test_a_password_change_emits_post_change_password(
    gateway: GatewayProcess, server: NodeServer, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver()
    email = new_email()
    async with browser(server) as http:
        signed_up = await sign_up(http, email)
        assert signed_up.status_code == 200, signed_up.text
        async with hook(gateway, "post-change-password", receiver.url()) as change_hook:
            changed = await http.post("/api/auth/change-password", json={
                "currentPassword": PASSWORD, "newPassword": "a-new-and-longer-passphrase"})
            assert changed.status_code == 200, changed.text
            [received] = await receiver.wait_for(1)
            assert len(await deliveries_of(gateway, change_hook["id"])) == 1

    event = verified(received, change_hook["signingSecret"])
    assert event["user"]["id"] == signed_up.json()["user"]["id"]
    assert event["user"]["email"] == email
    assert isinstance(event["user"]["last_password_reset"], str)
    assert json.loads(received.body)["context"]["connection"]["tenant"] == "acme"


async def test_a_password_reset_emits_post_change_password(
    gateway: GatewayProcess, server: NodeServer, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver()
    email = new_email()
    async with browser(server) as http:
        signed_up = await sign_up(http, email)
        assert signed_up.status_code == 200, signed_up.text
    async with hook(gateway, "post-change-password", receiver.url()) as change_hook, browser(server) as http:
        asked = await http.post("/api/auth/request-password-reset", json={"email": email})
        assert asked.status_code == 200, asked.text
        outbox = (await http.get("/example/outbox")).json()["messages"]
        [token] = [m["token"] for m in outbox if m["to"] == email]
        reset = await http.post("/api/auth/reset-password",
                                json={"token": token, "newPassword": "a-reset-passphrase"})
        assert reset.status_code == 200, reset.text
        [received] = await receiver.wait_for(1)
        assert len(await deliveries_of(gateway, change_hook["id"])) == 1

    event = verified(received, change_hook["signingSecret"])
    assert event["user"]["id"] == signed_up.json()["user"]["id"]
    assert event["user"]["email"] == email
