"""Rendering a page: the template with the context every page shares, notices after a
redirect, and what a handler reads of its request (the session, the checked form)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NoReturn

import aiohttp_jinja2
from aiohttp import web
from multidict import MultiDictProxy

from .. import points
from ..auth import SCOPE_ADMIN, SCOPE_READ
from ..context import SERVICES, Services
from ..delivery import ENGINE, DeliveryEngine
from ..errors import Forbidden
from .oidc import OidcClient
from .sessions import Session

PREFIX = "/dashboard"
SESSION: web.RequestKey[Session] = web.RequestKey("dashboard_session", Session)
OIDC: web.AppKey[OidcClient] = web.AppKey("dashboard_oidc", OidcClient)
FORM: web.RequestKey[MultiDictProxy[Any]] = web.RequestKey("dashboard_form", MultiDictProxy)

# What a page says after a redirect (`?done=<key>`): fixed texts, so nothing from the URL is shown.
NOTICES = {
    "created": "Hook created.",
    "saved": "Changes saved.",
    "enabled": "Hook enabled.",
    "disabled": "Hook disabled.",
    "moved": "Order of the chain changed.",
    "deleted": "Hook deleted.",
    "secret-added": "Secret added. Its value is not shown again.",
    "secret-updated": "Secret updated. Its value is not shown again.",
    "secret-deleted": "Secret deleted.",
    "rotated": "Signing secret rotated. The previous secret keeps signing until the time shown.",
    "retried": "Delivery queued for another attempt.",
    "replayed": "Replay queued.",
    "tenant-created": "Tenant created.",
    "tenant-saved": "Tenant saved.",
    "signed-out": "You are signed out.",
    "expired": "Your session has ended. Sign in again.",
}

POINT_TEXT = {
    points.CREDENTIALS_EXCHANGE: "Runs when an access token is issued with the client credentials grant: "
    "change its scopes and add custom claims.",
    points.PRE_USER_REGISTRATION: "Runs before a user is created: add user or app metadata, or deny the "
    "signup.",
    points.SEND_PHONE_MESSAGE: "Sends SMS and voice messages for multi-factor authentication through your "
    "provider. One hook may be enabled.",
    points.POST_USER_REGISTRATION: "Runs after a user is created: tell other systems. Delivered durably, "
    "with retries.",
    points.POST_CHANGE_PASSWORD: "Runs after a user changes their password: tell other systems. Delivered "
    "durably, with retries.",
}


def svc_of(request: web.Request) -> Services:
    return request.config_dict[SERVICES]


def engine_of(request: web.Request) -> DeliveryEngine:
    return request.config_dict[ENGINE]


def session_of(request: web.Request) -> Session:
    return request[SESSION]


def form_of(request: web.Request) -> MultiDictProxy[Any]:
    return request[FORM]


def tenant_of(request: web.Request, scope: str = SCOPE_READ) -> str:
    """The session's tenant, when the session holds `scope`; else 403."""
    session = session_of(request)
    if session.tenant_id is None:
        raise Forbidden("this page belongs to a tenant; your sign-in names none")
    require(request, scope)
    return session.tenant_id


def require(request: web.Request, scope: str) -> None:
    if not session_of(request).can(scope):
        raise Forbidden("your sign-in does not allow this (it needs the permission to change things)"
                        if scope != SCOPE_READ else "your sign-in does not allow this")


def when(ts: float | None) -> str:
    """A time as people read it (UTC), or an em dash."""
    if ts is None or not 0 <= ts < 253_402_300_800:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def redirect(location: str) -> web.Response:
    """A 303 to `location`, as a response (cookies can be set on it)."""
    return web.Response(status=303, headers={"Location": location})


def see_other(location: str) -> NoReturn:
    raise web.HTTPSeeOther(location=location)


def done(location: str, notice: str) -> NoReturn:
    """Redirect after a successful POST, with a notice the next page shows."""
    assert notice in NOTICES
    sep = "&" if "?" in location else "?"
    raise web.HTTPSeeOther(location=f"{location}{sep}done={notice}")


def page(request: web.Request, template: str, context: Mapping[str, Any] | None = None, *,
         status: int = 200) -> web.Response:
    session = request.get(SESSION)
    svc = svc_of(request)
    shared: dict[str, Any] = {
        "session": session,
        "csrf": session.csrf if session is not None else None,
        "is_admin": session is not None and session.tenant_id is None and session.can(SCOPE_ADMIN),
        "notice": NOTICES.get(request.query.get("done", "")),
        "when": when,
        "path": request.path,
        "mode": svc.settings.server.mode,
        "point_text": POINT_TEXT,
    }
    shared.update(context or {})
    return aiohttp_jinja2.render_template(template, request, shared, status=status)
