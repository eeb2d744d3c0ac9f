"""Helpers of the dashboard's tests: a browser-like client of one gateway (its own cookie jar),
the CSRF token of a page, form posts, and signing in."""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientResponse, ClientSession, CookieJar
from conftest import HOOK_SCOPES, Gateway

from gateway.auth import SCOPE_ADMIN, mint

Fields = dict[str, Any] | list[tuple[str, str]]
_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_in(page: str) -> str:
    found = _CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return html.unescape(found.group(1))


def text_of(page: str) -> str:
    """The page's visible text, tags dropped and entities decoded, spaces squeezed."""
    body = re.sub(r"<[^>]+>", " ", page)
    return re.sub(r"\s+", " ", html.unescape(body)).strip()


@dataclass
class Browser:
    """One user's browser: a client session with its own cookies, against one gateway."""

    gateway: Gateway
    session: ClientSession

    def url(self, path: str) -> str:
        return str(self.gateway.client.make_url(path))

    async def get(self, path: str, **kw: Any) -> ClientResponse:
        return await self.session.get(self.url(path), allow_redirects=kw.pop("allow_redirects", False), **kw)

    async def page(self, path: str) -> tuple[int, str]:
        """GET a page, following redirects within the gateway."""
        resp = await self.session.get(self.url(path))
        return resp.status, await resp.text()

    async def post(self, path: str, data: Fields, *,
                   follow: bool = True) -> ClientResponse:
        return await self.session.post(self.url(path), data=data, allow_redirects=follow)

    async def submit(self, form_page: str, path: str, fields: Fields | None = None, *,
                     follow: bool = True) -> ClientResponse:
        """POST `fields` to `path` with the CSRF token of `form_page`, as the form would."""
        token = csrf_in(form_page)
        data: Fields = (
            [("csrf", token), *fields] if isinstance(fields, list) else {"csrf": token, **(fields or {})}
        )
        return await self.post(path, data, follow=follow)

    async def act(self, path: str, fields: Fields | None = None, *, on: str = "/dashboard/hooks",
                  follow: bool = True) -> ClientResponse:
        """POST with the session's CSRF token, read from the page `on`."""
        _, page = await self.page(on)
        return await self.submit(page, path, fields, follow=follow)

    def cookie(self, name: str) -> str | None:
        for c in self.session.cookie_jar:
            if c.key == name:
                return c.value
        return None


Browsers = Callable[[Gateway], Awaitable[Browser]]


@contextlib.asynccontextmanager
async def browser_factory() -> AsyncIterator[Browsers]:
    """A factory of browsers (each with its own cookie jar), closed on leaving. Each test module
    makes it its `browsers` fixture."""
    opened: list[ClientSession] = []

    async def make(gateway: Gateway) -> Browser:
        session = ClientSession(cookie_jar=CookieJar(unsafe=True))
        opened.append(session)
        return Browser(gateway, session)

    try:
        yield make
    finally:
        for session in opened:
            await session.close()


async def sign_in_with_token(browser: Browser, token: str) -> ClientResponse:
    _, page = await browser.page("/dashboard/signin")
    return await browser.submit(page, "/dashboard/signin/token", {"token": token})


def tenant_token(gateway: Gateway, tenant: str = "acme", scopes: tuple[str, ...] = HOOK_SCOPES) -> str:
    return mint(gateway.settings, tenant=tenant, scopes=scopes, ttl_s=3600)


def operator_token(gateway: Gateway) -> str:
    return mint(gateway.settings, tenant=None, scopes=(SCOPE_ADMIN,), ttl_s=3600)


async def signed_in(browsers: Browsers, gateway: Gateway, tenant: str = "acme",
                    scopes: tuple[str, ...] = HOOK_SCOPES) -> Browser:
    browser = await browsers(gateway)
    resp = await sign_in_with_token(browser, tenant_token(gateway, tenant, scopes))
    assert resp.status == 200 and resp.url.path == "/dashboard/hooks", await resp.text()
    return browser
