"""The dashboard's one middleware: security headers on every answer, the session (else a
redirect to sign-in), the tenant's CIDR allowlist, the CSRF token of every POST, the
Management API's rate limit on every change (a POST is the API call it wraps: it spends the
tenant's tokens, or the operator's), and errors as HTML pages (never a stack trace, never the
caller's bytes)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from multidict import MultiDictProxy

from ..errors import (
    ApiError,
    BadRequest,
    Forbidden,
    PayloadTooLarge,
    TooManyRequests,
    database_unavailable,
    shown,
)
from ..peers import contains, networks, peer_address
from ..web import body_deadline, body_timed_out
from . import sessions
from .pages import FORM, PREFIX, SESSION, page, svc_of

log = logging.getLogger("gateway.dashboard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; "
       "form-action 'self'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Served without a session. POSTs among them carry the pre-session CSRF token instead.
PUBLIC = frozenset({
    f"{PREFIX}/signin", f"{PREFIX}/signin/token", f"{PREFIX}/signin/oidc", f"{PREFIX}/auth/callback",
})
STATIC = f"{PREFIX}/static/"
SIGNOUT = f"{PREFIX}/signout"  # a POST that spends no rate-limit token: signing out is always possible


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await _guarded(request, handler)
    except web.HTTPException as exc:
        if exc.status >= 400:
            response = _error_page(request, exc.status, exc.reason, _http_message(exc))
        else:
            exc.headers.update(SECURITY_HEADERS)
            exc.headers["Cache-Control"] = "no-store"
            raise
    except ApiError as exc:
        response = _error_page(request, exc.status, exc.error, exc.message)
        response.headers.update(exc.headers)  # Retry-After of a 429
    except Exception as exc:
        unavailable = database_unavailable(exc)
        if unavailable is None:
            log.exception("unhandled error on %s %s", request.method, request.path)
            response = _error_page(request, 500, "Internal Server Error", "Something went wrong on our side.")
        else:
            response = _error_page(request, 503, unavailable.error, unavailable.message)
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
        if not request.path.startswith(STATIC):
            response.headers["Cache-Control"] = "no-store"
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(STATIC):
        return await handler(request)
    svc = svc_of(request)
    if request.path in PUBLIC:
        if request.method == "POST":
            form = await _read_form(request)
            expected = sessions.presession_token(request)
            if expected is None or not sessions.same(str(form.get("csrf", "")), expected):
                raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
        return await handler(request)
    session, had_cookie = await sessions.load(svc, request)
    if session is None:
        target = f"{PREFIX}/signin" + ("?done=expired" if had_cookie else "")
        response = web.HTTPSeeOther(location=target)
        if had_cookie:
            sessions.clear_cookie(response, request, svc, sessions.SESSION_COOKIE)
        raise response
    if session.tenant_id is not None:
        view = await svc.registry.view(session.tenant_id)
        if view is None:  # the tenant was deleted meanwhile
            await svc.store.delete_session(session.record.token_hash)
            raise web.HTTPSeeOther(location=f"{PREFIX}/signin?done=expired")
        cidrs = view.tenant.allowed_cidrs
        peer = peer_address(request, svc.trusted_proxies)
        if cidrs and not contains(networks(cidrs), peer):
            raise Forbidden(f"address {peer} is not allowed for tenant {shown(session.tenant_id)}")
    request[SESSION] = session
    if request.method == "POST":
        form = await _read_form(request)
        if not sessions.same(str(form.get("csrf", "")), session.csrf):
            raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
        key = (f"tenant:{session.tenant_id}" if session.tenant_id is not None  # as gateway/middleware.py
               else f"operator:{session.record.subject}")
        decision = svc.management_limiter.take(key) if request.path != SIGNOUT else None
        if decision is not None and not decision.allowed:
            raise TooManyRequests("too many changes in a short time; wait a moment and try again",
                                  retry_after=decision.retry_after)
    return await handler(request)


async def _read_form(request: web.Request) -> MultiDictProxy[Any]:
    timeout = body_deadline(request)
    try:
        async with asyncio.timeout(timeout):
            form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge("the form is too large") from None
    except TimeoutError:
        raise body_timed_out(request, "the form", timeout) from None
    except (ValueError, LookupError, web.RequestPayloadError):  # LookupError: an unknown charset
        raise BadRequest("the form could not be read") from None
    # A multipart part may name any charset: UTF-7 decodes to lone surrogates, which no page,
    # log or database can encode.
    if not all(_encodable(k) and (not isinstance(v, str) or _encodable(v)) for k, v in form.items()):
        raise BadRequest("the form could not be read")
    request[FORM] = form
    return form


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _http_message(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "There is nothing here."
    if exc.status == 405:
        return "This page does not take that method."
    if exc.status == 413:
        return "The form is too large."
    return exc.reason


def _error_page(request: web.Request, status: int, title: str, message: str) -> web.Response:
    try:
        return page(request, "error.html", {"status": status, "title": title, "message": message},
                    status=status)
    except Exception:  # noqa: BLE001 - the error page itself failed: plain text, still no trace
        log.exception("error page failed on %s %s", request.method, request.path)
        return web.Response(status=status, text=f"{status} {title}", content_type="text/plain")
