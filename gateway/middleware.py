"""Middlewares: errors as JSON, and for `/api/v2` and `/v1` authentication, allowlists and
the gateway's own rate limits (headers on every answer, 429 past the limit)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .auth import Principal
from .context import services
from .errors import (
    ApiError,
    BadRequest,
    Forbidden,
    TooManyRequests,
    Unauthorized,
    database_unavailable,
    shown,
)
from .peers import contains, networks, peer_address
from .web import CLOSE_AFTER_ANSWER, answer_and_close, json_response

log = logging.getLogger("gateway.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
AUTH_ERROR: web.RequestKey[ApiError] = web.RequestKey("auth_error", ApiError)

_PUBLIC = frozenset({"/api/v2/openapi.json", "/v1/ip-ranges"})


def error_response(exc: ApiError) -> web.Response:
    return json_response(exc.body(), status=exc.status, headers=exc.headers)


def http_error_response(exc: web.HTTPException) -> web.Response:
    message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    if exc.status == 413:
        message = "request body is too large"
    body = {"statusCode": exc.status, "error": exc.reason, "message": message}
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return json_response(body, status=exc.status, headers=headers)


def _api_of(path: str) -> str | None:
    """Which of the gateway's own APIs (and so which rate limiter) a path belongs to."""
    if path == "/api/v2" or path.startswith("/api/v2/"):
        return "management"
    if path == "/v1" or path.startswith("/v1/"):
        return "ingest"
    return None


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as JSON on every route (never a stack trace); on `/api/v2` and `/v1` also the
    caller's token, the allowlists and the rate limits. One middleware, not two: each layer
    costs every request a call."""
    response = await _guarded(request, handler)
    if request.get(CLOSE_AFTER_ANSWER):
        answer_and_close(response)
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        api = _api_of(request.path)
        if api is None or services(request).settings.server.role == "worker":  # a worker has no API: 404
            return await handler(request)
        return await _api_guard(request, handler, api)
    except ApiError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_error_response(exc)
    except web.RequestPayloadError:  # the body's framing is broken: the rest of the stream is too
        response = error_response(BadRequest("malformed request body"))
        response.force_close()
        return response
    except Exception as exc:
        unavailable = database_unavailable(exc)
        if unavailable is not None:
            log.warning("database unavailable on %s %s: %s", request.method, request.path, type(exc).__name__)
            return error_response(unavailable)
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_response(
            {"statusCode": 500, "error": "Internal Server Error", "message": "internal error"}, status=500
        )


async def _api_guard(request: web.Request, handler: Handler, api: str) -> web.StreamResponse:
    """Every answer of `/api/v2` and `/v1`, errors included, carries the rate-limit headers."""
    svc = services(request)
    peer = peer_address(request, svc.trusted_proxies)
    forwarding = api == "ingest" and request.path.startswith("/v1/tenants/")
    peer_allowed = not forwarding or contains(svc.ingest_cidrs, peer)
    principal: Principal | None = None
    if request.path not in _PUBLIC and peer_allowed:
        try:
            principal = svc.verifier.verify_header(request.headers.get("Authorization"))
        except Unauthorized as exc:
            request[AUTH_ERROR] = exc
        else:
            request[PRINCIPAL] = principal
    limiter = svc.management_limiter if api == "management" else svc.ingest_limiter
    decision = limiter.take(_bucket_key(api, request, principal, peer))
    try:
        if not decision.allowed:
            raise TooManyRequests("rate limit exceeded", retry_after=decision.retry_after)
        if not peer_allowed:
            raise Forbidden(f"address {peer} is not allowed to forward events")
        if principal is not None and principal.tenant is not None and api == "management":
            await _check_tenant_allowlist(request, principal.tenant, peer)
        response = await handler(request)
    except ApiError as exc:
        response = error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = http_error_response(exc)
    if not response.prepared:
        response.headers.update(decision.headers())
    return response


def _bucket_key(api: str, request: web.Request, principal: Principal | None, peer: object) -> str:
    """Verified callers spend their tenant's (or operator's) tokens; anyone else, their address's,
    so that an unauthenticated caller cannot drain a tenant's bucket."""
    if principal is None:
        return f"anonymous:{peer}"
    if principal.tenant is not None:
        return f"tenant:{principal.tenant}"
    tenant = request.match_info.get("tenant") if api == "ingest" else None
    if tenant:  # a service token for every tenant forwards on the tenant's account
        return f"tenant:{tenant}"
    return f"operator:{principal.subject}"


async def _check_tenant_allowlist(request: web.Request, tenant_id: str, peer: object) -> None:
    view = await services(request).registry.view(tenant_id)
    if view is None:
        raise Unauthorized(f"the token's tenant {shown(tenant_id)} does not exist")
    cidrs = view.tenant.allowed_cidrs
    if cidrs and not contains(networks(cidrs), peer):  # type: ignore[arg-type]
        raise Forbidden(f"address {peer} is not allowed for tenant {tenant_id!r}")


def principal(request: web.Request, scope: str) -> Principal:
    """The caller's verified token, with `scope`; else the right 401/403."""
    found: Principal | None = request.get(PRINCIPAL)
    if found is None:
        raise request.get(AUTH_ERROR) or Unauthorized("missing Authorization header")
    found.require(scope)
    return found


def tenant_of(request: web.Request, scope: str) -> str:
    """The tenant a tenant-bound token with `scope` acts for."""
    p = principal(request, scope)
    if p.tenant is None:
        raise Forbidden("this call needs a token bound to a tenant (claim 'tenant')")
    return p.tenant
