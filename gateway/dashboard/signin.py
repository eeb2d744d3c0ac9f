"""Signing in and out: OpenID Connect against the operator's identity provider, or (in
development mode only) a pasted management token, verified exactly as API bearer tokens are."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from ..auth import SCOPE_ADMIN, SCOPE_CREATE, SCOPE_DELETE, SCOPE_READ, SCOPE_UPDATE
from ..context import Services
from ..errors import BadRequest, Unauthorized, shown
from ..peers import contains, networks, peer_address
from . import sessions
from .oidc import SIGNIN_TTL_S, OidcClient, ProviderError, SignIn, SignInRejected
from .pages import OIDC, PREFIX, form_of, page, redirect, see_other, svc_of

SIGNIN_COOKIE = "gw_signin"
WRITE_SCOPES = frozenset({SCOPE_READ, SCOPE_CREATE, SCOPE_UPDATE, SCOPE_DELETE})
DASHBOARD_SCOPES = WRITE_SCOPES | {SCOPE_ADMIN}
MAX_TOKEN_CHARS = 16384
MAX_NAME_CHARS = 200  # of a user's name or subject, as stored and shown
_ERROR_CODE = re.compile(r"[a-z_]{1,64}")  # an OAuth error code the provider sent back
# A Host header the callback's address may be built from: a name or bracketed IPv6, a port.
_HOST = re.compile(r"(?:[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.?|\[[0-9A-Fa-f:.]{2,45}\])"
                   r"(?::[0-9]{1,5})?")


def _signin_page(request: web.Request, *, error: str | None = None, status: int = 200) -> web.Response:
    svc = svc_of(request)
    presession = sessions.presession_token(request)
    token = presession or sessions.new_token()
    context = {
        "oidc": request.config_dict.get(OIDC) is not None,
        "token_signin": svc.settings.server.mode == "development",
        "presession": token,
        "error": error,
    }
    response = page(request, "signin.html", context, status=status)
    if presession is None:
        sessions.set_cookie(response, request, svc, sessions.PRESESSION_COOKIE, token)
    return response


async def signin_page(request: web.Request) -> web.StreamResponse:
    session, _ = await sessions.load(svc_of(request), request)
    if session is not None:
        see_other(f"{PREFIX}/")
    return _signin_page(request)


async def _check_tenant(svc: Services, request: web.Request, tenant_id: str) -> str | None:
    """Why a session of this tenant cannot start from this address, or None."""
    view = await svc.registry.view(tenant_id)
    if view is None:
        return f"tenant {shown(tenant_id)} does not exist on this gateway"
    cidrs = view.tenant.allowed_cidrs
    peer = peer_address(request, svc.trusted_proxies)
    if cidrs and not contains(networks(cidrs), peer):
        return f"address {peer} is not allowed for tenant {shown(tenant_id)}"
    return None


def _tame(value: str, fallback: str) -> str:
    """A name from the identity provider (where users often edit their own) as stored and shown:
    printable characters only (no controls, NUL, lone surrogates or bidi overrides), bounded."""
    return "".join(c for c in value if c.isprintable())[:MAX_NAME_CHARS].strip() or fallback


async def _open(request: web.Request, *, tenant: str | None, scopes: frozenset[str], subject: str,
                name: str, method: str, not_after: float | None = None) -> web.StreamResponse:
    svc = svc_of(request)
    if tenant is None and SCOPE_ADMIN not in scopes:
        return _signin_page(request, error="Your sign-in names no tenant, and no operator rights.",
                            status=403)
    if tenant is not None:
        problem = await _check_tenant(svc, request, tenant)
        if problem is not None:
            return _signin_page(request, error=f"Sign-in refused: {problem}.", status=403)
        if not scopes & DASHBOARD_SCOPES:
            return _signin_page(request, error="Your sign-in grants no access to this tenant's hooks.",
                                status=403)
    response = redirect(f"{PREFIX}/")
    await sessions.start(svc, request, response, tenant_id=tenant, subject=_tame(subject, "?"),
                         display_name=_tame(name, "user"), scopes=scopes, method=method, not_after=not_after)
    return response


async def token_signin(request: web.Request) -> web.StreamResponse:
    svc = svc_of(request)
    if svc.settings.server.mode != "development":
        return _signin_page(request, error="Signing in with a token is turned off in production mode.",
                            status=403)
    token = str(form_of(request).get("token", "")).strip()
    if not token or len(token) > MAX_TOKEN_CHARS:
        return _signin_page(request, error="Paste a management token.", status=400)
    try:
        principal = svc.verifier.verify(token)
    except Unauthorized as exc:
        return _signin_page(request, error=f"The token was refused: {exc.message}.", status=401)
    scopes = principal.scopes & (DASHBOARD_SCOPES if principal.tenant is None else WRITE_SCOPES)
    return await _open(request, tenant=principal.tenant, scopes=frozenset(scopes),
                       subject=principal.subject or "token", name=principal.subject or "token holder",
                       method="token", not_after=principal.expires_at)


def _redirect_uri(request: web.Request, svc: Services) -> str:
    configured = svc.settings.dashboard.redirect_url
    if configured:
        return configured
    if not _HOST.fullmatch(request.host):
        raise BadRequest("the request's Host header is not a host name (the operator may set "
                         "[dashboard] redirect_url)")
    scheme = "https" if sessions.is_secure(request, svc) else "http"
    return f"{scheme}://{request.host}{PREFIX}/auth/callback"


async def oidc_start(request: web.Request) -> web.StreamResponse:
    svc = svc_of(request)
    client = request.config_dict.get(OIDC)
    if client is None:
        raise web.HTTPNotFound()
    try:
        url, signin = await client.begin(_redirect_uri(request, svc))
    except ProviderError as exc:
        return _signin_page(request, error=f"Sign-in is not available: {exc}.", status=502)
    response = redirect(url)
    sessions.set_cookie(response, request, svc, SIGNIN_COOKIE, signin.seal(svc.cipher), max_age=SIGNIN_TTL_S)
    return response


async def oidc_callback(request: web.Request) -> web.StreamResponse:
    svc = svc_of(request)
    client: OidcClient | None = request.config_dict.get(OIDC)
    if client is None:
        raise web.HTTPNotFound()
    error = request.query.get("error")
    if error is not None:
        code = error if _ERROR_CODE.fullmatch(error) else "an error"
        return _refused(request, f"The identity provider answered {code}.", 401)
    sealed = request.cookies.get(SIGNIN_COOKIE)
    if not sealed:
        return _refused(request, "This sign-in was not started here, or took too long; start again.", 400)
    try:
        signin = SignIn.unseal(svc.cipher, sealed, svc.clock())
        state = request.query.get("state", "")
        if not sessions.same(state, signin.state):
            raise SignInRejected("the state does not match this sign-in")
        code = request.query.get("code", "")
        if not code or len(code) > MAX_TOKEN_CHARS:
            raise SignInRejected("the identity provider sent no code")
        claims = await client.finish(signin, code)
    except SignInRejected as exc:
        return _refused(request, f"Sign-in refused: {exc}.", 403)
    except ProviderError as exc:
        return _refused(request, f"Sign-in is not available: {exc}.", 502)
    tenant, scopes, problem = _from_claims(svc, claims)
    if problem is not None:
        return _refused(request, f"Sign-in refused: {problem}.", 403)
    name = next((claims[k] for k in ("email", "name", "preferred_username", "sub")
                 if isinstance(claims.get(k), str) and claims[k]), "user")
    response = await _open(request, tenant=tenant, scopes=scopes, subject=str(claims["sub"]), name=name,
                           method="oidc")
    sessions.clear_cookie(response, request, svc, SIGNIN_COOKIE)
    return response


def _refused(request: web.Request, message: str, status: int) -> web.Response:
    response = _signin_page(request, error=message, status=status)
    sessions.clear_cookie(response, request, svc_of(request), SIGNIN_COOKIE)
    return response


def _from_claims(svc: Services, claims: dict[str, Any]) -> tuple[str | None, frozenset[str], str | None]:
    """The tenant and API scopes an ID token grants, by the `[dashboard]` settings; or why not."""
    d = svc.settings.dashboard
    tenant = claims.get(d.tenant_claim)
    if tenant is not None and (not isinstance(tenant, str) or not tenant):
        return None, frozenset(), f"the claim {shown(d.tenant_claim)} must be a non-empty string"
    raw = claims.get(d.scope_claim, "")
    if isinstance(raw, str):
        granted = set(raw.split())
    elif isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        granted = set(raw)
    else:
        return None, frozenset(), f"the claim {shown(d.scope_claim)} must be a string or a list of strings"
    scopes: set[str] = set()
    if d.write_scope in granted:
        scopes |= WRITE_SCOPES
    elif d.read_scope in granted:
        scopes.add(SCOPE_READ)
    if d.admin_scope in granted and tenant is None:  # as the API: tenant management names no tenant
        scopes.add(SCOPE_ADMIN)
    return tenant, frozenset(scopes), None


async def signout(request: web.Request) -> web.StreamResponse:
    svc = svc_of(request)
    response = redirect(f"{PREFIX}/signin?done=signed-out")
    await sessions.end(svc, request, response)
    return response


def routes() -> list[web.RouteDef]:
    return [
        web.get("/signin", signin_page, allow_head=False),
        web.post("/signin/token", token_signin),
        web.get("/signin/oidc", oidc_start, allow_head=False),
        web.get("/auth/callback", oidc_callback, allow_head=False),
        web.post("/signout", signout),
    ]
