"""node-oidc-provider, wired with integrations/oidc-provider, issues client_credentials tokens
through the gateway's credentials-exchange point: a real provider (its example server), a
gateway process and a loopback receiver; tokens are requested over HTTP and their JWTs
verified with the provider's JWKS."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from aiohttp import web
from conftest import Received, Receiver
from instances import free_port
from node_integrations import (
    INTEGRATIONS,
    GatewayProcess,
    NodeServer,
    envelope,
    error_envelope,
    gateway_process,
    hook,
    node_server,
    require_integrations,
)

SCRIPT = INTEGRATIONS / "oidc-provider" / "example-server.mjs"
RESOURCE = "https://api.example.test/"  # an identifier only: never resolved
SECRET = "svc-secret-that-is-long-enough-0123456789"
CLIENT = {"client_id": "inventory", "client_secret": SECRET, "client_name": "Inventory Service",
          "scope": "read:items write:items", "client_metadata": {"tier": "gold"}}
OPEN_CLIENT = {"client_id": "status-page", "client_secret": SECRET, "scope": "read:items"}
TIER_CLAIM = "https://acme.test/tier"

MakeReceiver = Callable[..., Awaitable[Receiver]]


def provider_env(gateway: dict[str, str], *clients: dict[str, Any], **extra: str) -> dict[str, str]:
    return {**gateway, "OIDC_CLIENTS": json.dumps(list(clients)), "OIDC_RESOURCE": RESOURCE, **extra}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    require_integrations("oidc-provider")
    with gateway_process(tmp_path_factory.mktemp("gateway")) as gw:
        yield gw


@pytest.fixture(scope="module")
def provider(gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeServer]:
    log = tmp_path_factory.mktemp("oidc") / "provider.log"
    with node_server(SCRIPT, provider_env(gateway.gateway_env(), CLIENT), log) as server:
        yield server


async def token_request(issuer: str, client: dict[str, Any], scope: str) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{issuer}/token", data={"grant_type": "client_credentials", "scope": scope},
            auth=(client["client_id"], client["client_secret"]),
        )


async def verified_claims(issuer: str, access_token: str) -> dict[str, Any]:
    """The access token's claims, its RS256 signature checked against the provider's JWKS."""
    async with httpx.AsyncClient() as http:
        jwks = (await http.get(f"{issuer}/jwks")).json()
    kid = jwt.get_unverified_header(access_token)["kid"]
    key = next(jwt.PyJWK(k) for k in jwks["keys"] if k["kid"] == kid)
    return jwt.decode(access_token, key, algorithms=["RS256"], audience=RESOURCE, issuer=issuer)


def answering(body: dict[str, Any]) -> Callable[..., Awaitable[web.StreamResponse]]:
    async def respond(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
        return web.json_response(body)

    return respond


async def test_the_token_carries_the_scope_and_namespaced_claims_the_receiver_answered(
    gateway: GatewayProcess, provider: NodeServer, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver(answering(envelope({
        "scope": ["read:items", "read:reports"],
        TIER_CLAIM: "gold",
        "tier": "plain",  # not namespaced: Auth0 drops it, and so does the token
    })))
    async with hook(gateway, "credentials-exchange", receiver.url()):
        response = await token_request(provider.url, CLIENT, "read:items")

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["scope"] == "read:items read:reports"
    claims = await verified_claims(provider.url, answer["access_token"])
    assert claims["scope"] == "read:items read:reports"
    assert claims[TIER_CLAIM] == "gold"
    assert "tier" not in claims
    assert claims["client_id"] == "inventory"
    # The receiver got Auth0's credentials-exchange event, built from the provider's client.
    event = receiver.requests[0].json()
    assert event["audience"] == RESOURCE
    assert event["client"] == {"id": "inventory", "name": "Inventory Service", "tenant": "acme",
                               "metadata": {"tier": "gold"}}
    assert event["scope"] == ["read:items"]


async def test_invalid_scope_from_the_receiver_is_the_oauth2_invalid_scope_error(
    gateway: GatewayProcess, provider: NodeServer, make_receiver: MakeReceiver
) -> None:
    refusal = "write:items is not for batch jobs"
    receiver = await make_receiver(answering(error_envelope("InvalidScopeError", refusal)))
    async with hook(gateway, "credentials-exchange", receiver.url()):
        response = await token_request(provider.url, CLIENT, "read:items write:items")

    assert response.status_code == 400, response.text
    assert response.json() == {"error": "invalid_scope", "error_description": refusal}
    assert "access_token" not in response.text


async def test_a_receiver_error_is_the_oauth2_server_error(
    gateway: GatewayProcess, provider: NodeServer, make_receiver: MakeReceiver
) -> None:
    # An error name that may not pass through: the gateway answers ServerError.
    receiver = await make_receiver(answering(error_envelope("QuotaError", "the billing system said no")))
    async with hook(gateway, "credentials-exchange", receiver.url()):
        response = await token_request(provider.url, CLIENT, "read:items")

    assert response.status_code == 500, response.text
    body = response.json()
    assert body["error"] == "server_error"
    assert "billing" not in body["error_description"]  # the hook's message is for the tenant's logs
    assert len(receiver.requests) == 1


async def test_with_the_gateway_unreachable_a_fail_closed_provider_answers_server_error(
    tmp_path: Path,
) -> None:
    require_integrations("oidc-provider")
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gateway = {"GATEWAY_URL": closed, "GATEWAY_TOKEN": "unused", "GATEWAY_TENANT": "acme"}
    env = provider_env(gateway, CLIENT, OPEN_CLIENT, HOOKS_FAIL_OPEN_CLIENTS="status-page")
    with node_server(SCRIPT, env, tmp_path / "provider.log") as provider:
        refused = await token_request(provider.url, CLIENT, "read:items")
        issued = await token_request(provider.url, OPEN_CLIENT, "read:items")
        logs = provider.logs()

    assert refused.status_code == 500, refused.text
    assert refused.json()["error"] == "server_error"
    assert "access_token" not in refused.text
    # A client configured to fail open gets its token as requested, without the hooks.
    assert issued.status_code == 200, issued.text
    assert issued.json()["scope"] == "read:items"
    assert "refusing the token (fail closed)" in logs
    assert "issuing the token as requested (fail open)" in logs
