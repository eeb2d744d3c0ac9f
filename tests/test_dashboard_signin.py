"""Signing in to the dashboard: by token in development mode only, with OpenID Connect (code +
PKCE + state + nonce) against a real provider on loopback; sessions that end (expiry, idle,
sign-out on the server) and the cookie's flags; the tenant's allowlist."""

from __future__ import annotations

import hashlib
import re
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trustme
from aiohttp import ClientResponse
from aiohttp.test_utils import TestServer
from backends import sql
from conftest import Gateway
from dashboard_pages import (
    Browser,
    Browsers,
    browser_factory,
    csrf_in,
    operator_token,
    sign_in_with_token,
    signed_in,
    tenant_token,
    text_of,
)
from oidc_fake_provider import CLIENT_ID, CLIENT_SECRET, Provider, start_provider

from gateway.errors import ConfigError
from gateway.settings import Settings


@pytest.fixture
async def browsers() -> AsyncIterator[Browsers]:
    async with browser_factory() as make:
        yield make


MakeGateway = Callable[..., Awaitable[Gateway]]
TENANT_CLAIM = "https://hooks.example.com/tenant"


# -- token sign-in -------------------------------------------------------------------------------


async def test_token_sign_in_works_in_development_mode(gateway: Gateway, browsers: Browsers) -> None:
    browser = await browsers(gateway)
    resp = await sign_in_with_token(browser, tenant_token(gateway))
    assert resp.status == 200
    assert resp.url.path == "/dashboard/hooks"
    page = await resp.text()
    assert "send-phone-message" in page and "tenant <strong>acme</strong>" in page


async def test_token_sign_in_is_refused_in_production_mode(
    make_gateway: MakeGateway, make_settings: Callable[..., Settings], browsers: Browsers
) -> None:
    gw = await make_gateway(make_settings(server={"mode": "production"}))
    await gw.create_tenant("acme")
    browser = await browsers(gw)
    status, page = await browser.page("/dashboard/signin")
    assert status == 200
    assert "Management token" not in page  # the form is not even offered
    # posted all the same, with a valid pre-session CSRF token
    resp = await browser.post("/dashboard/signin/token", {"csrf": browser.cookie("gw_presession") or "",
                                                          "token": tenant_token(gw)})
    assert resp.status == 403
    assert "turned off in production mode" in text_of(await resp.text())
    assert browser.cookie("gw_session") is None
    resp = await browser.get("/dashboard/hooks")
    assert resp.status == 303 and resp.headers["Location"].startswith("/dashboard/signin")


async def test_a_bad_token_is_refused_and_opens_no_session(gateway: Gateway, browsers: Browsers) -> None:
    browser = await browsers(gateway)
    resp = await sign_in_with_token(browser, tenant_token(gateway)[:-4] + "AAAA")
    assert resp.status == 401
    assert "signature does not verify" in text_of(await resp.text())
    assert browser.cookie("gw_session") is None


async def test_a_token_of_an_unknown_tenant_is_refused(gateway: Gateway, browsers: Browsers) -> None:
    browser = await browsers(gateway)
    resp = await sign_in_with_token(browser, tenant_token(gateway, "nobody"))
    assert resp.status == 403
    assert "does not exist" in text_of(await resp.text())


async def test_an_operator_token_opens_the_operator_view(gateway: Gateway, browsers: Browsers) -> None:
    browser = await browsers(gateway)
    resp = await sign_in_with_token(browser, operator_token(gateway))
    assert resp.status == 200 and resp.url.path == "/dashboard/operator"
    assert "Create a tenant" in await resp.text()


async def test_the_sign_in_form_needs_its_csrf_token(gateway: Gateway, browsers: Browsers) -> None:
    browser = await browsers(gateway)
    await browser.page("/dashboard/signin")
    resp = await browser.post("/dashboard/signin/token", {"token": tenant_token(gateway)})
    assert resp.status == 403
    assert browser.cookie("gw_session") is None


# -- cookie and session lifetime ----------------------------------------------------------------


def _session_cookie_header(resp: ClientResponse) -> str:
    for history in (*resp.history, resp):
        for value in history.headers.getall("Set-Cookie", []):
            if value.startswith("gw_session=") and "Max-Age=0" not in value:
                return str(value)
    raise AssertionError("no session cookie was set")


async def test_the_session_cookie_is_httponly_lax_and_scoped_to_the_dashboard(
    gateway: Gateway, browsers: Browsers
) -> None:
    browser = await browsers(gateway)
    header = _session_cookie_header(await sign_in_with_token(browser, tenant_token(gateway)))
    attributes = {part.strip().split("=")[0].lower(): part.strip() for part in header.split(";")[1:]}
    assert "httponly" in attributes
    assert attributes["samesite"].lower() == "samesite=lax"
    assert attributes["path"] == "Path=/dashboard"
    assert "secure" not in attributes  # plain HTTP without [dashboard] secure_cookies
    token = header.split(";")[0].split("=", 1)[1]
    assert len(token) >= 43  # 256 random bits, base64url


async def test_secure_cookies_marks_the_session_cookie_secure(
    make_gateway: MakeGateway, make_settings: Callable[..., Settings], browsers: Browsers
) -> None:
    gw = await make_gateway(make_settings(dashboard={"secure_cookies": True}))
    await gw.create_tenant("acme")
    browser = await browsers(gw)
    _, page = await browser.page("/dashboard/signin")
    # the client does not send a Secure cookie back over plain HTTP: post the pre-session token as set
    resp = await browser.session.post(browser.url("/dashboard/signin/token"), allow_redirects=False,
                                      data={"csrf": _presession(page), "token": tenant_token(gw)},
                                      cookies={"gw_presession": _presession(page)})
    assert resp.status == 303
    assert "Secure" in [p.strip() for p in _session_cookie_header(resp).split(";")]


def _presession(page: str) -> str:
    return csrf_in(page)


async def test_the_database_keeps_only_the_hash_of_the_session_token(
    gateway: Gateway, browsers: Browsers
) -> None:
    browser = await browsers(gateway)
    await sign_in_with_token(browser, tenant_token(gateway))
    token = browser.cookie("gw_session")
    assert token
    rows = await sql(gateway.svc.store, "SELECT token_hash FROM dashboard_sessions")
    assert [r[0] for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_an_idle_session_expires_and_sends_back_to_sign_in(
    make_gateway: MakeGateway, make_settings: Callable[..., Settings], browsers: Browsers
) -> None:
    clock = Clock(time.time())
    settings = make_settings(dashboard={"session_idle_timeout": "10m", "session_lifetime": "8h"})
    gw = await make_gateway(settings, clock=clock, start_workers=False)
    await gw.create_tenant("acme")
    browser = await signed_in(browsers, gw)
    clock.now += 9 * 60
    assert (await browser.get("/dashboard/hooks")).status == 200  # activity within the idle timeout
    clock.now += 9 * 60
    assert (await browser.get("/dashboard/hooks")).status == 200
    clock.now += 11 * 60
    resp = await browser.get("/dashboard/hooks")
    assert resp.status == 303 and resp.headers["Location"] == "/dashboard/signin?done=expired"
    status, page = await browser.page(resp.headers["Location"])
    assert status == 200 and "Your session has ended" in page and "Sign in" in page


async def test_a_session_ends_at_its_lifetime_however_active(
    make_gateway: MakeGateway, make_settings: Callable[..., Settings], browsers: Browsers
) -> None:
    clock = Clock(time.time())
    settings = make_settings(dashboard={"session_idle_timeout": "10m", "session_lifetime": "1h"})
    gw = await make_gateway(settings, clock=clock, start_workers=False)
    await gw.create_tenant("acme")
    browser = await signed_in(browsers, gw)
    for _ in range(11):  # every 5 minutes for 55 minutes
        clock.now += 5 * 60
        assert (await browser.get("/dashboard/hooks")).status == 200
    clock.now += 5 * 60
    resp = await browser.get("/dashboard/hooks")
    assert resp.status == 303 and resp.headers["Location"].startswith("/dashboard/signin")


async def test_sign_out_ends_the_session_on_the_server(gateway: Gateway, browsers: Browsers) -> None:
    browser = await signed_in(browsers, gateway)
    token = browser.cookie("gw_session")
    assert token
    resp = await browser.act("/dashboard/signout")
    assert resp.status == 200 and resp.url.path == "/dashboard/signin"
    assert "You are signed out" in await resp.text()
    # the old cookie, replayed by someone who kept it, no longer opens anything
    thief = await browsers(gateway)
    resp = await thief.session.get(thief.url("/dashboard/hooks"), allow_redirects=False,
                                   cookies={"gw_session": token})
    assert resp.status == 303 and resp.headers["Location"].startswith("/dashboard/signin")
    assert await sql(gateway.svc.store, "SELECT COUNT(*) FROM dashboard_sessions") == [(0,)]


async def test_sign_out_without_the_csrf_token_is_refused(gateway: Gateway, browsers: Browsers) -> None:
    browser = await signed_in(browsers, gateway)
    resp = await browser.post("/dashboard/signout", {})
    assert resp.status == 403
    assert (await browser.get("/dashboard/hooks")).status == 200  # still signed in


async def test_the_tenant_allowlist_applies_to_the_dashboard(gateway: Gateway, browsers: Browsers) -> None:
    browser = await signed_in(browsers, gateway)
    resp = await gateway.client.patch("/api/v2/tenants/acme", json={"allowedCidrs": ["10.9.0.0/16"]},
                                      headers={"Authorization": f"Bearer {gateway.operator_token()}"})
    assert resp.status == 200
    resp = await browser.get("/dashboard/hooks")
    assert resp.status == 403
    assert "not allowed for tenant" in text_of(await resp.text())
    other = await browsers(gateway)
    resp = await sign_in_with_token(other, tenant_token(gateway))
    assert resp.status == 403
    assert other.cookie("gw_session") is None


# -- OpenID Connect ------------------------------------------------------------------------------


@pytest.fixture
async def provider(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Provider:
    return await start_provider(aiohttp_server)


@pytest.fixture
async def oidc_gateway(make_gateway: MakeGateway, make_settings: Callable[..., Settings],
                       provider: Provider) -> Gateway:
    gw = await make_gateway(make_settings(dashboard={
        "issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "tenant_claim": TENANT_CLAIM, "scope_claim": "permissions",
    }))
    await gw.create_tenant("acme")
    await gw.create_tenant("globex")
    return gw


async def _oidc_sign_in(browser: Browser, *, state: str | None = None) -> ClientResponse:
    """Start at the dashboard, go through the provider's authorization endpoint, come back."""
    start = await browser.get("/dashboard/signin/oidc")
    assert start.status == 303, await start.text()
    authorize = start.headers["Location"]
    at_provider = await browser.session.get(authorize, allow_redirects=False)
    assert at_provider.status == 302, await at_provider.text()
    callback = at_provider.headers["Location"]
    if state is not None:
        parts = urlsplit(callback)
        query = parse_qs(parts.query)
        callback = f"{parts.scheme}://{parts.netloc}{parts.path}?code={query['code'][0]}&state={state}"
    return await browser.session.get(callback)


async def test_oidc_sign_in_with_code_and_pkce_opens_a_session_of_the_claimed_tenant(
    oidc_gateway: Gateway, provider: Provider, browsers: Browsers
) -> None:
    provider.user = {"sub": "u-1", "email": "ada@globex.example", TENANT_CLAIM: "globex",
                     "permissions": ["write:hooks"]}
    browser = await browsers(oidc_gateway)
    resp = await _oidc_sign_in(browser)
    assert resp.status == 200 and resp.url.path == "/dashboard/hooks"
    page = await resp.text()
    assert "ada@globex.example" in page and "tenant <strong>globex</strong>" in page
    request = provider.authorize_requests[0]
    assert request["code_challenge_method"] == "S256" and len(request["code_challenge"]) == 43
    assert request["state"] and request["nonce"]
    assert request["redirect_uri"] == browser.url("/dashboard/auth/callback")
    token_request = provider.token_requests[0]
    assert token_request["code_verifier"] and token_request["authorization"].startswith("Basic ")
    # a writer can change things
    resp = await browser.act("/dashboard/hooks", {"name": "made-by-oidc", "triggerId": "post-change-password",
                                                  "url": "https://hooks.example.com/x"})
    assert resp.status == 200 and resp.url.path.startswith("/dashboard/hooks/hk_")


async def test_oidc_sign_in_needs_the_provider_entry_page(oidc_gateway: Gateway, browsers: Browsers) -> None:
    _, page = await (await browsers(oidc_gateway)).page("/dashboard/signin")
    assert 'href="/dashboard/signin/oidc"' in page


async def test_a_wrong_state_is_refused(
    oidc_gateway: Gateway, provider: Provider, browsers: Browsers
) -> None:
    provider.user = {"sub": "u-1", TENANT_CLAIM: "acme", "permissions": ["write:hooks"]}
    browser = await browsers(oidc_gateway)
    resp = await _oidc_sign_in(browser, state="forged-state")
    assert resp.status == 403
    assert "state does not match" in text_of(await resp.text())
    assert browser.cookie("gw_session") is None
    assert provider.token_requests == []  # the code was not even exchanged


async def test_a_wrong_nonce_is_refused(
    oidc_gateway: Gateway, provider: Provider, browsers: Browsers
) -> None:
    provider.user = {"sub": "u-1", TENANT_CLAIM: "acme", "permissions": ["write:hooks"]}
    provider.tamper = "nonce"
    browser = await browsers(oidc_gateway)
    resp = await _oidc_sign_in(browser)
    assert resp.status == 403
    assert "nonce does not match" in text_of(await resp.text())
    assert browser.cookie("gw_session") is None


@pytest.mark.parametrize("tamper", ["audience", "signature", "expired"])
async def test_an_id_token_that_does_not_verify_is_refused(
    oidc_gateway: Gateway, provider: Provider, browsers: Browsers, tamper: str
) -> None:
    provider.user = {"sub": "u-1", TENANT_CLAIM: "acme", "permissions": ["write:hooks"]}
    provider.tamper = tamper
    browser = await browsers(oidc_gateway)
    resp = await _oidc_sign_in(browser)
    assert resp.status == 403
    assert browser.cookie("gw_session") is None


async def test_a_callback_without_a_started_sign_in_is_refused(
    oidc_gateway: Gateway, provider: Provider, browsers: Browsers
) -> None:
    provider.user = {"sub": "u-1", TENANT_CLAIM: "acme", "permissions": ["write:hooks"]}
    starter, victim = await browsers(oidc_gateway), await browsers(oidc_gateway)
    start = await starter.get("/dashboard/signin/oidc")
    at_provider = await starter.session.get(start.headers["Location"], allow_redirects=False)
    # login CSRF: the attacker's callback URL, opened in the victim's browser
    resp = await victim.session.get(at_provider.headers["Location"])
    assert resp.status == 400
    assert victim.cookie("gw_session") is None


async def test_a_read_only_user_sees_but_cannot_change(
    oidc_gateway: Gateway, provider: Provider, browsers: Browsers
) -> None:
    hook = await oidc_gateway.create_hook(name="existing")
    provider.user = {"sub": "u-2", "email": "reader@acme.example", TENANT_CLAIM: "acme",
                     "permissions": "read:hooks"}
    browser = await browsers(oidc_gateway)
    resp = await _oidc_sign_in(browser)
    assert resp.status == 200
    page = await resp.text()
    assert "existing" in page and "read-only" in page
    assert "Create a" not in page and ">Enable<" not in page
    for path, fields in [
        ("/dashboard/hooks", {"name": "nope", "triggerId": "post-change-password", "url": "https://x.example/"}),
        (f"/dashboard/hooks/{hook['id']}/enable", {}),
        (f"/dashboard/hooks/{hook['id']}", {"name": "renamed", "url": "https://x.example/"}),
        (f"/dashboard/hooks/{hook['id']}/delete", {}),
        (f"/dashboard/hooks/{hook['id']}/secrets", {"name": "X-Key", "value": "v"}),
    ]:
        resp = await browser.act(path, fields)
        assert resp.status == 403, path
    after = await oidc_gateway.client.get(f"/api/v2/hooks/{hook['id']}", headers=oidc_gateway.auth())
    assert (await after.json())["name"] == "existing"


async def test_a_user_without_a_tenant_or_permission_is_refused(
    oidc_gateway: Gateway, provider: Provider, browsers: Browsers
) -> None:
    provider.user = {"sub": "u-3", "permissions": ["write:hooks"]}  # no tenant claim
    browser = await browsers(oidc_gateway)
    resp = await _oidc_sign_in(browser)
    assert resp.status == 403 and browser.cookie("gw_session") is None
    provider.user = {"sub": "u-4", TENANT_CLAIM: "acme", "permissions": ["other"]}
    resp = await _oidc_sign_in(browser)
    assert resp.status == 403 and browser.cookie("gw_session") is None


async def test_an_admin_user_gets_the_operator_view(
    oidc_gateway: Gateway, provider: Provider, browsers: Browsers
) -> None:
    provider.user = {"sub": "op-1", "email": "ops@example.com", "permissions": ["admin:tenants"]}
    browser = await browsers(oidc_gateway)
    resp = await _oidc_sign_in(browser)
    assert resp.status == 200 and resp.url.path == "/dashboard/operator"
    assert "globex" in await resp.text()


async def test_an_unreachable_provider_is_a_clear_error_not_a_crash(
    make_gateway: MakeGateway, make_settings: Callable[..., Settings], browsers: Browsers
) -> None:
    settings: dict[str, Any] = {"issuer": "http://127.0.0.1:9/", "client_id": CLIENT_ID, "idp_timeout": "2s"}
    gw = await make_gateway(make_settings(dashboard=settings))
    resp = await (await browsers(gw)).get("/dashboard/signin/oidc")
    assert resp.status == 502
    assert "not reachable" in text_of(await resp.text())


async def test_a_provider_with_a_private_ca_needs_egress_ca_file(
    make_gateway: MakeGateway, make_settings: Callable[..., Settings], browsers: Browsers,
    aiohttp_server: Callable[..., Awaitable[TestServer]], tmp_path: Any,
) -> None:
    """The provider's certificate is checked against the system's CAs plus `[egress] ca_file`,
    as for deliveries: without the private CA sign-in is refused, with it sign-in works."""
    ca = trustme.CA()
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ssl)
    provider = await start_provider(aiohttp_server, ssl=server_ssl)
    assert provider.issuer.startswith("https://127.0.0.1:")
    provider.user = {"sub": "u-2", "email": "grace@acme.example", TENANT_CLAIM: "acme",
                     "permissions": ["read:hooks"]}
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    dashboard = {"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                 "tenant_claim": TENANT_CLAIM, "scope_claim": "permissions", "idp_timeout": "5s"}
    untrusting = await make_gateway(make_settings(dashboard=dashboard))
    resp = await (await browsers(untrusting)).get("/dashboard/signin/oidc")
    assert resp.status == 502 and "not reachable" in text_of(await resp.text())

    trusting = await make_gateway(make_settings(dashboard=dashboard, egress={"ca_file": str(ca_file)}))
    await trusting.create_tenant("acme")
    browser = await browsers(trusting)
    start = await browser.get("/dashboard/signin/oidc")
    assert start.status == 303, await start.text()
    client_ssl = ssl.create_default_context()
    ca.configure_trust(client_ssl)  # the test's browser trusts the private CA too
    at_provider = await browser.session.get(start.headers["Location"], allow_redirects=False, ssl=client_ssl)
    assert at_provider.status == 302, await at_provider.text()
    resp = await browser.session.get(at_provider.headers["Location"])
    assert resp.status == 200 and resp.url.path == "/dashboard/hooks", await resp.text()
    assert len(provider.token_requests) == 1  # the gateway reached the token endpoint over TLS


# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dashboard", "needle"),
    [
        ({"issuer": "https://login.example.com/"}, "issuer needs client_id"),
        ({"issuer": "http://login.example.com/", "client_id": "c"}, "must use https"),
        ({"issuer": "ftp://login.example.com/", "client_id": "c"}, "https URL"),
        ({"issuer": "https://login.example.com/", "client_id": "c", "scopes": ["profile"]}, '"openid"'),
        ({"session_lifetime": 0}, "above 0"),
        ({"tenant_claim": ""}, "tenant_claim cannot be empty"),
        ({"colour": "blue"}, "unknown key [dashboard] colour"),
    ],
)
def test_bad_dashboard_settings_stop_start_up(
    make_settings: Callable[..., Settings], dashboard: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(needle)):
        make_settings(dashboard=dashboard)


async def test_the_dashboard_can_be_turned_off(
    make_gateway: MakeGateway, make_settings: Callable[..., Settings]
) -> None:
    gw = await make_gateway(make_settings(dashboard={"enabled": False}))
    resp = await gw.client.get("/dashboard/signin")
    assert resp.status == 404


async def test_a_worker_instance_serves_no_dashboard(
    make_gateway: MakeGateway, make_settings: Callable[..., Settings]
) -> None:
    gw = await make_gateway(make_settings(server={"role": "worker"}))
    resp = await gw.client.get("/dashboard/signin")
    assert resp.status == 404
