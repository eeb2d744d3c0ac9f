"""The Authlib integration (integrations/authlib/) end to end: a real Authlib authorization
server (Flask, served by werkzeug on loopback) issues `client_credentials` tokens through a
running gateway and real receivers written with the SDK's receiver helper."""

from __future__ import annotations

import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flask
import httpx
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin
from authlib.oauth2.rfc6749.util import list_to_scope, scope_to_list
from conftest import Gateway
from instances import free_port
from joserfc.jwk import RSAKey
from sdk_live import root_url
from werkzeug.serving import make_server

from gateway.auth import SCOPE_FORWARD
from gateway.client import (
    AuthServerClient,
    CredentialsExchangeEvent,
    Envelope,
    Receiver,
    answers,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integrations" / "authlib"))
from hooks_gateway_authlib import (  # noqa: E402 - the integration is a module beside the gateway
    CredentialsExchange,
    HooksClientCredentialsGrant,
    HooksJWTBearerTokenGenerator,
)

ISSUER = "https://auth.test.example"
AUDIENCE = "https://api.example.com"
NS = "https://example.com/"
SIGNING_KEY = RSAKey.generate_key(2048, private=True)
PUBLIC_PEM = SIGNING_KEY.as_pem(private=False)

# The integration does not touch the store: the gateway's invoke path is covered on PostgreSQL by
# tests/test_sdk_auth_server.py, and a second backend would double these tests' time for nothing.
pytestmark = pytest.mark.sqlite_only


@dataclass
class OAuthClient(ClientMixin):  # type: ignore[misc]
    """A confidential client of the test auth server (Authlib's ClientMixin)."""

    client_id: str
    client_secret: str
    scope: str
    client_name: str
    metadata: dict[str, str] = field(default_factory=dict)

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = set(self.scope.split())
        return list_to_scope([s for s in scope_to_list(scope) or [] if s in allowed])  # type: ignore[no-any-return]

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return client_secret == self.client_secret

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method == "client_secret_basic"

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


CLIENT = OAuthClient(
    client_id="inventory",
    client_secret="inventory-secret",
    scope="read write",
    client_name="Inventory Service",
    metadata={"tier": "gold"},
)


@dataclass
class AuthServer:
    base: str
    saved: list[dict[str, Any]]

    async def token(self, *, scope: str = "read", audience: str | None = AUDIENCE) -> httpx.Response:
        data = {"grant_type": "client_credentials", "scope": scope}
        if audience is not None:
            data["audience"] = audience
        async with httpx.AsyncClient() as http:
            return await http.post(
                f"{self.base}/oauth/token",
                data=data,
                auth=(CLIENT.client_id, CLIENT.client_secret),
                headers={"User-Agent": "inventory-service/2.1"},
            )


@contextmanager
def authlib_serving(exchange: CredentialsExchange, generator: Any = None) -> Iterator[AuthServer]:
    """A real Authlib authorization server on a loopback port, its token endpoint wired to the
    gateway by the integration; `generator`: the client_credentials token generator."""
    saved: list[dict[str, Any]] = []
    app = flask.Flask("authlib-test")
    server = AuthorizationServer(
        app,
        query_client={CLIENT.client_id: CLIENT}.get,
        save_token=lambda token, request: saved.append(token),
    )
    server.register_token_generator(
        "client_credentials", generator or HooksJWTBearerTokenGenerator(ISSUER, key=SIGNING_KEY)
    )
    server.register_grant(HooksClientCredentialsGrant, [exchange])
    app.add_url_rule("/oauth/token", view_func=server.create_token_response, methods=["POST"])

    http_server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    thread.start()
    try:
        yield AuthServer(base=f"http://127.0.0.1:{http_server.server_port}", saved=saved)
    finally:
        http_server.shutdown()
        http_server.server_close()
        thread.join(timeout=10)
        exchange.gateway.close()


def hooks_of(gw: Gateway, base: str | None = None, **options: Any) -> CredentialsExchange:
    """The integration, talking to `gw` (or to `base`) with a service token of tenant acme."""
    sdk = AuthServerClient(base or root_url(gw), token=gw.token("acme", (SCOPE_FORWARD,)))
    return CredentialsExchange(gateway=sdk, tenant="acme", **options)


TokenHandler = Callable[[CredentialsExchangeEvent], Envelope]


async def credentials_receiver(
    gw: Gateway, aiohttp_server: Callable[..., Awaitable[TestServer]], on_token: TokenHandler
) -> list[CredentialsExchangeEvent]:
    """An enabled credentials-exchange hook whose receiver verifies the gateway's signature (the
    SDK's receiver helper) and answers with `on_token`; returns the events it got."""
    hook = await gw.create_hook(name="tokens", triggerId="credentials-exchange", url="http://127.0.0.1:9/")
    secret = await gw.signing_secret(hook["id"])
    seen: list[CredentialsExchangeEvent] = []

    async def handle(event: CredentialsExchangeEvent) -> Envelope:
        seen.append(event)
        return on_token(event)

    app = web.Application()
    app.router.add_post("/tokens", Receiver(CredentialsExchangeEvent, secret).aiohttp(handle))
    server = await aiohttp_server(app, host="127.0.0.1")
    resp = await gw.client.patch(
        f"/api/v2/hooks/{hook['id']}",
        json={"url": str(server.make_url("/tokens")), "enabled": True},
        headers=gw.auth(),
    )
    assert resp.status == 200, await resp.text()
    return seen


def decode(access_token: str) -> dict[str, Any]:
    """The access token's claims, after checking its signature, issuer and audience."""
    claims: dict[str, Any] = jwt.decode(
        access_token, PUBLIC_PEM, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER
    )
    return claims


# --- tokens shaped by the hooks --------------------------------------------------------------------


async def test_the_token_carries_the_hooks_scope_and_namespaced_claims_but_not_the_others(
    gateway: Gateway, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    def grant(event: CredentialsExchangeEvent) -> Envelope:
        claims = {f"{NS}tier": event.client.metadata["tier"], "plan": "not namespaced"}
        return answers.grant([*event.scope, "read:reports"], claims)

    seen = await credentials_receiver(gateway, aiohttp_server, grant)
    with authlib_serving(hooks_of(gateway)) as auth:
        resp = await auth.token(scope="read admin")  # admin: not the client's, never forwarded

    assert resp.status_code == 200, resp.text
    body = resp.json()
    claims = decode(body["access_token"])
    assert claims["scope"] == body["scope"] == "read read:reports"
    assert claims[f"{NS}tier"] == "gold"
    assert "plan" not in claims
    assert (claims["client_id"], claims["sub"], claims["iss"]) == ("inventory", "inventory", ISSUER)
    assert auth.saved[0]["access_token"] == body["access_token"]

    [event] = seen
    assert (event.audience, event.scope) == (AUDIENCE, ["read"])
    assert (event.client.id, event.client.name, event.client.tenant) == (
        "inventory",
        "Inventory Service",
        "acme",
    )
    assert event.client.metadata == {"tier": "gold"}
    assert event.context == {"ip": "127.0.0.1", "userAgent": "inventory-service/2.1"}


async def test_a_hook_that_answers_no_scope_resets_the_tokens_scope(
    gateway: Gateway, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    await credentials_receiver(gateway, aiohttp_server, lambda event: answers.success({f"{NS}x": 1}))
    with authlib_serving(hooks_of(gateway)) as auth:
        resp = await auth.token(scope="read write")

    assert resp.status_code == 200, resp.text
    claims = decode(resp.json()["access_token"])
    assert (claims["scope"], claims[f"{NS}x"]) == ("", 1)
    assert "scope" not in resp.json()


# --- refusals and failures are OAuth2 errors -------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "status", "error", "description"),
    [
        (answers.invalid_scope("write is not for you"), 400, "invalid_scope", "write is not for you"),
        (answers.invalid_request("say which warehouse"), 400, "invalid_request", "say which warehouse"),
        # RFC 6749 allows no quote, backslash or non-ASCII in error_description: replaced, not a 500
        (answers.invalid_scope('"admin" refusé \\ here'), 400, "invalid_scope", "?admin? refus? ? here"),
        # an error the point does not pass through: the gateway answers ServerError
        (
            answers.error("Error", "db down at 10.0.0.7"),
            500,
            "server_error",
            "the credentials-exchange hooks failed",
        ),
    ],
    ids=["invalid_scope", "invalid_request", "unsafe-characters", "other-error"],
)
async def test_a_hooks_refusal_is_the_oauth2_error_it_names_and_no_token(
    gateway: Gateway,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    answer: Envelope,
    status: int,
    error: str,
    description: str,
) -> None:
    await credentials_receiver(gateway, aiohttp_server, lambda event: answer)
    with authlib_serving(hooks_of(gateway)) as auth:
        resp = await auth.token()

    assert resp.status_code == status
    assert resp.json() == {"error": error, "error_description": description}
    assert auth.saved == []


async def test_a_receiver_that_fails_gives_server_error_without_its_details(
    gateway: Gateway, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    def crash(event: CredentialsExchangeEvent) -> Envelope:
        raise RuntimeError("secret internals")  # the receiver answers HTTP 500

    seen = await credentials_receiver(gateway, aiohttp_server, crash)
    with authlib_serving(hooks_of(gateway)) as auth:
        resp = await auth.token()

    assert len(seen) >= 1
    assert resp.status_code == 500
    assert resp.json() == {
        "error": "server_error",
        "error_description": "the credentials-exchange hooks failed",
    }
    assert auth.saved == []


async def test_a_request_without_audience_is_invalid_request_and_reaches_no_hook(
    gateway: Gateway, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    seen = await credentials_receiver(gateway, aiohttp_server, lambda event: answers.grant(event.scope))
    with authlib_serving(hooks_of(gateway)) as auth:
        resp = await auth.token(audience=None)

    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid_request"
    assert seen == []


async def test_claims_with_a_token_generator_that_cannot_carry_them_fail_closed(
    gateway: Gateway, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    from authlib.oauth2.rfc6750 import BearerTokenGenerator

    await credentials_receiver(
        gateway, aiohttp_server, lambda event: answers.grant(event.scope, {f"{NS}x": 1})
    )
    opaque = BearerTokenGenerator(lambda **kwargs: "opaque-token")
    with authlib_serving(hooks_of(gateway), generator=opaque) as auth:
        resp = await auth.token()

    assert resp.status_code == 500
    assert resp.json()["error"] == "server_error"
    assert auth.saved == []


# --- the gateway unreachable -----------------------------------------------------------------------


async def test_an_unreachable_gateway_fails_closed_by_default(gateway: Gateway) -> None:
    with authlib_serving(hooks_of(gateway, f"http://127.0.0.1:{free_port()}")) as auth:
        resp = await auth.token()

    assert resp.status_code == 500
    assert resp.json() == {"error": "server_error", "error_description": "the hooks gateway is unavailable"}
    assert auth.saved == []


async def test_an_unreachable_gateway_with_fail_open_issues_the_token_as_requested(gateway: Gateway) -> None:
    with authlib_serving(hooks_of(gateway, f"http://127.0.0.1:{free_port()}", fail_open=True)) as auth:
        resp = await auth.token(scope="read write")

    assert resp.status_code == 200, resp.text
    claims = decode(resp.json()["access_token"])
    assert claims["scope"] == "read write"
    assert not [name for name in claims if name.startswith("http")]


async def test_fail_open_does_not_skip_a_refusal_of_the_gateway(gateway: Gateway) -> None:
    """A wrong service token is a misconfiguration, not an outage: no token, even when open."""
    sdk = AuthServerClient(root_url(gateway), token=gateway.token("other", (SCOPE_FORWARD,)))
    exchange = CredentialsExchange(gateway=sdk, tenant="acme", fail_open=True)
    with authlib_serving(exchange) as auth:
        resp = await auth.token()

    assert resp.status_code == 500
    assert resp.json()["error"] == "server_error"


async def test_a_gateway_that_does_not_answer_in_time_fails_closed(
    gateway: Gateway, unaccepted_port: int
) -> None:
    hooks = hooks_of(gateway, f"http://127.0.0.1:{unaccepted_port}", deadline_s=0.5)
    with authlib_serving(hooks) as auth:
        resp = await auth.token()

    assert resp.status_code == 500
    assert resp.json() == {"error": "server_error", "error_description": "the hooks gateway is unavailable"}
