"""The browser harness itself works: Chromium opens loopback pages and reaches nothing else,
axe-core tells a bad page from a good one, and the test OpenID Connect provider signs a user in
through the authorization code flow with PKCE, in Chromium and over plain HTTP."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, Page

from .harness import (
    ALICE,
    BOB,
    CONTEXT_OPTIONS,
    PERMISSIONS_CLAIM,
    STATIC_CLIENT,
    TENANT_CLAIM,
    GatewayProcess,
    LoopbackGuard,
    OidcClient,
    OidcProvider,
    assert_accessible,
    axe_violations,
    screenshot,
    sign_in_oidc,
)

AiohttpServer = Callable[..., Awaitable[TestServer]]

# What the dashboard will send: no inline script, nothing from elsewhere.
STRICT_CSP = "default-src 'self'; script-src 'self'; frame-ancestors 'none'"
PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNk+A8AAQUBAScY42YAAAAASUVORK5CYII=")


def _page(body: str, title: str = "Harness page") -> str:
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"</head><body><main><h1>{title}</h1>{body}</main></body></html>")


async def _static_site(
    aiohttp_server: AiohttpServer, pages: dict[str, str], csp: str = STRICT_CSP
) -> TestServer:
    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/pixel.png":
            return web.Response(body=PIXEL_PNG, content_type="image/png")
        html = pages.get(request.path)
        if html is None:
            raise web.HTTPNotFound()
        return web.Response(text=html, content_type="text/html", headers={"Content-Security-Policy": csp})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    return await aiohttp_server(app, host="127.0.0.1")


async def test_axe_reports_an_image_without_alt_and_passes_a_good_page(
    page: Page, aiohttp_server: AiohttpServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = await _static_site(aiohttp_server, {
        # The inline script would retitle the page if the CSP were not enforced.
        "/bad": _page('<img src="/pixel.png"><script>document.title = "inline ran"</script>'),
        "/good": _page('<img src="/pixel.png" alt="A single pixel"><p>Fine.</p>'),
    })

    await page.goto(str(site.make_url("/bad")))
    violations = await axe_violations(page)
    assert {v["id"]: v["impact"] for v in violations}.get("image-alt") == "critical", violations
    with pytest.raises(AssertionError, match="image-alt"):
        await assert_accessible(page)
    assert await page.title() == "Harness page"  # axe ran, yet the page's CSP still held

    await page.goto(str(site.make_url("/good")))
    assert await axe_violations(page) == []
    await assert_accessible(page)

    monkeypatch.setenv("TEST_SCREENSHOTS", "1")
    shot = await screenshot(page, "harness-good-page", directory=tmp_path)
    assert shot is not None and shot.read_bytes().startswith(b"\x89PNG")
    monkeypatch.delenv("TEST_SCREENSHOTS")
    assert await screenshot(page, "harness-good-page", directory=tmp_path / "off") is None
    assert not (tmp_path / "off").exists()


async def test_pages_reach_nothing_beyond_loopback(chromium: Browser, aiohttp_server: AiohttpServer) -> None:
    site = await _static_site(aiohttp_server, {
        "/": _page('<img src="http://192.0.2.1/a.png" alt="a"><img src="http://example.com/b.png" alt="b">'
                   '<img src="/pixel.png" alt="c">'),
    }, csp="default-src *")  # the page itself would let them go
    context = await chromium.new_context(**CONTEXT_OPTIONS)
    guard = LoopbackGuard()
    await guard.attach(context)
    page = await context.new_page()

    await page.goto(str(site.make_url("/")))
    await page.wait_for_load_state("load")

    assert sorted(guard.blocked) == ["http://192.0.2.1/a.png", "http://example.com/b.png"]
    assert await page.evaluate("() => document.images[2].complete && document.images[2].naturalWidth") == 1


async def test_provider_publishes_a_code_flow_with_pkce(oidc_provider: OidcProvider) -> None:
    doc = await oidc_provider.discovery()

    assert doc["issuer"] == oidc_provider.issuer
    assert doc["authorization_endpoint"].startswith(oidc_provider.issuer + "/")
    assert doc["response_types_supported"] == ["code"]
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert {TENANT_CLAIM, PERMISSIONS_CLAIM} <= set(doc["claims_supported"])
    assert doc["registration_endpoint"] == oidc_provider.issuer + "/reg"


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _authorize_url(doc: dict[str, Any], client: OidcClient, *, challenge: str | None, state: str,
                   nonce: str) -> str:
    params = {"client_id": client.client_id, "redirect_uri": client.redirect_uri, "response_type": "code",
              "scope": "openid email profile", "state": state, "nonce": nonce}
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    return f"{doc['authorization_endpoint']}?{urlencode(params)}"


async def _id_token(doc: dict[str, Any], client: OidcClient, code: str, verifier: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as http:
        resp = await http.post(doc["token_endpoint"], auth=(client.client_id, client.client_secret), data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": client.redirect_uri,
            "code_verifier": verifier,
        })
        assert resp.status_code == 200, resp.text
        jwks = (await http.get(doc["jwks_uri"])).json()
    token = resp.json()["id_token"]
    key = jwt.PyJWKSet.from_dict(jwks)[jwt.get_unverified_header(token)["kid"]]
    return jwt.decode(token, key, algorithms=["RS256"], audience=client.client_id, issuer=doc["issuer"])


async def test_provider_signs_in_over_http_only_with_pkce_and_the_right_password(
    oidc_provider: OidcProvider,
) -> None:
    doc = await oidc_provider.discovery()
    client = STATIC_CLIENT  # configured through the provider's environment
    verifier, challenge = _pkce()
    async with httpx.AsyncClient() as http:
        refused = await http.get(_authorize_url(doc, client, challenge=None, state="s0", nonce="n0"))
        assert refused.status_code == 303
        assert parse_qs(urlsplit(refused.headers["location"]).query)["error"] == ["invalid_request"]

        resp = await http.get(_authorize_url(doc, client, challenge=challenge, state="s1", nonce="n1"))
        login_url = urljoin(oidc_provider.issuer, resp.headers["location"])
        form = await http.get(login_url)
        assert form.status_code == 200 and 'name="password"' in form.text
        wrong = await http.post(login_url + "/login", data={"username": "alice", "password": "nope"})
        assert wrong.status_code == 401 and "Wrong username or password" in wrong.text

        right = {"username": ALICE.username, "password": ALICE.password}
        resp = await http.post(login_url + "/login", data=right)
        for _ in range(10):  # provider redirects (resume, consent) until the client's callback
            location = urljoin(oidc_provider.issuer, resp.headers["location"])
            if location.startswith(client.redirect_uri):
                break
            resp = await http.get(location)
        answer = parse_qs(urlsplit(location).query)
    assert answer["state"] == ["s1"], answer

    claims = await _id_token(doc, client, answer["code"][0], verifier)
    assert (claims["sub"], claims["nonce"]) == ("alice", "n1")
    assert (claims[TENANT_CLAIM], claims[PERMISSIONS_CLAIM]) == ("acme", ["read:hooks", "write:hooks"])


async def test_code_flow_through_chromium_yields_an_id_token_with_the_tenant_claim(
    oidc_provider: OidcProvider, page: Page, make_receiver: Callable[..., Awaitable[Any]]
) -> None:
    receiver = await make_receiver()  # the "application": only takes the redirect
    client = await oidc_provider.register_client(receiver.url("/callback"))
    doc = await oidc_provider.discovery()
    verifier, challenge = _pkce()

    await page.goto(_authorize_url(doc, client, challenge=challenge, state="st", nonce="nn"))
    await sign_in_oidc(page, BOB)

    assert page.url.startswith(client.redirect_uri)
    (callback,) = receiver.requests
    answer = parse_qs(urlsplit(callback.path).query)
    assert answer["state"] == ["st"]
    claims = await _id_token(doc, client, answer["code"][0], verifier)
    assert (claims["sub"], claims["nonce"], claims[TENANT_CLAIM]) == ("bob", "nn", "beta")
    assert claims[PERMISSIONS_CLAIM] == ["read:hooks", "write:hooks"]


async def test_gateway_process_starts_on_a_sqlite_file_and_serves_its_api(
    start_gateway: Callable[..., Awaitable[GatewayProcess]],
) -> None:
    gw = await start_gateway()
    await gw.create_tenant("acme")
    hook = await gw.create_hook("acme", name="first")

    async with httpx.AsyncClient(base_url=gw.base) as http:
        listed = (await http.get("/api/v2/hooks", headers=gw.auth("acme"))).json()
    assert [h["id"] for h in listed] == [hook["id"]]
    assert gw.base.startswith("http://127.0.0.1:")
