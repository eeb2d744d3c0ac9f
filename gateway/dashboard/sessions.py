"""Dashboard sessions: a random 256-bit token in a cookie, its SHA-256 in the database.

The database row is the session (every instance of a deployment sees it). A session ends at
its bounded lifetime, after an idle timeout, or when its user signs out (the row is deleted,
so the old cookie is worthless). The CSRF token of a session is an HMAC of its token: it is
per session, needs no storage, and is compared in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from aiohttp import web

from ..context import Services
from ..peers import contains, peer_address
from ..store.models import DashboardSession

SESSION_COOKIE = "gw_session"
PRESESSION_COOKIE = "gw_presession"  # CSRF of the forms shown before a session exists (sign-in)
COOKIE_PATH = "/dashboard"
TOKEN_BYTES = 32  # 256 bits
TOUCH_INTERVAL_S = 60.0  # last activity is written at most this often per session
_CSRF_LABEL = b"gateway-dashboard-csrf"
# What new_token makes. A cookie of any other shape (bytes that are not UTF-8 included: a
# sibling site may set one) is no token, never an error.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")


def new_token() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(TOKEN_BYTES)).rstrip(b"=").decode()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_of(token: str) -> str:
    """The CSRF token of the session whose cookie holds `token`."""
    mac = hmac.new(token.encode(), _CSRF_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two tokens (any text compares, never raises)."""
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


@dataclass(frozen=True, slots=True)
class Session:
    """The session of the request: its record, and the CSRF token its forms carry."""

    record: DashboardSession
    csrf: str

    @property
    def tenant_id(self) -> str | None:
        return self.record.tenant_id

    def can(self, scope: str) -> bool:
        return scope in self.record.scopes


def is_secure(request: web.Request, svc: Services) -> bool:
    """Whether the request came over TLS: the socket's own, or a trusted proxy's
    `X-Forwarded-Proto: https`, or the operator says so (`[dashboard] secure_cookies`)."""
    if svc.settings.dashboard.secure_cookies or request.secure:
        return True
    socket_peer = peer_address(request, ())
    if contains(svc.trusted_proxies, socket_peer):
        return request.headers.get("X-Forwarded-Proto", "").split(",")[-1].strip().lower() == "https"
    return False


def set_cookie(response: web.StreamResponse, request: web.Request, svc: Services, name: str, value: str,
               *, max_age: int | None = None) -> None:
    response.set_cookie(
        name, value, path=COOKIE_PATH, httponly=True, samesite="Lax", secure=is_secure(request, svc),
        max_age=max_age,
    )


def clear_cookie(response: web.StreamResponse, request: web.Request, svc: Services, name: str) -> None:
    response.set_cookie(name, "", path=COOKIE_PATH, httponly=True, samesite="Lax",
                        secure=is_secure(request, svc), max_age=0, expires="Thu, 01 Jan 1970 00:00:00 GMT")


async def start(
    svc: Services,
    request: web.Request,
    response: web.StreamResponse,
    *,
    tenant_id: str | None,
    subject: str,
    display_name: str,
    scopes: frozenset[str],
    method: str,
    not_after: float | None = None,
) -> Session:
    """A new session (stored), its cookie set on `response`."""
    now = svc.clock()
    expires_at = now + svc.settings.dashboard.session_lifetime
    if not_after is not None:
        expires_at = min(expires_at, not_after)
    token = new_token()
    record = DashboardSession(
        token_hash=token_hash(token),
        tenant_id=tenant_id,
        subject=subject,
        display_name=display_name,
        scopes=scopes,
        method=method,
        created_at=now,
        last_seen_at=now,
        expires_at=expires_at,
    )
    await svc.store.create_session(record)
    set_cookie(response, request, svc, SESSION_COOKIE, token, max_age=max(1, int(expires_at - now)))
    return Session(record, csrf_of(token))


async def load(svc: Services, request: web.Request) -> tuple[Session | None, bool]:
    """The request's live session, and whether the request carried a session cookie at all (an
    expired or ended session: the sign-in page says so). An expired session is deleted."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None, False
    if not _TOKEN.fullmatch(token):
        return None, True
    hashed = token_hash(token)
    record = await svc.store.get_session(hashed)
    if record is None:
        return None, True
    now = svc.clock()
    idle = svc.settings.dashboard.session_idle_timeout
    if now >= record.expires_at or now - record.last_seen_at >= idle:
        await svc.store.delete_session(hashed)
        return None, True
    if now - record.last_seen_at >= min(TOUCH_INTERVAL_S, idle / 4):
        await svc.store.touch_session(hashed, now)
    return Session(record, csrf_of(token)), True


async def end(svc: Services, request: web.Request, response: web.StreamResponse) -> None:
    """Delete the request's session from the database and clear its cookie."""
    token = request.cookies.get(SESSION_COOKIE)
    if token and _TOKEN.fullmatch(token):
        await svc.store.delete_session(token_hash(token))
    clear_cookie(response, request, svc, SESSION_COOKIE)


def presession_token(request: web.Request) -> str | None:
    """The pre-session CSRF token of the request's cookie, if it carries a well-formed one."""
    token = request.cookies.get(PRESESSION_COOKIE)
    return token if token and _TOKEN.fullmatch(token) else None
