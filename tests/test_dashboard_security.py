"""The dashboard facing the internet: a strict Content-Security-Policy and companion headers on
every answer, no inline script or style, a CSRF token on every form (a POST without it or with
a wrong one is 403 and changes nothing), tenant isolation by URL, and escaping of what tenants
typed and receivers answered."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from conftest import Gateway, Received, Receiver
from dashboard_pages import Browser, Browsers, browser_factory, signed_in, text_of

from gateway.points import sample_event

MakeReceiver = Callable[..., Awaitable[Receiver]]
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'; "
       "form-action 'self'; base-uri 'none'")


@pytest.fixture
async def browsers() -> AsyncIterator[Browsers]:
    async with browser_factory() as make:
        yield make


@pytest.fixture
async def browser(gateway: Gateway, browsers: Browsers) -> Browser:
    return await signed_in(browsers, gateway)


def assert_security_headers(resp: Any) -> None:
    assert resp.headers["Content-Security-Policy"] == CSP
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["X-Frame-Options"] == "DENY"


async def test_every_kind_of_answer_carries_the_security_headers(
    gateway: Gateway, browser: Browser, browsers: Browsers
) -> None:
    hook = await gateway.create_hook(name="h")
    for path in ("/dashboard/hooks", f"/dashboard/hooks/{hook['id']}", "/dashboard/hooks/hk_nope",
                 "/dashboard/deliveries", "/dashboard/no-such-page", "/dashboard/static/dashboard.css",
                 "/dashboard"):
        resp = await browser.get(path)
        assert_security_headers(resp)
    anonymous = await browsers(gateway)
    for path in ("/dashboard/signin", "/dashboard/hooks"):  # the sign-in page, a redirect to it
        assert_security_headers(await anonymous.get(path))
    css = await browser.get("/dashboard/static/dashboard.css")
    assert css.status == 200 and css.content_type == "text/css"


async def test_pages_hold_no_inline_script_or_style(gateway: Gateway, browser: Browser) -> None:
    hook = await gateway.create_hook(name="h", triggerId="credentials-exchange")
    base = f"/dashboard/hooks/{hook['id']}"
    for path in ("/dashboard/hooks", base, f"{base}/secrets", f"{base}/test", f"{base}/delete",
                 "/dashboard/deliveries", "/dashboard/health",
                 "/dashboard/hooks/new?point=send-phone-message"):
        status, page = await browser.page(path)
        assert status == 200, path
        assert "<script" not in page.lower(), path
        assert not re.search(r"\sstyle=", page), path
        assert not re.search(r"\son[a-z]+=", page), path  # no inline event handlers
        assert "=&#34;" not in page, path  # every attribute written as markup, none escaped into text


async def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(
    gateway: Gateway, browser: Browser
) -> None:
    hook = await gateway.create_hook(name="kept")
    for fields in ({}, {"csrf": ""}, {"csrf": "forged-token-of-the-right-length-1234567890ab"}):
        resp = await browser.post(f"/dashboard/hooks/{hook['id']}/delete", fields)
        assert resp.status == 403
        assert "CSRF" in text_of(await resp.text())
        assert_security_headers(resp)
        resp = await browser.post("/dashboard/hooks", {**fields, "name": "sneaky",
                                                       "triggerId": "post-change-password",
                                                       "url": "https://x.example/"})
        assert resp.status == 403
    listed = await gateway.client.get("/api/v2/hooks", headers=gateway.auth())
    assert [h["name"] for h in await listed.json()] == ["kept"]


async def test_another_sessions_csrf_token_is_refused(gateway: Gateway, browsers: Browsers) -> None:
    hook = await gateway.create_hook(name="kept")
    alice, mallory = await signed_in(browsers, gateway), await signed_in(browsers, gateway)
    _, mallory_page = await mallory.page("/dashboard/hooks")
    resp = await alice.submit(mallory_page, f"/dashboard/hooks/{hook['id']}/delete")
    assert resp.status == 403
    resp = await gateway.client.get(f"/api/v2/hooks/{hook['id']}", headers=gateway.auth())
    assert resp.status == 200


async def test_tenant_b_cannot_see_or_change_tenant_a_hooks_by_url(
    gateway: Gateway, browsers: Browsers, make_receiver: MakeReceiver
) -> None:
    receiver = await make_receiver()
    await gateway.create_tenant("globex")
    hook = await gateway.create_hook(name="acme-secret-hook", url=receiver.url(), enabled=True)
    resp = await gateway.forward("post-user-registration", sample_event("post-user-registration"))
    delivery_id = (await resp.json())["deliveries"][0]["deliveryId"]
    await gateway.wait_delivery(delivery_id, status="succeeded")
    b = await signed_in(browsers, gateway, tenant="globex")
    base = f"/dashboard/hooks/{hook['id']}"
    for path in (base, f"{base}/secrets", f"{base}/test", f"{base}/delete",
                 f"/dashboard/deliveries/{delivery_id}"):
        resp = await b.get(path)
        assert resp.status == 404, path
        assert "acme-secret-hook" not in await resp.text()
    for path, fields in [
        (base, {"name": "pwned", "url": "https://x.example/"}),
        (f"{base}/disable", {}),
        (f"{base}/delete", {}),
        (f"{base}/secrets", {"name": "X-Evil", "value": "v"}),
        (f"{base}/signing-secret/reveal", {}),
        (f"{base}/signing-secret/rotate", {}),
        (f"{base}/test", {"event": "{}"}),
        (f"{base}/move", {"direction": "up"}),
        (f"{base}/replay", {"since": "2020-01-01T00:00"}),
        (f"/dashboard/deliveries/{delivery_id}/retry", {}),
    ]:
        resp = await b.act(path, fields)
        assert resp.status == 404, path
        assert await gateway.svc.store.get_hook("acme", hook["id"]) is not None
    _, listing = await b.page("/dashboard/deliveries")
    assert delivery_id not in listing
    _, listing = await b.page(f"/dashboard/deliveries?hook={hook['id']}")
    assert delivery_id not in listing
    after = await gateway.svc.store.get_hook("acme", hook["id"])
    assert after is not None and after.name == "acme-secret-hook" and after.enabled
    assert len(receiver.requests) == 1


async def _scripted(request: web.Request, received: Received, state: dict[str, Any]) -> web.StreamResponse:
    return web.Response(status=500, text='<script>alert("x")</script>', content_type="text/html")


async def test_a_receiver_answer_with_a_script_is_shown_as_text(
    make_gateway: Callable[..., Awaitable[Gateway]], make_settings: Callable[..., Any], browsers: Browsers,
    make_receiver: MakeReceiver,
) -> None:
    gateway = await make_gateway(make_settings(delivery={"retry_schedule": ["1h"]}))
    await gateway.create_tenant("acme")
    browser = await signed_in(browsers, gateway)
    receiver = await make_receiver(_scripted)
    await gateway.create_hook(name="scripted", url=receiver.url(), enabled=True)
    resp = await gateway.forward("post-user-registration", sample_event("post-user-registration"))
    delivery_id = (await resp.json())["deliveries"][0]["deliveryId"]
    await gateway.wait_delivery(delivery_id, attempts=1)
    _, page = await browser.page(f"/dashboard/deliveries/{delivery_id}")
    assert '<script>alert("x")</script>' not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "<script" not in page.lower()


async def test_a_cross_site_post_without_the_token_is_refused(gateway: Gateway, browser: Browser) -> None:
    """A cross-site form post arrives without the page's token (the attacker cannot read it)."""
    resp = await browser.session.post(browser.url("/dashboard/signout"), data={},
                                      headers={"Origin": "https://evil.example"}, allow_redirects=False)
    assert resp.status == 403
    assert (await browser.get("/dashboard/hooks")).status == 200
