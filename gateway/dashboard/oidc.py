"""OpenID Connect sign-in: authorization code with PKCE (S256), `state` and `nonce`.

The client talks only to the operator's configured issuer: its discovery document at
`{issuer}/.well-known/openid-configuration`, and the token endpoint and JWKS that document
names (https, or plain http when the issuer itself is a loopback http URL). Nothing a browser
sends chooses where the gateway connects. Redirects are not followed; answers are bounded.
The issuer's own host and port are trusted as configured; an endpoint the discovery document
names on any other host or port is reached only through the egress guard (gateway/egress.py),
so a compromised provider cannot point the gateway at its internal network.

The ID token is verified with pyjwt: signature against the issuer's JWKS (RS256 or ES256),
`iss`, `aud` (and `azp`), `exp`, and the `nonce` of this sign-in.

What a sign-in must remember between the redirect to the provider and the callback (state,
nonce, PKCE verifier) travels in a short-lived cookie sealed with the gateway's AES-GCM key,
so the callback may land on any instance.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

import aiohttp
import jwt
from aiohttp.abc import AbstractResolver, ResolveResult
from jwt import PyJWK, PyJWKSet

from ..crypto import Cipher, DecryptionError
from ..egress import GuardedResolver, IPNetwork, classify, parse_ip_literal
from ..errors import DestinationRefused, GatewayError
from ..settings import LOOPBACK_HOSTS, DashboardSettings

DISCOVERY_PATH = "/.well-known/openid-configuration"
DISCOVERY_TTL_S = 3600.0  # the discovery document and JWKS are fetched again after this
JWKS_REFRESH_MIN_S = 60.0  # an unknown `kid` fetches the JWKS again at most this often
MAX_ANSWER_BYTES = 1024 * 1024  # discovery, JWKS and token answers are small
SIGNIN_TTL_S = 600  # a sign-in must come back from the provider within this
CLOCK_SKEW_S = 60.0  # allowed on the ID token's exp and iat
ALGORITHMS = ("RS256", "ES256")
SEAL_CONTEXT = "dashboard-signin"


class ProviderError(GatewayError):
    """The identity provider could not be used (unreachable, or an answer that is not OIDC)."""


class SignInRejected(GatewayError):
    """This sign-in is refused (state, nonce or token do not verify)."""


def pkce_challenge(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _random() -> str:
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class SignIn:
    """One sign-in in progress."""

    state: str
    nonce: str
    verifier: str
    redirect_uri: str
    expires_at: float

    def seal(self, cipher: Cipher) -> str:
        raw = json.dumps({"s": self.state, "n": self.nonce, "v": self.verifier, "r": self.redirect_uri,
                          "e": self.expires_at})
        return cipher.encrypt(raw, SEAL_CONTEXT)

    @classmethod
    def unseal(cls, cipher: Cipher, sealed: str, now: float) -> SignIn:
        try:
            data = json.loads(cipher.decrypt(sealed, SEAL_CONTEXT))
            signin = cls(str(data["s"]), str(data["n"]), str(data["v"]), str(data["r"]), float(data["e"]))
        except (DecryptionError, ValueError, KeyError, TypeError):
            raise SignInRejected("the sign-in could not be read; start again") from None
        if signin.expires_at <= now:
            raise SignInRejected("the sign-in took too long; start again")
        return signin


@dataclass(frozen=True, slots=True)
class Provider:
    """What the gateway uses of the issuer's discovery document."""

    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    client_auth: str  # client_secret_basic | client_secret_post | none


class OidcClient:
    """One per process: discovery and keys cached, one aiohttp session for the provider."""

    def __init__(self, settings: DashboardSettings, cipher: Cipher, *,
                 clock: Callable[[], float] = time.time, allow_cidrs: Sequence[IPNetwork] = (),
                 ssl_context: ssl.SSLContext | None = None) -> None:
        assert settings.issuer is not None and settings.client_id is not None
        self.settings = settings
        self.issuer = settings.issuer
        self.client_id = settings.client_id
        self._cipher = cipher
        self._clock = clock
        self._allow_cidrs = tuple(allow_cidrs)  # [egress] allow_cidrs
        self._ssl = ssl_context  # the system's CAs and [egress] ca_file; None: the system's alone
        self._origin = _origin(self.issuer)
        self._http: aiohttp.ClientSession | None = None
        self._resolver: _ProviderResolver | None = None
        self._provider: tuple[float, Provider] | None = None
        self._keys: tuple[float, list[PyJWK]] | None = None

    async def open(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.idp_timeout)
        self._resolver = _ProviderResolver(self._origin, self._allow_cidrs)
        self._http = aiohttp.ClientSession(timeout=timeout, trust_env=False,
                                           connector=aiohttp.TCPConnector(resolver=self._resolver,
                                                                          ssl=self._ssl or True))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._resolver is not None:  # a resolver given to a connector is not closed by it
            await self._resolver.close()
            self._resolver = None

    # -- the two steps of a sign-in ---------------------------------------------------------

    async def begin(self, redirect_uri: str) -> tuple[str, SignIn]:
        """The provider's authorization URL to send the browser to, and the sign-in to keep."""
        provider = await self.provider()
        signin = SignIn(_random(), _random(), _random(), redirect_uri, self._clock() + SIGNIN_TTL_S)
        query = urlencode({
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": redirect_uri,
            "scope": " ".join(self.settings.scopes),
            "state": signin.state,
            "nonce": signin.nonce,
            "code_challenge": pkce_challenge(signin.verifier),
            "code_challenge_method": "S256",
        })
        sep = "&" if urlsplit(provider.authorization_endpoint).query else "?"
        return f"{provider.authorization_endpoint}{sep}{query}", signin

    async def finish(self, signin: SignIn, code: str) -> dict[str, Any]:
        """Exchange the code (with the PKCE verifier) and return the verified ID token's claims."""
        provider = await self.provider()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": signin.redirect_uri,
            "code_verifier": signin.verifier,
        }
        headers: dict[str, str] = {}
        secret = self.settings.client_secret.get() if self.settings.client_secret else None
        if secret is not None and provider.client_auth == "client_secret_basic":
            headers["Authorization"] = _basic(self.client_id, secret)
        else:
            form["client_id"] = self.client_id
            if secret is not None:
                form["client_secret"] = secret
        answer = await self._request("POST", provider.token_endpoint, data=form, headers=headers)
        id_token = answer.get("id_token")
        if not isinstance(id_token, str) or not id_token:
            raise SignInRejected("the identity provider's token answer holds no id_token")
        return await self.verify_id_token(id_token, signin.nonce)

    # -- verification -----------------------------------------------------------------------

    async def verify_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError:
            raise SignInRejected("the ID token is malformed") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise SignInRejected("the ID token's algorithm is not accepted")
        key = await self._key(alg, header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                id_token, key, algorithms=[alg], audience=self.client_id, issuer=self.issuer,
                options={"require": ["iss", "aud", "exp", "iat", "sub"], "verify_exp": False,
                         "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError as exc:
            raise SignInRejected(f"the ID token does not verify: {type(exc).__name__}") from None
        now = self._clock()
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or isinstance(exp, bool) or not math.isfinite(exp):
            raise SignInRejected("the ID token's exp is not a time")
        if exp + CLOCK_SKEW_S <= now:
            raise SignInRejected("the ID token has expired")
        # OIDC Core 3.1.3.7: an azp must be this client; several audiences need one
        aud, azp = claims.get("aud"), claims.get("azp")
        several = isinstance(aud, list) and len(aud) > 1
        if (azp is not None and azp != self.client_id) or (several and azp is None):
            raise SignInRejected("the ID token is for another client (azp)")
        got = claims.get("nonce")
        if not isinstance(got, str) or not secrets.compare_digest(got.encode(), nonce.encode()):
            raise SignInRejected("the ID token's nonce does not match this sign-in")
        return claims

    async def _key(self, alg: str, kid: object) -> Any:
        keys = await self._jwks(force=False)
        found = _pick(keys, alg, kid)
        if found is None and self._keys is not None and self._clock() - self._keys[0] >= JWKS_REFRESH_MIN_S:
            found = _pick(await self._jwks(force=True), alg, kid)  # the provider may have rotated keys
        if found is None:
            raise SignInRejected("no key of the identity provider matches the ID token")
        return found.key

    async def _jwks(self, *, force: bool) -> list[PyJWK]:
        now = self._clock()
        if not force and self._keys is not None and now - self._keys[0] < DISCOVERY_TTL_S:
            return self._keys[1]
        provider = await self.provider()
        data = await self._request("GET", provider.jwks_uri)
        try:
            keys = [k for k in PyJWKSet.from_dict(data).keys if k.algorithm_name in ALGORITHMS]
        except jwt.PyJWTError as exc:
            raise ProviderError(f"the identity provider's JWKS is not usable: {type(exc).__name__}") from None
        self._keys = (now, keys)
        return keys

    # -- discovery --------------------------------------------------------------------------

    async def provider(self) -> Provider:
        now = self._clock()
        if self._provider is not None and now - self._provider[0] < DISCOVERY_TTL_S:
            return self._provider[1]
        doc = await self._request("GET", self.issuer.rstrip("/") + DISCOVERY_PATH)
        if doc.get("issuer") != self.issuer:
            raise ProviderError("the discovery document names another issuer")
        endpoints = {}
        for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = doc.get(key)
            if not isinstance(value, str) or not self._endpoint_ok(value):
                raise ProviderError(f"the discovery document's {key} is missing or not an https URL")
            refused = self._refused_literal(value) if key != "authorization_endpoint" else None
            if refused is not None:  # (the browser goes to the authorization endpoint, not the gateway)
                raise ProviderError(f"the discovery document's {key} names a refused address: {refused}")
            endpoints[key] = value
        methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if not isinstance(methods, list):
            methods = ["client_secret_basic"]
        if self.settings.client_secret is None:
            client_auth = "none"
        elif "client_secret_basic" in methods:
            client_auth = "client_secret_basic"
        else:
            client_auth = "client_secret_post"
        provider = Provider(endpoints["authorization_endpoint"], endpoints["token_endpoint"],
                            endpoints["jwks_uri"], client_auth)
        self._provider = (now, provider)
        return provider

    def _endpoint_ok(self, url: str) -> bool:
        """An absolute https URL; plain http only beside a loopback http issuer (development)."""
        parts = urlsplit(url)
        if not parts.hostname or parts.username is not None or parts.password is not None:
            return False
        if parts.scheme == "https":
            return True
        issuer = urlsplit(self.issuer)
        return parts.scheme == "http" == issuer.scheme and parts.hostname in LOOPBACK_HOSTS

    def _refused_literal(self, url: str) -> str | None:
        """Why the egress guard refuses the address `url` names literally, off the issuer's own
        host and port (host names are checked as they resolve: `_ProviderResolver`)."""
        parts = urlsplit(url)
        address = parse_ip_literal(parts.hostname or "")
        if address is None or _origin(url) == self._origin:
            return None
        range_ = classify(address, self._allow_cidrs)
        return None if range_ is None else str(DestinationRefused(str(address), range_))

    async def _request(self, method: str, url: str, *, data: dict[str, str] | None = None,
                       headers: dict[str, str] | None = None) -> dict[str, Any]:
        if self._http is None:
            raise ProviderError("the identity provider client is closed")
        try:
            async with self._http.request(
                method, url, data=data, allow_redirects=False,
                headers={"Accept": "application/json", **(headers or {})},
            ) as resp:
                status = resp.status
                chunks: list[bytes] = []
                size = 0
                while chunk := await resp.content.read(64 * 1024):
                    size += len(chunk)
                    if size > MAX_ANSWER_BYTES:
                        raise ProviderError("the identity provider's answer is too large")
                    chunks.append(chunk)
                body = b"".join(chunks)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ProviderError(f"the identity provider is not reachable: {type(exc).__name__}") from None
        except DestinationRefused as exc:
            raise ProviderError(f"the identity provider names an address the gateway may not reach ({exc})") \
                from None
        try:
            value = json.loads(body)
        except ValueError:
            value = None
        if status == 400 and isinstance(value, dict) and method == "POST":
            raise SignInRejected("the identity provider refused the code (invalid_grant or similar)")
        if status != 200 or not isinstance(value, dict):
            raise ProviderError(f"the identity provider answered HTTP {status} without a JSON object")
        return value


def _origin(url: str) -> tuple[str, int] | None:
    """The host (lower case) and port a URL connects to; None when its port is not a number."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return (parts.hostname or ""), port


class _ProviderResolver(AbstractResolver):
    """DNS of the identity provider's client: the configured issuer's host and port resolve as
    they are (the operator chose them); any other host a provider's answer names goes through
    the egress guard, as a hook's URL does (aiohttp asks no resolver for a literal address:
    those are checked in `OidcClient._refused_literal`)."""

    def __init__(self, issuer: tuple[str, int] | None, allow_cidrs: Sequence[IPNetwork]) -> None:
        self._issuer = issuer
        self._plain = aiohttp.ThreadedResolver()
        self._guarded = GuardedResolver(allow_cidrs=allow_cidrs, inner=self._plain)

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        if (host.lower(), port) == self._issuer:
            return await self._plain.resolve(host, port, family)
        return await self._guarded.resolve(host, port, family)

    async def close(self) -> None:
        await self._plain.close()


def _pick(keys: list[PyJWK], alg: str, kid: object) -> PyJWK | None:
    candidates = [k for k in keys if k.algorithm_name == alg]
    if kid is not None:
        candidates = [k for k in candidates if k.key_id == kid]
    return candidates[0] if candidates else None


def _basic(client_id: str, secret: str) -> str:
    """HTTP Basic of the client (RFC 6749 2.3.1: id and secret form-encoded first)."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")
