"""The web dashboard at `/dashboard`: tenants manage their hooks in a browser.

Server-rendered pages (jinja2, autoescaped) with no script of their own, mounted as a
sub-application of the gateway so that its middleware (`guard.py`: sessions, CSRF, security
headers, HTML errors) applies to its routes only. Every change goes through the Management
API's own operations (gateway/api/*), scoped to the session's tenant.

    sessions.py   the session cookie and its database row; CSRF tokens
    oidc.py       OpenID Connect: discovery, PKCE, the ID token's verification
    signin.py     sign-in (OIDC, or a token in development) and sign-out
    guard.py      the middleware
    pages.py      rendering, notices, what a handler reads of its request
    forms.py      form fields to API bodies, API errors back to fields
    hooks.py      the hooks pages, health, replay
    secrets.py    secrets and the signing secret
    runner.py     the test runner
    deliveries.py deliveries and their attempts
    health.py     the last 24 h of a hook; chart.py draws it
    operator.py   tenants, backlog and pauses across tenants
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from ..context import SERVICES
from ..tls import client_context
from . import deliveries, hooks, operator, runner, secrets, signin
from .guard import guard
from .oidc import OidcClient
from .pages import OIDC, PREFIX, see_other, session_of

STATIC_DIR = Path(__file__).parent / "static"


async def home(request: web.Request) -> web.StreamResponse:
    session = session_of(request)
    see_other(f"{PREFIX}/hooks" if session.tenant_id is not None else f"{PREFIX}/operator")


def create() -> web.Application:
    """The dashboard as a sub-application (services are set by `mount`)."""
    app = web.Application(middlewares=[guard])
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.PackageLoader("gateway.dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    app.router.add_get("", home, allow_head=False)
    app.router.add_get("/", home, allow_head=False)
    for module in (signin, hooks, secrets, runner, deliveries, operator):
        app.add_routes(module.routes())
    app.router.add_static("/static", STATIC_DIR, append_version=False)
    return app


def mount(parent: web.Application) -> None:
    """Serve the dashboard under `/dashboard` when `[dashboard] enabled` (the parent's services
    must be set)."""
    svc = parent[SERVICES]
    if not svc.settings.dashboard.enabled:
        return
    app = create()
    app[SERVICES] = svc
    settings = svc.settings.dashboard
    if settings.issuer is not None:
        ca_file = svc.settings.egress.ca_file
        client = OidcClient(settings, svc.cipher, clock=svc.clock, allow_cidrs=svc.egress_allow,
                            ssl_context=client_context(ca_file) if ca_file else None)
        app[OIDC] = client

        async def identity_provider(app: web.Application) -> AsyncIterator[None]:
            await client.open()
            yield
            await client.close()

        app.cleanup_ctx.append(identity_provider)
    parent.add_subapp(PREFIX, app)


__all__ = ["create", "mount"]
