"""Authlib's OAuth 2.0 authorization server, with the hooks gateway at token issuance.

A `client_credentials` token request runs the tenant's `credentials-exchange` hooks through
the gateway (gateway.client) before the access token is signed: the token gets the scope the
hooks returned and their namespaced claims; a hook's refusal is the OAuth2 error it names.

    hooks = CredentialsExchange(AuthServerClient(GATEWAY_URL, token=SERVICE_TOKEN), tenant="acme")
    server.register_token_generator(
        "client_credentials", HooksJWTBearerTokenGenerator(ISSUER, key=SIGNING_KEY))
    server.register_grant(HooksClientCredentialsGrant, [hooks])

Framework-neutral (Authlib's grant and token generator); the default request context (the
client's IP) is read from Flask when there is a Flask request, else pass `request_context=`.
When the gateway cannot be reached the token request fails with `server_error`, or, with
`fail_open=True`, gets a plain token (the requested scope, no claims). See README.md.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import ClientCredentialsGrant, OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidRequestError, InvalidScopeError
from authlib.oauth2.rfc6749.hooks import hooked
from authlib.oauth2.rfc6749.util import list_to_scope, scope_to_list
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator

from gateway.client import (
    CREDENTIALS_EXCHANGE,
    AuthServerClient,
    ClientError,
    CredentialsExchangeResult,
    HookError,
    ProtocolError,
    RateLimited,
    TransportError,
    Unavailable,
)

__all__ = [
    "DEFAULT_DEADLINE_S",
    "CredentialsExchange",
    "HooksClientCredentialsGrant",
    "HooksJWTBearerTokenGenerator",
    "describe_client",
    "request_context",
]

log = logging.getLogger("hooks_gateway_authlib")

# A token request waits this long for the hooks, seconds (the gateway's own deadline is 20 s).
DEFAULT_DEADLINE_S: Final = 5.0

# The gateway's answers that mean "it is not there right now": fail open may skip the hooks.
# Its other refusals (401, 403, 404, 400: a wrong token, tenant or event) always fail closed.
UNREACHABLE: Final = (TransportError, Unavailable, RateLimited, ProtocolError)

_HOOKS_FAILED = "the credentials-exchange hooks failed"
_GATEWAY_AWAY = "the hooks gateway is unavailable"


# --- what the auth server sends --------------------------------------------------------------


def describe_client(client: Any) -> dict[str, Any]:
    """The event's `client`: `id`, `name` (`client.client_name`, else the id) and `metadata`
    (a `client.metadata` mapping of yours, else empty). Pass your own to map your model."""
    client_id = str(client.get_client_id())
    name = getattr(client, "client_name", None)
    metadata = getattr(client, "metadata", None)
    return {
        "id": client_id,
        "name": name if isinstance(name, str) and name else client_id,
        "metadata": dict(metadata) if isinstance(metadata, Mapping) else {},
    }


def request_context(request: Any) -> dict[str, Any]:
    """The event's `context`: the caller's `ip` (from Flask's request, when there is one) and
    `userAgent`."""
    context: dict[str, Any] = {}
    ip = _flask_remote_addr()
    if ip:
        context["ip"] = ip
    user_agent = request.headers.get("User-Agent")
    if user_agent:
        context["userAgent"] = user_agent
    return context


def _flask_remote_addr() -> str | None:
    try:
        import flask
    except ImportError:
        return None
    if not flask.has_request_context():
        return None
    addr = flask.request.remote_addr
    return addr if isinstance(addr, str) else None


# --- the OAuth2 errors -------------------------------------------------------------------------


def _description(text: str) -> str | None:
    """RFC 6749 allows only %x20-21 / %x23-5B / %x5D-7E in `error_description` (Authlib raises
    on anything else): the receiver's message with the other characters replaced by `?`."""
    kept = "".join(c if (" " <= c <= "~" and c not in '"\\') else "?" for c in text)
    return kept or None


def _oauth_error(error: str, description: str | None, status: int = 400) -> OAuth2Error:
    return OAuth2Error(description=description, status_code=status, error=error)


def _hooks_error(exc: HookError) -> OAuth2Error:
    """The OAuth2 error the hooks answered: their message passes for `invalid_scope` and
    `invalid_request`; a failure (`server_error`) is logged, and the client gets no detail."""
    if exc.oauth_error == "server_error":
        log.error("credentials-exchange: %s", exc.message)
        return _oauth_error("server_error", _HOOKS_FAILED, 500)
    return _oauth_error(exc.oauth_error, _description(exc.message))


# --- the hooks ---------------------------------------------------------------------------------


@dataclass(slots=True)
class _Issuance:
    """What the grant hands to the token generator for the token being signed."""

    audience: str
    scope: str
    claims: dict[str, Any]
    used: bool = False


# Set by the grant around `generate_token` only (reset in `finally`): Authlib's generator
# signature carries no request, so this is how the hooks' answer reaches it.
_ISSUING: contextvars.ContextVar[_Issuance | None] = contextvars.ContextVar("hooks_issuing", default=None)


def _namespaced(name: str) -> bool:
    """A claim the token may carry: named by an `http(s)` URL, as the gateway keeps them, so it
    can never replace `iss`, `sub`, `aud`, `exp`, `scope` or another claim of the server."""
    try:
        parts = urlsplit(name)
        return parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        return False


@dataclass(kw_only=True)
class CredentialsExchange:
    """The gateway's `credentials-exchange` for Authlib's token endpoint; register it as the
    extension of `HooksClientCredentialsGrant`.

    `gateway`: an `AuthServerClient` (its token: the gateway's service token, scope
    `forward:events`); `tenant`: the tenant id, or a function of the Authlib client;
    `fail_open`: when the gateway is unreachable, issue the token as requested instead of
    answering `server_error`; `deadline_s`: how long a token request waits for the hooks;
    `default_audience`: the audience when the request names none (else `invalid_request`).
    """

    gateway: AuthServerClient
    tenant: str | Callable[[Any], str]
    fail_open: bool = False
    deadline_s: float = DEFAULT_DEADLINE_S
    default_audience: str | None = None
    describe_client: Callable[[Any], dict[str, Any]] = field(default=describe_client)
    request_context: Callable[[Any], dict[str, Any]] = field(default=request_context)

    def __call__(self, grant: Any) -> None:
        """Authlib's grant extension: `server.register_grant(HooksClientCredentialsGrant, [self])`."""
        grant.credentials_exchange = self

    def audience(self, request: Any) -> str:
        """The request's `audience` parameter (once at most), or the default one."""
        given = request.payload.datalist.get("audience", [])
        if len(given) > 1:
            raise InvalidRequestError("Multiple 'audience' in request.")
        audience = given[0] if given else self.default_audience
        if not audience:
            raise InvalidRequestError("Missing 'audience' in request.")
        return str(audience)

    def event(self, request: Any, client: Any, scope: list[str], audience: str) -> dict[str, Any]:
        """The `credentials-exchange` body (SPEC "Extensibility points")."""
        tenant = self._tenant(client)
        return {
            "audience": audience,
            "client": {**self.describe_client(client), "tenant": tenant},
            "scope": scope,
            "context": self.request_context(request),
        }

    def run(self, request: Any, client: Any, scope: list[str], audience: str) -> CredentialsExchangeResult:
        """The hooks' result, or the `OAuth2Error` to answer; fail open when configured."""
        tenant = self._tenant(client)
        try:
            return self.gateway.invoke(
                tenant,
                CREDENTIALS_EXCHANGE,
                self.event(request, client, scope, audience),
                deadline_s=self.deadline_s,
            )
        except HookError as exc:
            raise _hooks_error(exc) from None
        except UNREACHABLE as exc:
            if self.fail_open:
                log.warning("credentials-exchange skipped (fail open): %s", exc.message)
                return CredentialsExchangeResult(scope=list(scope))
            log.error("credentials-exchange: the gateway is unavailable: %s", exc.message)
            raise _oauth_error("server_error", _GATEWAY_AWAY, 500) from None
        except ClientError as exc:  # refused (401, 403, 404, 400): our token, tenant or event is wrong
            log.error("credentials-exchange: the gateway refused the call: %s", exc.message)
            raise _oauth_error("server_error", _GATEWAY_AWAY, 500) from None

    def _tenant(self, client: Any) -> str:
        return self.tenant(client) if callable(self.tenant) else self.tenant


# --- Authlib's grant and token generator ---------------------------------------------------------


class HooksClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    """`client_credentials`, with the gateway's hooks between validation and the token.

    The client's own scope rules apply to the request first (`client.get_allowed_scope`); the
    hooks then see that scope and their answer replaces it, as Auth0 did.
    """

    credentials_exchange: CredentialsExchange | None = None

    def _exchange(self) -> CredentialsExchange:
        if self.credentials_exchange is None:
            raise RuntimeError("register the grant with its CredentialsExchange extension")
        return self.credentials_exchange

    def validate_token_request(self) -> None:
        super().validate_token_request()
        self._audience = self._exchange().audience(self.request)

    @hooked  # type: ignore[untyped-decorator]
    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        client = self.client
        allowed = client.get_allowed_scope(self.request.payload.scope)
        if allowed is None:
            raise InvalidScopeError()
        result = self._exchange().run(self.request, client, scope_to_list(allowed) or [], self._audience)
        claims = {k: v for k, v in result.claims.items() if _namespaced(k)}
        issuance = _Issuance(audience=self._audience, scope=list_to_scope(result.scope), claims=claims)
        reset = _ISSUING.set(issuance)
        try:
            token = self.generate_token(scope=issuance.scope, include_refresh_token=False)
        finally:
            _ISSUING.reset(reset)
        if claims and not issuance.used:
            log.error("credentials-exchange: the token generator is not a HooksJWTBearerTokenGenerator")
            raise _oauth_error("server_error", _HOOKS_FAILED, 500)
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER


class HooksJWTBearerTokenGenerator(JWTBearerTokenGenerator):  # type: ignore[misc]
    """Authlib's RFC 9068 JWT access tokens, shaped by the hooks: their scope (unfiltered), the
    requested `audience` as `aud`, and their namespaced claims. Other grants are unchanged.

    `key`: the signing key (a joserfc key or key set); or override `get_jwks`.
    """

    def __init__(self, issuer: str, *, key: Any = None, alg: str = "RS256", **kwargs: Any) -> None:
        super().__init__(issuer, alg=alg, **kwargs)
        self._key = key

    def get_jwks(self) -> Any:
        if self._key is None:
            raise NotImplementedError("pass key= or override get_jwks()")
        return self._key

    def get_allowed_scope(self, client: Any, scope: Any) -> Any:
        issuing = _ISSUING.get()
        if issuing is None:
            return super().get_allowed_scope(client, scope)
        return issuing.scope

    def get_audiences(self, client: Any, user: Any, scope: Any) -> Any:
        issuing = _ISSUING.get()
        return super().get_audiences(client, user, scope) if issuing is None else issuing.audience

    def get_extra_claims(self, client: Any, grant_type: str, user: Any, scope: Any) -> dict[str, Any]:
        claims: dict[str, Any] = dict(super().get_extra_claims(client, grant_type, user, scope))
        issuing = _ISSUING.get()
        if issuing is not None:
            issuing.used = True
            claims.update(issuing.claims)
        return claims
