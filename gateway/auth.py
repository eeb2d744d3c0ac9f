"""Bearer-token verification (pyjwt): signature, `exp`/`nbf`/`iss`/`aud`, scopes, tenant.

Only the algorithms the settings enable are accepted: HS256 with `[auth] hs256_secret`,
RS256/ES256 with the keys of `[auth] jwks_file`. `alg: none` never is.
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from jwt import PyJWK, PyJWKSet

from .errors import ConfigError, Forbidden, Unauthorized, shown
from .settings import Settings

SCOPE_ADMIN = "admin:tenants"
SCOPE_FORWARD = "forward:events"
SCOPE_READ = "read:hooks"
SCOPE_CREATE = "create:hooks"
SCOPE_UPDATE = "update:hooks"
SCOPE_DELETE = "delete:hooks"
ASYMMETRIC_ALGORITHMS = ("RS256", "ES256")
VERIFIED_CACHE_SIZE = 4096  # tokens; a verified token is reused until its exp


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str | None
    tenant: str | None
    scopes: frozenset[str]
    expires_at: float

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(f"insufficient scope: this call needs {scope!r}")


class TokenVerifier:
    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        auth = settings.auth
        self._issuer = auth.issuer
        self._audience = auth.audience
        self._leeway = auth.leeway
        self._clock = clock
        self._hs_key = auth.hs256_secret.get() if auth.hs256_secret else None
        self._jwks: list[PyJWK] = _load_jwks(auth.jwks_file) if auth.jwks_file else []
        algorithms: list[str] = []
        if self._hs_key is not None:
            algorithms.append("HS256")
        if self._jwks:
            algorithms.extend(ASYMMETRIC_ALGORITHMS)
        self.algorithms = tuple(algorithms)
        self._cache: OrderedDict[str, Principal] = OrderedDict()

    def verify_header(self, header: str | None) -> Principal:
        if not header:
            raise Unauthorized("missing Authorization header (expected: Bearer <token>)")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Authorization header must be: Bearer <token>")
        return self.verify(token.strip())

    def verify(self, token: str) -> Principal:
        now = self._clock()
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at + self._leeway > now:
                self._cache.move_to_end(token)
                return cached
            del self._cache[token]
        principal = self._decode(token, now)
        self._cache[token] = principal
        if len(self._cache) > VERIFIED_CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    def _decode(self, token: str, now: float) -> Principal:
        if not token.isascii():  # a JWT is base64url and dots; header bytes past ASCII arrive as
            raise Unauthorized("malformed token")  # lone surrogates, which pyjwt cannot encode
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise Unauthorized(f"token algorithm {shown(alg)} is not accepted")
        key: Any = self._hs_key if alg == "HS256" else self._find_key(alg, header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=self._issuer,
                # Times are checked below against our clock (tests inject one), not pyjwt's.
                options={"require": ["exp", "iss", "aud"], "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False},
            )
        except jwt.InvalidAudienceError:
            raise Unauthorized("token audience is not accepted") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("token issuer is not accepted") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        expires_at = _time_claim(claims, "exp")
        if expires_at + self._leeway <= now:
            raise Unauthorized("token expired")
        if "nbf" in claims and _time_claim(claims, "nbf") - self._leeway > now:
            raise Unauthorized("token not yet valid (nbf)")
        # A claim of the wrong type is refused, never read as absent: a `tenant` of `null` or
        # `5` must not turn a tenant's token into an operator's.
        scope = claims.get("scope", "")
        if isinstance(scope, list) and all(isinstance(s, str) for s in scope):
            scopes = frozenset(scope)
        elif isinstance(scope, str):
            scopes = frozenset(scope.split())
        else:
            raise Unauthorized("claim 'scope' must be a space-separated string (or a list of strings)")
        tenant = claims.get("tenant")
        if "tenant" in claims and (not isinstance(tenant, str) or not tenant):
            raise Unauthorized("claim 'tenant' must be a non-empty string")
        sub = claims.get("sub")  # pyjwt refuses a `sub` that is not a string
        return Principal(
            subject=sub,
            tenant=tenant,
            scopes=scopes,
            expires_at=expires_at,
        )

    def _find_key(self, alg: str, kid: object) -> Any:
        candidates = [k for k in self._jwks if k.algorithm_name == alg]
        if kid is not None:
            candidates = [k for k in candidates if k.key_id == kid]
        if not candidates:
            raise Unauthorized("no configured key matches the token (kid/alg)")
        return candidates[0].key


def _time_claim(claims: dict[str, Any], name: str) -> float:
    value = claims[name]
    try:
        seconds = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    except OverflowError:
        seconds = None
    if seconds is None or not math.isfinite(seconds):
        raise Unauthorized(f"claim {name!r} must be a number of unix seconds")
    return seconds


def _load_jwks(path: str) -> list[PyJWK]:
    try:
        data = json.loads(Path(path).read_text())
        keys = PyJWKSet.from_dict(data).keys
    except FileNotFoundError:
        raise ConfigError(f"[auth] jwks_file {path}: no such file") from None
    except (ValueError, jwt.PyJWTError) as exc:
        raise ConfigError(f"[auth] jwks_file {path}: not a usable JWKS: {exc}") from None
    usable = [k for k in keys if k.algorithm_name in ASYMMETRIC_ALGORITHMS]
    if not usable:
        raise ConfigError(f"[auth] jwks_file {path}: no RS256 or ES256 key")
    return usable


def mint(
    settings: Settings,
    *,
    tenant: str | None,
    scopes: Iterable[str],
    ttl_s: float,
    subject: str = "gateway-cli",
    now: float | None = None,
) -> str:
    """A token signed with the configured HS256 secret (for local use and tests)."""
    if settings.auth.hs256_secret is None:
        raise ConfigError("minting a token needs [auth] hs256_secret")
    issued = time.time() if now is None else now
    claims: dict[str, Any] = {
        "iss": settings.auth.issuer,
        "aud": settings.auth.audience,
        "sub": subject,
        "iat": int(issued),
        "nbf": int(issued),
        "exp": int(issued + ttl_s),
        "scope": " ".join(scopes),
    }
    if tenant is not None:
        claims["tenant"] = tenant
    return jwt.encode(claims, settings.auth.hs256_secret.get(), algorithm="HS256")
