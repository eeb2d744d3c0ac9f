"""A small but real OpenID Connect provider for the dashboard's tests: an aiohttp server on
127.0.0.1 with discovery, an authorization endpoint (authorization code + PKCE S256), a token
endpoint (client_secret_basic or client_secret_post) and a JWKS, signing ID tokens with RS256.

It signs in whoever the test says (`provider.user`) without a login form, and can be told to
misbehave the way a hostile or broken provider would (`provider.tamper`)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ssl import SSLContext
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

CLIENT_ID = "hooks-dashboard"
CLIENT_SECRET = "dashboard-client-secret"


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    challenge: str
    nonce: str
    claims: dict[str, Any]


@dataclass
class Provider:
    server: TestServer
    key: rsa.RSAPrivateKey
    kid: str = "key-1"
    user: dict[str, Any] = field(default_factory=lambda: {"sub": "user-1", "email": "ada@example.com"})
    # Misbehaviour: "nonce" (an ID token with another nonce), "audience" (for another client),
    # "signature" (signed by another key), "expired" (an exp in the past).
    tamper: str | None = None
    grants: dict[str, Grant] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    authorize_requests: list[dict[str, str]] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def sign(self, claims: dict[str, Any], key: rsa.RSAPrivateKey | None = None) -> str:
        return jwt.encode(claims, key or self.key, algorithm="RS256", headers={"kid": self.kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def start_provider(
    aiohttp_server: Callable[..., Awaitable[TestServer]], *, ssl: SSLContext | None = None
) -> Provider:
    """The provider on a loopback port; over HTTPS when `ssl` (a server context) is given."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    app = web.Application()
    holder: dict[str, Provider] = {}

    async def discovery(request: web.Request) -> web.Response:
        p = holder["p"]
        return web.json_response({
            "issuer": p.issuer,
            "authorization_endpoint": f"{p.issuer}/authorize",
            "token_endpoint": f"{p.issuer}/token",
            "jwks_uri": f"{p.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        })

    async def jwks(request: web.Request) -> web.Response:
        p = holder["p"]
        public = RSAAlgorithm.to_jwk(p.key.public_key(), as_dict=True)
        public.update({"kid": p.kid, "use": "sig", "alg": "RS256"})
        return web.json_response({"keys": [public]})

    async def authorize(request: web.Request) -> web.StreamResponse:
        p = holder["p"]
        q = dict(request.query)
        p.authorize_requests.append(q)
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code":
            return web.json_response({"error": "unauthorized_client"}, status=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return web.json_response({"error": "invalid_request"}, status=400)
        code = secrets.token_urlsafe(16)
        p.grants[code] = Grant(CLIENT_ID, q["redirect_uri"], q["code_challenge"], q.get("nonce", ""),
                               dict(p.user))
        target = f"{q['redirect_uri']}?{urlencode({'code': code, 'state': q.get('state', '')})}"
        raise web.HTTPFound(target)

    async def token(request: web.Request) -> web.Response:
        p = holder["p"]
        form = dict(await request.post())
        p.token_requests.append({**{k: str(v) for k, v in form.items()},
                                 "authorization": request.headers.get("Authorization", "")})
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if client_id != CLIENT_ID or secret != CLIENT_SECRET:
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = p.grants.pop(str(form.get("code", "")), None)
        if grant is None or grant.redirect_uri != form.get("redirect_uri"):
            return web.json_response({"error": "invalid_grant"}, status=400)
        verifier = str(form.get("code_verifier", ""))
        if _b64(hashlib.sha256(verifier.encode()).digest()) != grant.challenge:
            return web.json_response({"error": "invalid_grant", "error_description": "PKCE"}, status=400)
        now = int(time.time())
        claims = {"iss": p.issuer, "aud": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": grant.nonce,
                  **grant.claims}
        signing_key = None
        if p.tamper == "nonce":
            claims["nonce"] = "another-nonce"
        elif p.tamper == "audience":
            claims["aud"] = "another-client"
        elif p.tamper == "expired":
            claims["exp"] = now - 3600
        elif p.tamper == "signature":
            signing_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return web.json_response({"access_token": secrets.token_urlsafe(16), "token_type": "Bearer",
                                  "expires_in": 300, "id_token": p.sign(claims, signing_key)})

    app.router.add_get("/.well-known/openid-configuration", discovery)
    app.router.add_get("/jwks", jwks)
    app.router.add_get("/authorize", authorize)
    app.router.add_post("/token", token)
    server = await aiohttp_server(app, host="127.0.0.1", ssl=ssl)
    provider = Provider(server=server, key=key)
    holder["p"] = provider
    return provider
